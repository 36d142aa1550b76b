-- GPU models the catalog does not know (their MFU is NULL, never guessed) in [$t_from, $t_to),
-- the whole fleet ($tenant NULL) or one tenant's time. Used by `report range` and the API.
SELECT model, count(DISTINCT uuid) AS gpus, sum(observed_s) / 3600.0 AS gpu_hours_observed
FROM range_rollups($t_from, $t_to, $h_from, $h_to)
WHERE model_key IS NULL
  AND ($tenant IS NULL OR tenant = $tenant)
GROUP BY model
ORDER BY model;
