-- ledger_missing(t_from, t_to, h_from, h_to, gpus_per_node): per tenant, ledger-allocated GPU-seconds in
-- [t_from, t_to) for which no sample arrived (counted per GPU, never negative). These seconds
-- are "unavailable": allocated, paid for, and not observed.
--
-- GPUs of a node are those that reported in the range (a scan of the range only, not of the
-- whole store); a whole-node ('*') allocation covers all of them, and counts gpus_per_node
-- GPUs on a node that did not report at all in the range.
-- (h_from, h_to: the whole hours inside the range, as for range_rollups.)
CREATE OR REPLACE MACRO ledger_missing(t_from, t_to, h_from, h_to, gpus_per_node) AS TABLE
WITH ledger_rows AS (  -- read once: rows of whole GPUs on nodes the ledger names
    SELECT tenant, tenant_source, node, gpu, observed_s
    FROM range_rollups(t_from, t_to, h_from, h_to)
    WHERE mig_instance IS NULL
      AND node IN (SELECT node FROM allocations)  -- only GPUs the ledger can miss
),
node_gpus AS (
    SELECT DISTINCT node, gpu FROM ledger_rows
    WHERE node IN (SELECT node FROM allocations WHERE gpu IS NULL)
),
ledger_gpu_seconds AS (
    SELECT a.tenant, a.node, coalesce(a.gpu, g.gpu) AS gpu,
           greatest(0, least(a.end_ts, epoch(t_to)) - greatest(a.start_ts, epoch(t_from)))
               AS allocated_s
    FROM allocations a
    LEFT JOIN node_gpus g ON a.gpu IS NULL AND g.node = a.node
    WHERE a.end_ts > epoch(t_from) AND a.start_ts < epoch(t_to)
),
unseen_nodes AS (
    SELECT a.tenant,
           gpus_per_node * greatest(0, least(a.end_ts, epoch(t_to))
                                       - greatest(a.start_ts, epoch(t_from))) AS missing_s
    FROM allocations a
    WHERE a.gpu IS NULL AND a.end_ts > epoch(t_from) AND a.start_ts < epoch(t_to)
      AND a.node NOT IN (SELECT node FROM node_gpus)
),
ledger_observed AS (
    SELECT tenant, node, gpu, sum(observed_s) AS observed_s
    FROM ledger_rows
    WHERE tenant_source = 'ledger'
    GROUP BY tenant, node, gpu
),
missing AS (
    SELECT l.tenant, sum(greatest(0, l.allocated_s - coalesce(o.observed_s, 0))) AS missing_s
    FROM (SELECT tenant, node, gpu, sum(allocated_s) AS allocated_s
          FROM ledger_gpu_seconds WHERE gpu IS NOT NULL GROUP BY tenant, node, gpu) l
    LEFT JOIN ledger_observed o USING (tenant, node, gpu)
    GROUP BY l.tenant
    UNION ALL
    SELECT tenant, missing_s FROM unseen_nodes
)
SELECT tenant, sum(missing_s) AS missing_s FROM missing GROUP BY tenant;
