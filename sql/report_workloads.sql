-- Per job in [$t_from, $t_to): the MFU the job reported (true MFU, PaLM definition) next to
-- the counter estimate over exactly the same GPU-minutes, and their gap. A positive gap means
-- the tensor-activity counters under-read the job's useful work (e.g. FP8 counted against a
-- BF16 peak); a negative one, tensor work that is not model FLOPs (recomputation, padding).
WITH w AS (
    SELECT * FROM workload_mfu WHERE minute >= $t_from AND minute < $t_to
),
per_job AS (
    SELECT job_id, any_value(tenant) AS tenant, any_value(model_key) AS model_key,
           any_value(dtype) AS dtype, sum(gpu_s) / 3600.0 AS gpu_hours,
           sum(mfu_x_gpu_s) / nullif(sum(gpu_s), 0) AS mfu_reported
    FROM w GROUP BY job_id
),
gpu_minutes AS (
    SELECT DISTINCT job_id, minute, unnest(uuids) AS uuid FROM w
),
counter AS (
    SELECT g.job_id, sum(r.mfu_s) / nullif(sum(r.mfu_basis_s), 0) AS mfu_estimate
    FROM gpu_minutes g JOIN rollups r ON r.uuid = g.uuid AND r.minute = g.minute
    GROUP BY g.job_id
)
SELECT p.job_id, p.tenant, p.model_key, p.dtype, p.gpu_hours, p.mfu_reported,
       c.mfu_estimate, p.mfu_reported - c.mfu_estimate AS mfu_gap
FROM per_job p LEFT JOIN counter c USING (job_id)
WHERE $tenant IS NULL OR p.tenant = $tenant
ORDER BY p.job_id;
