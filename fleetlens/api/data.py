"""The API's read side: DuckDB over the store's Parquet files, SQL from sql/api_*.sql.

One in-memory DuckDB connection per server process; each request queries through its own
cursor (a separate connection to the same in-memory database, safe across threads). The
`rollups` view globs the store's files on every query, so a file the pipeline renames into
place is seen by the next request; the connection is rebuilt when the store goes from no files
to some (the empty-store table must become the view) and every `refresh_s` seconds anyway.
Nothing here ever opens a DuckDB database file, so the pipeline never waits on the API.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import duckdb

from fleetlens.pipeline.query import connect, load_sql
from fleetlens.pipeline.store import Store

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class Table:
    """A query result: column names (known even with no rows) and rows as tuples."""

    def __init__(self, columns: list[str], rows: list[tuple]):
        self.columns = columns
        self.rows = rows

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def select(self, columns: list[str], rename: dict[str, str] | None = None) -> Table:
        idx = [self.columns.index(c) for c in columns]
        names = [(rename or {}).get(c, c) for c in columns]
        return Table(names, [tuple(r[i] for i in idx) for r in self.rows])


class StoreReader:
    def __init__(self, store_dir: str, refresh_s: float = 30.0, tenants_ttl_s: float = 30.0):
        self.store = Store(store_dir)
        self.refresh_s = refresh_s
        self.tenants_ttl_s = tenants_ttl_s
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._con_has_files = False
        self._con_made = 0.0
        self._tenants: set[str] = set()
        self._tenants_at = -1e9

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        now = time.monotonic()
        with self._lock:
            stale = self._con is None or now - self._con_made > self.refresh_s
            if not stale and not self._con_has_files:
                stale = bool(self.store.rollup_files())
            if stale:
                has_files = bool(self.store.rollup_files())
                # The old connection is not closed: requests may still hold cursors on it
                # (closing it would fail them); it goes away with the last of them.
                self._con = connect(str(self.store.root))
                self._con_has_files, self._con_made = has_files, now
            return self._con.cursor()

    def run(self, name: str, params: dict[str, Any]) -> Table:
        """Run sql/<name>.sql with bound parameters: those of `params` that the SQL names
        (DuckDB refuses unused ones; the shared report SQL may not use all that the API
        offers, e.g. `gpus_per_node`)."""
        sql = load_sql(name)
        used = set(_PARAM.findall(sql))
        cur = self._cursor()
        try:
            cur.execute(sql, {k: v for k, v in params.items() if k in used})
            columns = [d[0] for d in cur.description]
            return Table(columns, cur.fetchall())
        finally:
            cur.close()

    def known_tenants(self, want: str | None = None) -> set[str]:
        """Tenants with data in the store or in its newest allocation ledger (cached; re-read at
        once when `want` is missing)."""
        now = time.monotonic()
        if now - self._tenants_at > self.tenants_ttl_s or (want and want not in self._tenants):
            rows = self.run("api_tenants", {"tenant": None}).rows
            ledger = self.store.read_ledger()[1]["tenant"].unique().to_list()
            self._tenants, self._tenants_at = {r[0] for r in rows} | set(ledger), now
        return self._tenants

    def status(self) -> dict[str, Any]:
        files = self.store.rollup_files()
        row = self.run("api_status", {}).records()[0]
        return {"store": str(self.store.root.resolve()), "rollup_files": len(files), **row}
