-- Per-tenant figures for [$t_from, $t_to), optionally one tenant ($tenant NULL = all).
-- MFU ratios divide by the seconds where the estimate is known (see pipeline/rollup.py).
SELECT
    tenant,
    sum(observed_s) / 3600.0                          AS gpu_hours_allocated,
    sum(busy_s) / 3600.0                              AS gpu_hours_busy,
    sum(idle_s) / 3600.0                              AS gpu_hours_idle,
    sum(idle_held_s) / 3600.0                         AS gpu_hours_idle_held,
    sum(mfu_s) / nullif(sum(mfu_basis_s), 0)          AS mfu_allocated,
    sum(mfu_s) / nullif(sum(mfu_busy_basis_s), 0)     AS mfu_busy,
    sum(energy_j) / 3.6e6                             AS energy_kwh
FROM rollups
WHERE minute >= $t_from AND minute < $t_to
  AND tenant IS NOT NULL
  AND ($tenant IS NULL OR tenant = $tenant)
GROUP BY tenant
ORDER BY tenant;
