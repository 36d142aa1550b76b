-- The rollups over the store's Parquet files. {{rollups_glob}} is substituted by the loader
-- with a quoted path literal (DuckDB cannot bind a parameter inside a view definition).
CREATE OR REPLACE VIEW rollups AS
SELECT * FROM read_parquet({{rollups_glob}}, union_by_name = true);
