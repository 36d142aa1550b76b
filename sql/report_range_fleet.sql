-- Fleet-wide figures for [$t_from, $t_to). gpu_hours_unavailable is filled in from the
-- per-tenant rows by the caller (it needs the ledger arithmetic of report_range_tenants.sql).
SELECT
    coalesce(sum(observed_s), 0) / 3600.0                                   AS gpu_hours_observed,
    coalesce(sum(observed_s) FILTER (WHERE tenant IS NULL), 0) / 3600.0     AS gpu_hours_unallocated
FROM rollups
WHERE minute >= $t_from AND minute < $t_to;
