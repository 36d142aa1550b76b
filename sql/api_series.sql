-- Time series for the API: rollups in [$t_from, $t_to), in buckets of $step starting at $t_from,
-- one row per (bucket, key). $group chooses the key: 'tenant', 'model', 'cluster', 'gpu' (uuid)
-- or 'fleet' (no key). Optional filters ($tenant, $node, $uuid; NULL = all). Grouping by tenant
-- leaves out unallocated time (tenant NULL), as the per-tenant report does.
-- busy/idle/idle-held/observed hours count all GPU time in the row, allocated or not;
-- gpu_hours_allocated and mfu_allocated only the allocated part (as in report_range_tenants).
WITH r AS (
    SELECT
        time_bucket($step, minute, $t_from) AS bucket,
        CASE $group
            WHEN 'tenant' THEN tenant
            WHEN 'model' THEN model
            WHEN 'cluster' THEN cluster
            WHEN 'gpu' THEN uuid
        END AS key,
        *
    FROM rollups
    WHERE minute >= $t_from AND minute < $t_to
      AND ($tenant IS NULL OR tenant = $tenant)
      AND ($node IS NULL OR node = $node)
      AND ($uuid IS NULL OR uuid = $uuid)
      AND ($group <> 'tenant' OR tenant IS NOT NULL)
)
SELECT
    bucket                                                                  AS time,
    key,
    any_value(node)                                                         AS node,
    any_value(gpu)                                                          AS gpu,
    any_value(model)                                                        AS model,
    count(DISTINCT uuid || '/' || coalesce(CAST(mig_instance AS VARCHAR), '-')) AS gpus,
    sum(observed_s) / 3600.0                                                AS gpu_hours_observed,
    coalesce(sum(observed_s) FILTER (WHERE tenant IS NOT NULL), 0) / 3600.0 AS gpu_hours_allocated,
    coalesce(sum(observed_s) FILTER (WHERE tenant IS NULL), 0) / 3600.0     AS gpu_hours_unallocated,
    sum(busy_s) / 3600.0                                                    AS gpu_hours_busy,
    sum(idle_s) / 3600.0                                                    AS gpu_hours_idle,
    sum(idle_held_s) / 3600.0                                               AS gpu_hours_idle_held,
    sum(mfu_s) FILTER (WHERE tenant IS NOT NULL)
        / nullif(sum(mfu_basis_s) FILTER (WHERE tenant IS NOT NULL), 0)     AS mfu_allocated,
    sum(mfu_s) / nullif(sum(mfu_busy_basis_s), 0)                           AS mfu_busy,
    sum(gpu_util_mean * observed_s)
        / nullif(sum(observed_s) FILTER (WHERE gpu_util_mean IS NOT NULL), 0) AS gpu_util_mean,
    sum(tensor_active_mean * observed_s)
        / nullif(sum(observed_s) FILTER (WHERE tensor_active_mean IS NOT NULL), 0)
                                                                            AS tensor_active_mean,
    sum(power_w_mean * observed_s)
        / nullif(sum(observed_s) FILTER (WHERE power_w_mean IS NOT NULL), 0) AS power_w_mean,
    sum(energy_j) / 3.6e6                                                   AS energy_kwh,
    coalesce(sum(xid_count), 0)                                             AS xid_count
FROM r
GROUP BY bucket, key
ORDER BY bucket, key
LIMIT $max_rows;
