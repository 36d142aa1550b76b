-- Every tenant the store has data for (any time), with the span of its data.
SELECT tenant, min(minute) AS first_minute, max(minute) AS last_minute
FROM rollups
WHERE tenant IS NOT NULL AND ($tenant IS NULL OR tenant = $tenant)
GROUP BY tenant
ORDER BY tenant;
