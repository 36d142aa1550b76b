-- The newest allocation ledger version. {{ledger_path}} is substituted by the loader with a
-- quoted path literal. gpu is NULL for whole-node ('*') allocations; times are epoch seconds.
CREATE OR REPLACE VIEW allocations AS
SELECT tenant, node, gpu, start_ts, end_ts FROM read_parquet({{ledger_path}});
