-- Weekly report: GPU-hours per UTC day and state over [$t_from, $t_to), observed samples
-- only (allocated seconds with no sample are not in any day). The states do not overlap:
-- busy, idle (not held), idle-held and unavailable are allocated time; unallocated is every
-- observed second of no tenant.
SELECT
    CAST(date_trunc('day', minute) AS DATE)                                      AS day,
    coalesce(sum(busy_s) FILTER (WHERE tenant IS NOT NULL), 0) / 3600.0          AS busy,
    coalesce(sum(idle_s - idle_held_s) FILTER (WHERE tenant IS NOT NULL), 0) / 3600.0
                                                                                 AS idle,
    coalesce(sum(idle_held_s) FILTER (WHERE tenant IS NOT NULL), 0) / 3600.0     AS idle_held,
    coalesce(sum(unavailable_s) FILTER (WHERE tenant IS NOT NULL), 0) / 3600.0   AS unavailable,
    coalesce(sum(observed_s) FILTER (WHERE tenant IS NULL), 0) / 3600.0          AS unallocated
FROM rollups
WHERE minute >= $t_from AND minute < $t_to
GROUP BY 1
ORDER BY 1;
