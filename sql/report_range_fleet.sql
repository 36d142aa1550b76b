-- Fleet-wide figures for [$t_from, $t_to). Unavailable: GPU-down samples anywhere in the
-- fleet, plus ledger-allocated time without samples (sql/ledger_missing_macro.sql). All sums:
-- read through range_rollups (the hourly tier for whole hours, sql/rollups_tiered_view.sql).
SELECT
    coalesce(sum(observed_s), 0) / 3600.0                                   AS gpu_hours_observed,
    coalesce(sum(observed_s) FILTER (WHERE tenant IS NULL), 0) / 3600.0     AS gpu_hours_unallocated,
    (coalesce(sum(unavailable_s), 0) + coalesce(sum(gap_s), 0)
     + (SELECT coalesce(sum(missing_s), 0)
        FROM ledger_missing($t_from, $t_to, $h_from, $h_to, $gpus_per_node)))
     / 3600.0                                                               AS gpu_hours_unavailable
FROM range_rollups($t_from, $t_to, $h_from, $h_to);
