-- Store status for the API's index page: newest minute and rows (no tenant data).
SELECT max(minute) AS newest_minute, min(minute) AS oldest_minute, count(*) AS rollup_rows
FROM rollups;
