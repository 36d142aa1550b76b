-- Weekly report: fleet totals of [$t_from, $t_to) for the week-over-week comparison (the
-- same sums weekly_gpus.sql gives per GPU, without the per-GPU grouping).
SELECT
    (SELECT count(*) FROM (SELECT DISTINCT uuid, mig_instance FROM rollups
                           WHERE minute >= $t_from AND minute < $t_to))  AS gpus,
    coalesce(sum(observed_s), 0)        AS observed_s,
    coalesce(sum(energy_j), 0)          AS energy_j,
    coalesce(sum(mfu_s), 0)             AS mfu_s,
    coalesce(sum(mfu_basis_s), 0)       AS mfu_basis_s,
    coalesce(sum(mfu_busy_basis_s), 0)  AS mfu_busy_basis_s
FROM rollups
WHERE minute >= $t_from AND minute < $t_to;
