-- Workload-reported MFU, one row per report, written by the pipeline from the
-- fleetlens.workload topic (pipeline/workload.py). Empty until a workload publishes.
CREATE OR REPLACE TABLE workload_mfu (
    minute           TIMESTAMP,
    job_id           VARCHAR,
    tenant           VARCHAR,
    gpus             BIGINT,
    gpu_s            DOUBLE,     -- GPU-seconds the report covers
    mfu_x_gpu_s      DOUBLE,     -- true MFU x GPU-seconds
    mfu              DOUBLE,
    achieved_tflops  DOUBLE,     -- total over the job's GPUs
    dtype            VARCHAR,
    model_key        VARCHAR,
    uuids            VARCHAR[]
);
