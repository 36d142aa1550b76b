-- Weekly report, data quality: GPUs (and MIG instances) that sent at least one sample in
-- [$t_from, $t_to), and the GPU-seconds observed. Expected GPU-seconds = gpus x week length.
SELECT count(DISTINCT (uuid, coalesce(mig_instance, -1))) AS gpus,
       coalesce(sum(observed_s), 0)                        AS observed_s
FROM rollups
WHERE minute >= $t_from AND minute < $t_to;
