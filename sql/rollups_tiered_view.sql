-- rollups_tiered: the hourly tier (pipeline/compact.py) plus the minute rollups no hourly
-- file covers yet, with the additive columns only. {{hourly}} and {{recent}} are substituted
-- by the loader: read_parquet over those file lists, or an empty relation.
-- Rows are per hour (hourly files) or per minute (recent files); `minute` is the start of
-- either, so a filter on whole hours selects the same GPU-seconds in both.
CREATE OR REPLACE VIEW rollups_tiered AS
SELECT minute, node, gpu, uuid, mig_instance, tenant, tenant_source, model, model_key,
       samples, observed_s, busy_s, low_eff_s, idle_s, idle_held_s, unavailable_s, energy_j,
       mfu_s, mfu_basis_s, mfu_busy_basis_s, gap_s
FROM {{hourly}}
UNION ALL
SELECT minute, node, gpu, uuid, mig_instance, tenant, tenant_source, model, model_key,
       samples, observed_s, busy_s, low_eff_s, idle_s, idle_held_s, unavailable_s, energy_j,
       mfu_s, mfu_basis_s, mfu_busy_basis_s, gap_s
FROM {{recent}};

-- The same columns of the minute rollups, for the partial hours at the ends of a range.
CREATE OR REPLACE VIEW rollup_sums AS
SELECT minute, node, gpu, uuid, mig_instance, tenant, tenant_source, model, model_key,
       samples, observed_s, busy_s, low_eff_s, idle_s, idle_held_s, unavailable_s, energy_j,
       mfu_s, mfu_basis_s, mfu_busy_basis_s, gap_s
FROM rollups;

-- range_rollups(t_from, t_to, h_from, h_to): rows whose seconds sum to exactly those of the
-- minute rollups in [t_from, t_to). [h_from, h_to) is the whole hours inside the range
-- (pipeline/query.py range_params; h_from = h_to when there are none): read from the tier;
-- the partial hours before and after it from the minute rollups.
CREATE OR REPLACE MACRO range_rollups(t_from, t_to, h_from, h_to) AS TABLE
SELECT * FROM rollups_tiered WHERE minute >= h_from AND minute < h_to
UNION ALL
SELECT * FROM rollup_sums WHERE minute >= t_from AND minute < h_from
UNION ALL
SELECT * FROM rollup_sums WHERE minute >= h_to AND minute < t_to;
