-- Unavailable GPU-hours (GPU-down XIDs) of GPUs that no tenant held.
SELECT coalesce(sum(unavailable_s), 0) / 3600.0 AS gpu_hours
FROM rollups
WHERE minute >= $t_from AND minute < $t_to AND tenant IS NULL;
