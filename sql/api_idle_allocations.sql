-- Top idle allocations in [$t_from, $t_to): one row per (tenant, GPU) pair - the GPU time a
-- tenant was attributed on one GPU (or MIG instance) in the range - ordered by idle hours.
-- Only allocated time (tenant NOT NULL); $tenant NULL = all tenants; $limit rows at most.
SELECT
    tenant,
    node,
    gpu,
    uuid,
    mig_instance,
    any_value(model)                                  AS model,
    sum(observed_s) / 3600.0                          AS gpu_hours_allocated,
    sum(idle_s) / 3600.0                              AS gpu_hours_idle,
    sum(idle_held_s) / 3600.0                         AS gpu_hours_idle_held,
    sum(idle_s) / nullif(sum(observed_s), 0)          AS idle_ratio,
    min(minute)                                       AS first_minute,
    max(minute)                                       AS last_minute
FROM rollups
WHERE minute >= $t_from AND minute < $t_to
  AND tenant IS NOT NULL
  AND ($tenant IS NULL OR tenant = $tenant)
GROUP BY tenant, node, gpu, uuid, mig_instance
HAVING sum(idle_s) > 0
ORDER BY gpu_hours_idle DESC, gpu_hours_idle_held DESC, tenant, node, gpu, mig_instance
LIMIT $limit;
