-- The rollup table's schema, used when the store holds no rollup file yet.
-- One row per (minute, GPU or MIG instance, tenant) and flush, written by pipeline/rollup.py.
-- A sample that crosses into the next minute may give that minute a second row from another
-- flush: always aggregate with sum(). observed_s = busy_s + idle_s + unavailable_s.
-- Seconds are GPU-seconds; minute is the UTC minute (naive timestamp, UTC by convention).
CREATE OR REPLACE TABLE rollups (
    minute            TIMESTAMP,
    node              VARCHAR,
    gpu               BIGINT,
    uuid              VARCHAR,
    mig_instance      BIGINT,
    tenant            VARCHAR,   -- NULL: unallocated
    tenant_source     VARCHAR,   -- ledger | sample | namespace | none
    mig_profile       VARCHAR,
    model             VARCHAR,   -- as reported by NVML/DCGM
    model_key         VARCHAR,   -- GPU catalog key; NULL: unknown model
    cluster           VARCHAR,
    namespace         VARCHAR,
    job_id            VARCHAR,
    samples           BIGINT,    -- a correction row may carry a negative difference
    observed_s        DOUBLE,
    busy_s            DOUBLE,
    low_eff_s         DOUBLE,    -- part of busy_s: busy with sm_active below the threshold
    idle_s            DOUBLE,
    idle_held_s       DOUBLE,    -- part of idle_s: idle with >= 1 GiB of memory held
    unavailable_s     DOUBLE,    -- seconds of samples carrying a GPU-down XID
    gpu_util_mean     DOUBLE,
    sm_active_mean    DOUBLE,
    tensor_active_mean DOUBLE,
    power_w_mean      DOUBLE,
    energy_j          DOUBLE,
    temp_max_c        DOUBLE,
    fb_used_max_mib   DOUBLE,
    xid_count         BIGINT,
    xid_last          BIGINT,
    throttled_s       DOUBLE,
    mfu_s             DOUBLE,    -- sum of MFU estimate x seconds
    mfu_basis_s       DOUBLE,    -- seconds where the MFU estimate is known (idle = 0)
    mfu_busy_basis_s  DOUBLE,    -- busy seconds where the MFU estimate is known
    gap_s             DOUBLE     -- silence between samples of one non-ledger tenant: allocated,
                                 -- unavailable, not observed (pipeline/gaps.py)
);
