-- Weekly report: each tenant's busy GPU-hours by the MFU estimate of the GPU-minute they
-- fall in, in ten buckets of 0.1 (bucket 9 includes 1.0). Only busy seconds with a known
-- estimate count (mfu_busy_basis_s); the small epsilon keeps 0.3 in bucket 3 despite
-- binary floating point.
WITH m AS (
    SELECT tenant, mfu_s / mfu_busy_basis_s AS mfu, mfu_busy_basis_s AS secs
    FROM rollups
    WHERE minute >= $t_from AND minute < $t_to AND tenant IS NOT NULL
      AND mfu_busy_basis_s > 0
      AND ($tenant IS NULL OR tenant = $tenant)
)
SELECT tenant,
       CAST(least(9, greatest(0, floor(mfu * 10 + 1e-9))) AS INTEGER) AS bucket,
       sum(secs) / 3600.0                                              AS gpu_hours
FROM m
GROUP BY ALL
ORDER BY tenant, bucket;
