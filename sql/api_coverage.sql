-- Data coverage in [$t_from, $t_to): observed GPU-hours per node ($by = 'node') or per tenant
-- ($by = 'tenant', allocated time only) against the expected GPU-hours, which is
--     (distinct GPUs / MIG instances seen for the key in the range) x $expected_hours
-- where $expected_hours is the length of the range up to now (the caller clips $t_to to now).
-- coverage < 1: minutes missing (agent down, samples lost), or - per tenant - GPUs held for
-- only part of the range. $tenant NULL = all tenants.
SELECT
    CASE $by WHEN 'tenant' THEN tenant ELSE node END                         AS key,
    count(DISTINCT uuid || '/' || coalesce(CAST(mig_instance AS VARCHAR), '-')) AS gpus,
    sum(observed_s) / 3600.0                                                  AS gpu_hours_observed,
    count(DISTINCT uuid || '/' || coalesce(CAST(mig_instance AS VARCHAR), '-'))
        * $expected_hours                                                     AS gpu_hours_expected,
    sum(observed_s) / 3600.0 / nullif(
        count(DISTINCT uuid || '/' || coalesce(CAST(mig_instance AS VARCHAR), '-'))
        * $expected_hours, 0)                                                 AS coverage,
    min(minute)                                                               AS first_minute,
    max(minute)                                                               AS last_minute
FROM rollups
WHERE minute >= $t_from AND minute < $t_to
  AND ($tenant IS NULL OR tenant = $tenant)
  AND ($by <> 'tenant' OR tenant IS NOT NULL)
GROUP BY 1
ORDER BY 1;
