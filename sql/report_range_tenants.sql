-- Per-tenant figures for [$t_from, $t_to), optionally one tenant ($tenant NULL = all).
--
-- Every allocated GPU-second is in exactly one of busy, idle or unavailable:
--   allocated = busy + idle + unavailable, where unavailable = seconds of samples carrying a
--   GPU-down XID + ledger-allocated seconds for which no sample arrived (per GPU) + silences
--   between samples of one non-ledger tenant (gap_s).
-- idle_held is part of idle, low_efficiency part of busy. MFU ratios divide by the seconds
-- where the estimate is known (see pipeline/rollup.py). mfu_reported comes from workload
-- reports (NULL when no workload published any).
WITH observed AS (
    SELECT tenant,
           sum(observed_s) AS observed_s, sum(busy_s) AS busy_s, sum(low_eff_s) AS low_eff_s,
           sum(idle_s) AS idle_s, sum(idle_held_s) AS idle_held_s,
           sum(unavailable_s) + coalesce(sum(gap_s), 0) AS unavailable_s,
           coalesce(sum(gap_s), 0) AS gap_s, sum(mfu_s) AS mfu_s,
           sum(mfu_basis_s) AS mfu_basis_s, sum(mfu_busy_basis_s) AS mfu_busy_basis_s,
           sum(energy_j) AS energy_j
    FROM range_rollups($t_from, $t_to, $h_from, $h_to)
    WHERE tenant IS NOT NULL
    GROUP BY tenant
    -- a tenant whose rows a ledger correction cancelled out has nothing left to report
    HAVING abs(sum(observed_s)) + abs(coalesce(sum(gap_s), 0)) > 1e-9
),
missing_by_tenant AS (
    SELECT * FROM ledger_missing($t_from, $t_to, $h_from, $h_to, $gpus_per_node)
),
reported AS (
    SELECT tenant, sum(mfu_x_gpu_s) / nullif(sum(gpu_s), 0) AS mfu_reported
    FROM workload_mfu
    WHERE minute >= $t_from AND minute < $t_to
    GROUP BY tenant
)
SELECT
    t.tenant,
    (coalesce(o.observed_s, 0) + coalesce(o.gap_s, 0) + coalesce(m.missing_s, 0)) / 3600.0
                                                                       AS gpu_hours_allocated,
    coalesce(o.busy_s, 0) / 3600.0                                     AS gpu_hours_busy,
    coalesce(o.idle_s, 0) / 3600.0                                     AS gpu_hours_idle,
    coalesce(o.idle_held_s, 0) / 3600.0                                AS gpu_hours_idle_held,
    (coalesce(o.unavailable_s, 0) + coalesce(m.missing_s, 0)) / 3600.0 AS gpu_hours_unavailable,
    coalesce(o.low_eff_s, 0) / 3600.0                                  AS gpu_hours_low_efficiency,
    o.mfu_s / nullif(o.mfu_basis_s, 0)                                 AS mfu_allocated,
    o.mfu_s / nullif(o.mfu_busy_basis_s, 0)                            AS mfu_busy,
    r.mfu_reported                                                     AS mfu_reported,
    coalesce(o.energy_j, 0) / 3.6e6                                    AS energy_kwh
FROM (SELECT tenant FROM observed UNION SELECT tenant FROM missing_by_tenant) t
LEFT JOIN observed o USING (tenant)
LEFT JOIN missing_by_tenant m USING (tenant)
LEFT JOIN reported r USING (tenant)
WHERE $tenant IS NULL OR t.tenant = $tenant
ORDER BY t.tenant;
