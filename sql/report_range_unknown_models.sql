-- GPU models the catalog does not know: their MFU is reported as NULL, never guessed.
SELECT model, count(DISTINCT uuid) AS gpus, sum(observed_s) / 3600.0 AS gpu_hours_observed
FROM rollups
WHERE minute >= $t_from AND minute < $t_to AND model_key IS NULL
GROUP BY model
ORDER BY model;
