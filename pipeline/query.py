"""Read side: a DuckDB connection over the store, and the SQL files in sql/.

Each reader opens its own in-memory DuckDB connection and reads the store's Parquet files,
so readers never take a lock that the pipeline (or another reader) would wait on.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

import duckdb
from fleetlens.pipeline.store import Store


@cache
def load_sql(name: str) -> str:
    """The text of sql/<name>.sql (installed as the fleetlens.sql package data)."""
    return resources.files("fleetlens.sql").joinpath(f"{name}.sql").read_text()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def list_literal(items: list[str]) -> str:
    """A DuckDB list of string literals, e.g. for read_parquet([...])."""
    return "[" + ", ".join(_literal(i) for i in items) + "]"


def range_params(start: datetime, end: datetime) -> dict[str, datetime]:
    """Parameters of a range query: [t_from, t_to), and [h_from, h_to), the whole hours inside
    it, which sql/rollups_tiered_view.sql answers from the hourly tier. Naive UTC, like the
    rollups' minute column."""
    t_from, t_to = start.replace(tzinfo=None), end.replace(tzinfo=None)
    floor = t_from.replace(minute=0, second=0, microsecond=0)
    h_from = floor if floor == t_from else floor + timedelta(hours=1)
    h_to = t_to.replace(minute=0, second=0, microsecond=0)
    if h_to <= h_from:  # no whole hour inside: all from the minute rollups
        h_from = h_to = t_to
    return {"t_from": t_from, "t_to": t_to, "h_from": h_from, "h_to": h_to}


def connect(store_dir: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the views `rollups`, `rollups_tiered`, `allocations` and
    `workload_mfu`, and the table macros `range_rollups` and `ledger_missing`."""
    from fleetlens.pipeline.compact import snapshot

    store = Store(store_dir)
    con = duckdb.connect(":memory:")
    # Store files never change once written (pipeline/store.py), so their Parquet footers can
    # be cached for the connection's life instead of re-read by every query.
    con.execute("SET parquet_metadata_cache = true")
    tier = snapshot(store)  # listed before the minute glob is read: see compact.snapshot
    has_files = bool(store.rollup_files())
    if has_files:
        sql = load_sql("rollups_view").replace("{{rollups_glob}}", _literal(store.rollup_glob()))
    else:
        sql = load_sql("rollups_empty")
    con.execute(sql)
    # Hourly files all have one schema; minute files written by older versions lack columns.
    hourly = f"read_parquet({list_literal([str(p) for p in tier.hourly])})" \
        if tier.hourly else "(SELECT * FROM rollups WHERE false)"
    # Minute files the tier covers are skipped by name: DuckDB prunes files on `filename`
    # before opening them, and files the pipeline adds later are picked up by the glob.
    covered = " AND ".join(
        f"NOT (filename > {_literal(str(folder) + '/')} "
        f"AND filename <= {_literal(str(folder / f'{seq:012d}.parquet'))})"
        for folder, seq in sorted(tier.covered.items())) or "true"
    recent = (f"(SELECT * FROM read_parquet({_literal(store.rollup_glob())}, "
              f"union_by_name = true, filename = true) WHERE {covered})"
              if has_files else "(SELECT * FROM rollups WHERE false)")
    con.execute(load_sql("rollups_tiered_view").replace("{{hourly}}", hourly)
                .replace("{{recent}}", recent))
    versions = store.ledger_versions()
    if versions:
        con.execute(load_sql("allocations_view").replace("{{ledger_path}}",
                                                          _literal(str(versions[-1]))))
    else:
        con.execute(load_sql("allocations_empty"))
    con.execute(load_sql("ledger_missing_macro"))
    if store.workload_files():
        con.execute(load_sql("workload_view").replace("{{workload_glob}}",
                                                      _literal(store.workload_glob())))
    else:
        con.execute(load_sql("workload_empty"))
    return con


_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def query(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any]) -> list[dict]:
    """Run sql/<name>.sql with bound parameters; rows as dicts. Only the parameters the SQL
    names are bound (DuckDB refuses extra ones), so callers may pass one common set."""
    sql = load_sql(name)
    used = set(_PARAM.findall(sql))
    cur = con.execute(sql, {k: v for k, v in params.items() if k in used})
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
