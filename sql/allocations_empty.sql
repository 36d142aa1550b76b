-- No ledger loaded yet: an empty allocations table of the same shape.
CREATE OR REPLACE TABLE allocations (
    tenant   VARCHAR,
    node     VARCHAR,
    gpu      BIGINT,     -- NULL: the whole node
    start_ts DOUBLE,     -- epoch seconds, inclusive
    end_ts   DOUBLE      -- epoch seconds, exclusive
);
