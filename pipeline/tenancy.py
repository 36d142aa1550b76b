"""Who a GPU-second belongs to: the allocation ledger and the precedence rule.

A sample stands for the GPU time [ts, ts + interval_s). It belongs to the tenant whose ledger
allocation covers it (matching node, and GPU index or '*' for the whole node; start inclusive,
end exclusive); a sample that an allocation starts or ends inside is cut at that instant, so
each part goes to its own tenant. Without an allocation: the sample's own `tenant` field, else
its Kubernetes `namespace` (mapped through config), else its Slurm job's account, else it is
unallocated.

The ledger is loaded from CSV (`tenant,node,gpu,start,end`, RFC 3339 times) and validated as a
whole: two allocations that overlap on the same GPU are rejected with both rows named, because
a GPU-second billed twice is worse than a load that fails.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from fleetlens.config import TenancyConfig
from fleetlens.times import rfc3339

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
                f"{rfc3339(self.start)} .. {rfc3339(self.end)})")


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


def _boundaries(ledger: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Every allocation start and end, as cut points (by node, or by node and GPU)."""
    edges = pl.concat([ledger.select(*by, pl.col("start_ts").alias("_cut")),
                       ledger.select(*by, pl.col("end_ts").alias("_cut"))])
    return edges.unique().sort("_cut")


def _next_cut(pieces: pl.DataFrame, cuts: pl.DataFrame, by: list[str]) -> pl.Series:
    if cuts.height == 0:
        return pl.Series("_cut", [None] * pieces.height, dtype=pl.Float64)
    return pieces.join_asof(cuts, left_on="ts", right_on="_cut", by=by, strategy="forward",
                            allow_exact_matches=False, check_sortedness=False)["_cut"]


def split_at_allocations(pieces: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """Cut each piece [ts, _end) where an allocation starts or ends inside it, so that every
    piece lies within one allocation (or none) and a minute shared by two tenants is split
    exactly."""
    if ledger.height == 0 or pieces.height == 0:
        return pieces
    node_cuts = _boundaries(ledger.filter(pl.col("gpu").is_null()).drop("gpu"), ["node"])
    gpu_cuts = _boundaries(ledger.filter(pl.col("gpu").is_not_null()), ["node", "gpu"])
    done: list[pl.DataFrame] = []
    todo = pieces.sort("ts")
    while todo.height:
        cut = pl.min_horizontal(_next_cut(todo, node_cuts, ["node"]),
                                _next_cut(todo, gpu_cuts, ["node", "gpu"]))
        todo = todo.with_columns(cut.alias("_cut"))
        inside = pl.col("_cut").is_not_null() & (pl.col("_cut") < pl.col("_end"))
        done.append(todo.filter(~inside).drop("_cut"))
        split = todo.filter(inside)
        done.append(split.with_columns(pl.col("_cut").alias("_end")).drop("_cut"))
        todo = split.with_columns(pl.col("_cut").alias("ts")).drop("_cut").sort("ts")
    return pl.concat(done, how="vertical_relaxed")


def attribute(samples: pl.DataFrame, ledger: pl.DataFrame,
              tenancy: TenancyConfig | None = None) -> pl.DataFrame:
    """Add `tenant_resolved` and `tenant_source` (ledger | sample | namespace | slurm | none),
    judged at each row's `ts`.

    Precedence: allocation ledger > the sample's `tenant` > Kubernetes namespace (through
    [tenancy] namespace_tenants; unlisted namespaces per namespace_fallback) > Slurm job id
    (through [tenancy] slurm_accounts) > unallocated.
    """
    tenancy = tenancy or TenancyConfig()
    if ledger.height == 0:
        # No allocation can match: skip the as-of joins and the re-sort (same rows, same
        # order; the pipeline runs without a ledger until one is loaded).
        s = samples.with_columns(pl.lit(None, dtype=pl.String).alias("_t_ledger"))
    else:
        s = samples.with_row_index("_row")
        keys = s.select("_row", "node", "gpu", "ts")
        whole = _ledger_match(keys, ledger.filter(pl.col("gpu").is_null()).drop("gpu"),
                              ["node"])
        per_gpu = _ledger_match(keys, ledger.filter(pl.col("gpu").is_not_null()),
                                ["node", "gpu"])
        ledger_tenant = (
            whole.rename({"tenant": "_t_node"})
            .join(per_gpu.rename({"tenant": "_t_gpu"}), on="_row")
            .select("_row", pl.coalesce("_t_gpu", "_t_node").alias("_t_ledger")))
        s = s.join(ledger_tenant, on="_row", how="left").sort("_row").drop("_row")
    ns = pl.col("namespace")
    mapped = ns.replace_strict(tenancy.namespace_tenants, default=None, return_dtype=pl.String)
    if tenancy.namespace_fallback == "namespace":
        mapped = pl.coalesce(mapped, ns)
    slurm = pl.col("job_id").replace_strict(tenancy.slurm_accounts, default=None,
                                            return_dtype=pl.String)
    s = s.with_columns(mapped.alias("_t_ns"), slurm.alias("_t_slurm"))
    return s.with_columns(
        pl.coalesce("_t_ledger", "tenant", "_t_ns", "_t_slurm").alias("tenant_resolved"),
        pl.when(pl.col("_t_ledger").is_not_null()).then(pl.lit("ledger"))
        .when(pl.col("tenant").is_not_null()).then(pl.lit("sample"))
        .when(pl.col("_t_ns").is_not_null()).then(pl.lit("namespace"))
        .when(pl.col("_t_slurm").is_not_null()).then(pl.lit("slurm"))
        .otherwise(pl.lit("none")).alias("tenant_source"),
    ).drop("_t_ledger", "_t_ns", "_t_slurm")


def changed_spans(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """(node, start_ts, end_ts) of every allocation in one ledger version but not the other:
    the only places where a corrected ledger can change who a GPU-second belongs to."""
    cols = ["tenant", "node", "gpu", "start_ts", "end_ts"]
    gone = old.join(new, on=cols, how="anti", nulls_equal=True)
    added = new.join(old, on=cols, how="anti", nulls_equal=True)
    return pl.concat([gone, added]).select("node", "start_ts", "end_ts")
