"""Who a GPU-second belongs to: the allocation ledger and the precedence rule.

A sample belongs to the tenant whose ledger allocation covers its `ts` (matching node, and GPU
index or '*' for the whole node; start inclusive, end exclusive). Without one, to the sample's
own `tenant` field, else its Kubernetes `namespace`, else it is unallocated.

The ledger is loaded from CSV (`tenant,node,gpu,start,end`, RFC 3339 times) and validated as a
whole: two allocations that overlap on the same GPU are rejected with both rows named, because
a GPU-second billed twice is worse than a load that fails.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

LEDGER_SCHEMA = {"tenant": pl.String, "node": pl.String, "gpu": pl.Int64,
                 "start_ts": pl.Float64, "end_ts": pl.Float64}


class LedgerError(ValueError):
    """The ledger file is malformed or inconsistent; the message names the line(s)."""


@dataclass(frozen=True)
class Allocation:
    line: int
    tenant: str
    node: str
    gpu: int | None  # None = the whole node
    start: float
    end: float

    def describe(self) -> str:
        gpu = "*" if self.gpu is None else self.gpu
        return (f"line {self.line} ({self.tenant}, {self.node}, gpu {gpu}, "
                f"{_iso(self.start)} .. {_iso(self.end)})")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, where: str) -> float:
    """RFC 3339 -> epoch seconds. A time without an offset is refused: it would be read in
    whatever zone the loading machine happens to use."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LedgerError(f"{where}: {text!r} is not an RFC 3339 time") from None
    if dt.tzinfo is None:
        raise LedgerError(f"{where}: {text!r} has no UTC offset (write e.g. "
                          f"'{text.strip()}Z')")
    return dt.timestamp()


def read_ledger_csv(path: str | Path) -> list[Allocation]:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LedgerError(f"{path}: no such file") from None
    reader = csv.DictReader(text.splitlines())
    expected = ["tenant", "node", "gpu", "start", "end"]
    if [c.strip() for c in (reader.fieldnames or [])] != expected:
        raise LedgerError(f"{path}: header must be {','.join(expected)}, "
                          f"got {','.join(reader.fieldnames or [])}")
    rows: list[Allocation] = []
    for line_no, row in enumerate(reader, start=2):
        where = f"{path}:{line_no}"
        if None in row or any(v is None for v in row.values()):
            raise LedgerError(f"{where}: expected 5 columns")
        tenant, node, gpu_text = row["tenant"].strip(), row["node"].strip(), row["gpu"].strip()
        if not tenant or not node:
            raise LedgerError(f"{where}: tenant and node must not be empty")
        if gpu_text == "*":
            gpu = None
        elif gpu_text.isdigit():
            gpu = int(gpu_text)
        else:
            raise LedgerError(f"{where}: gpu must be an index or '*', got {gpu_text!r}")
        start = parse_time(row["start"], where)
        end = parse_time(row["end"], where)
        if end <= start:
            raise LedgerError(f"{where}: end must be after start")
        rows.append(Allocation(line_no, tenant, node, gpu, start, end))
    check_overlaps(rows)
    return rows


def check_overlaps(rows: list[Allocation]) -> None:
    """Raise LedgerError naming the first two allocations that share a GPU-second."""
    by_node: dict[str, list[Allocation]] = {}
    for r in rows:
        by_node.setdefault(r.node, []).append(r)
    for allocs in by_node.values():
        allocs.sort(key=lambda a: (a.start, a.line))
        active: list[Allocation] = []
        for r in allocs:
            active = [a for a in active if a.end > r.start]
            for a in active:
                if a.gpu is None or r.gpu is None or a.gpu == r.gpu:
                    raise LedgerError(f"overlapping allocations: {a.describe()} and "
                                      f"{r.describe()}")
            active.append(r)


def ledger_frame(rows: list[Allocation]) -> pl.DataFrame:
    return pl.DataFrame(
        {"tenant": [r.tenant for r in rows], "node": [r.node for r in rows],
         "gpu": [r.gpu for r in rows], "start_ts": [r.start for r in rows],
         "end_ts": [r.end for r in rows]},
        schema=LEDGER_SCHEMA)


def _ledger_match(keys: pl.DataFrame, allocs: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """For each key row, the tenant of the allocation (keyed by `by`) that covers its ts."""
    if allocs.height == 0:
        return keys.select("_row", pl.lit(None, dtype=pl.String).alias("tenant"))
    joined = keys.sort("ts").join_asof(
        allocs.sort("start_ts").select(*by, "start_ts", "end_ts", "tenant"),
        left_on="ts", right_on="start_ts", by=by, strategy="backward", check_sortedness=False)
    return joined.select(
        "_row",
        pl.when(pl.col("ts") < pl.col("end_ts")).then(pl.col("tenant")).alias("tenant"))


def attribute(samples: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """Add `tenant_resolved` and `tenant_source` (ledger | sample | namespace | none)."""
    s = samples.with_row_index("_row")
    keys = s.select("_row", "node", "gpu", "ts")
    whole = _ledger_match(keys, ledger.filter(pl.col("gpu").is_null()).drop("gpu"), ["node"])
    per_gpu = _ledger_match(keys, ledger.filter(pl.col("gpu").is_not_null()), ["node", "gpu"])
    ledger_tenant = (
        whole.rename({"tenant": "_t_node"})
        .join(per_gpu.rename({"tenant": "_t_gpu"}), on="_row")
        .select("_row", pl.coalesce("_t_gpu", "_t_node").alias("_t_ledger")))
    s = s.join(ledger_tenant, on="_row", how="left").sort("_row")
    return s.with_columns(
        pl.coalesce("_t_ledger", "tenant", "namespace").alias("tenant_resolved"),
        pl.when(pl.col("_t_ledger").is_not_null()).then(pl.lit("ledger"))
        .when(pl.col("tenant").is_not_null()).then(pl.lit("sample"))
        .when(pl.col("namespace").is_not_null()).then(pl.lit("namespace"))
        .otherwise(pl.lit("none")).alias("tenant_source"),
    ).drop("_row", "_t_ledger")
