-- Weekly report, data quality: per tenant, the GPU-seconds its ledger allocations cover in
-- [$t_from, $t_to) and how many of them were observed (samples attributed by the ledger,
-- at most the allocated seconds per GPU). Same ledger arithmetic as report_range_tenants.sql.
WITH node_gpus AS (SELECT DISTINCT node, gpu FROM rollups WHERE mig_instance IS NULL),
ledger_gpu_seconds AS (
    SELECT a.tenant, a.node, coalesce(a.gpu, g.gpu) AS gpu,
           greatest(0, least(a.end_ts, epoch($t_to)) - greatest(a.start_ts, epoch($t_from)))
               AS allocated_s
    FROM allocations a
    LEFT JOIN node_gpus g ON a.gpu IS NULL AND g.node = a.node
    WHERE a.end_ts > epoch($t_from) AND a.start_ts < epoch($t_to)
),
unseen_nodes AS (
    SELECT a.tenant,
           $gpus_per_node * greatest(0, least(a.end_ts, epoch($t_to))
                                        - greatest(a.start_ts, epoch($t_from))) AS allocated_s
    FROM allocations a
    WHERE a.gpu IS NULL AND a.end_ts > epoch($t_from) AND a.start_ts < epoch($t_to)
      AND a.node NOT IN (SELECT node FROM node_gpus)
),
ledger_observed AS (
    SELECT tenant, node, gpu, sum(observed_s) AS observed_s
    FROM rollups
    WHERE minute >= $t_from AND minute < $t_to AND tenant_source = 'ledger'
      AND mig_instance IS NULL
    GROUP BY tenant, node, gpu
),
per_gpu AS (
    SELECT l.tenant, l.allocated_s, least(l.allocated_s, coalesce(o.observed_s, 0)) AS seen_s
    FROM (SELECT tenant, node, gpu, sum(allocated_s) AS allocated_s
          FROM ledger_gpu_seconds WHERE gpu IS NOT NULL GROUP BY tenant, node, gpu) l
    LEFT JOIN ledger_observed o USING (tenant, node, gpu)
    UNION ALL
    SELECT tenant, allocated_s, 0.0 FROM unseen_nodes
)
SELECT tenant, sum(allocated_s) AS ledger_s, sum(seen_s) AS observed_s
FROM per_gpu
WHERE $tenant IS NULL OR tenant = $tenant
GROUP BY tenant
ORDER BY tenant;
