"""Read side: a DuckDB connection over the store, and the SQL files in sql/.

Each reader opens its own in-memory DuckDB connection and reads the store's Parquet files,
so readers never take a lock that the pipeline (or another reader) would wait on.
"""

from __future__ import annotations

import re
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


def connect(store_dir: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the views `rollups`, `allocations` and `workload_mfu`, and the
    table macro `ledger_missing`."""
    store = Store(store_dir)
    con = duckdb.connect(":memory:")
    if store.rollup_files():
        sql = load_sql("rollups_view").replace("{{rollups_glob}}", _literal(store.rollup_glob()))
    else:
        sql = load_sql("rollups_empty")
    con.execute(sql)
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
