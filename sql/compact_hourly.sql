-- One hourly-tier file: the minute rollups of {{files}} (a list literal substituted by
-- pipeline/compact.py), summed per hour and per key. Only additive columns are kept: every
-- figure of `report range` and /v1/summary is a sum (or a count of distinct GPUs), so the
-- sum over hourly rows equals the sum over the minute rows they came from, and a minute row
-- written later (a late sample, a ledger correction) simply adds to it.
--
-- `minute` holds the start of the hour, so that the tier has the rollups' column names and
-- the report SQL can read minute files and hourly files side by side (sql/rollups_tiered_view.sql).
SELECT
    date_trunc('hour', minute)  AS minute,
    node, gpu, uuid, mig_instance, tenant, tenant_source, model, model_key,
    sum(samples)                AS samples,
    sum(observed_s)             AS observed_s,
    sum(busy_s)                 AS busy_s,
    sum(low_eff_s)              AS low_eff_s,
    sum(idle_s)                 AS idle_s,
    sum(idle_held_s)            AS idle_held_s,
    sum(unavailable_s)          AS unavailable_s,
    sum(energy_j)               AS energy_j,
    sum(mfu_s)                  AS mfu_s,
    sum(mfu_basis_s)            AS mfu_basis_s,
    sum(mfu_busy_basis_s)       AS mfu_busy_basis_s,
    sum(gap_s)                  AS gap_s
FROM read_parquet({{files}}, union_by_name = true)
GROUP BY ALL
ORDER BY minute, node, gpu, uuid, mig_instance, tenant
