-- GPU models the catalog does not know (MFU reported as NULL), in [$t_from, $t_to).
-- With $tenant NULL this is exactly report_range_unknown_models; else only that tenant's time.
SELECT model, count(DISTINCT uuid) AS gpus, sum(observed_s) / 3600.0 AS gpu_hours_observed
FROM rollups
WHERE minute >= $t_from AND minute < $t_to AND model_key IS NULL
  AND ($tenant IS NULL OR tenant = $tenant)
GROUP BY model
ORDER BY model;
