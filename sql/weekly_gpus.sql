-- Weekly report: one row per (tenant, GPU or MIG instance, model, cluster) over
-- [$t_from, $t_to). tenant NULL = unallocated. The fleet-by-model/cluster tables, per-tenant
-- money, top idle allocations and right-sizing hints are sums over these rows.
-- sm_active_mean is weighted by the seconds where sm_active was measured.
SELECT
    tenant, node, gpu, uuid, mig_instance, model, model_key, cluster,
    sum(observed_s)       AS observed_s,
    sum(busy_s)           AS busy_s,
    sum(low_eff_s)        AS low_eff_s,
    sum(idle_s)           AS idle_s,
    sum(idle_held_s)      AS idle_held_s,
    sum(unavailable_s)    AS unavailable_s,
    coalesce(sum(energy_j), 0) AS energy_j,
    coalesce(sum(mfu_s), 0)    AS mfu_s,
    coalesce(sum(mfu_basis_s), 0)      AS mfu_basis_s,
    coalesce(sum(mfu_busy_basis_s), 0) AS mfu_busy_basis_s,
    sum(sm_active_mean * observed_s) FILTER (WHERE sm_active_mean IS NOT NULL)
        / nullif(sum(observed_s) FILTER (WHERE sm_active_mean IS NOT NULL), 0)
                          AS sm_active_mean,
    max(fb_used_max_mib)  AS fb_used_max_mib
FROM rollups
WHERE minute >= $t_from AND minute < $t_to
GROUP BY ALL
ORDER BY tenant NULLS LAST, node, gpu, uuid, mig_instance, model, cluster;
