-- Workload-reported MFU files. {{workload_glob}} is substituted by the loader.
CREATE OR REPLACE VIEW workload_mfu AS
SELECT * FROM read_parquet({{workload_glob}}, union_by_name = true);
