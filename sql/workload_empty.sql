-- Workload-reported MFU per (minute, job, tenant), written by the pipeline from the
-- fleetlens.workload topic. Empty until a workload publishes.
CREATE OR REPLACE TABLE workload_mfu (
    minute       TIMESTAMP,
    job_id       VARCHAR,
    tenant       VARCHAR,
    gpus         BIGINT,
    gpu_s        DOUBLE,     -- GPU-seconds the reports cover
    mfu_x_gpu_s  DOUBLE      -- sum of true MFU x GPU-seconds
);
