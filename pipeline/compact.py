"""The hourly tier: minute rollups summed per GPU-hour, so that range reports read ~60x fewer rows.

A week of 1-minute rollups is 10 million rows per 1,000 GPUs; the weekly report sums them
several times (tenants, fleet, ledger coverage, unknown models). Every one of those figures is
a sum, so it can be answered from rows summed per hour instead, exactly, as long as no minute
row is counted twice or missed.

How that is kept exact without any coordination between the pipeline and readers:

* Rollup files are immutable and numbered per partition (pipeline/store.py). An hourly file
  is named after the range of minute files it sums and its merge level:
  ``hourly/<topic>/p<part>/<first>-<last>-<level>.parquet``.
  It only ever covers durable minute files (sequence <= the partition's checkpoint).
* A reader takes, per partition, the hourly files no other hourly file contains (a merge
  writes a bigger file before the smaller ones are deleted), and the minute files numbered
  above the highest sequence they cover. Minute rows written after a compaction (late
  samples, ledger corrections) land in newer files, so they are read from the minute files.
* Hourly files are merged like an LSM tree: eight files of one level (in the name) make one
  file of the next, so a partition has at most seven files per level. Merged-away files are deleted
  only once they are older than ``DELETE_AFTER_S``, so a reader that listed them a moment
  ago can still open them.

Only ranges that start and end on whole hours are answered from the tier; the partial hours
at either end come from the minute rows (sql/range_rollups_macro.sql).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from fleetlens.pipeline.store import Store, publish

log = logging.getLogger(__name__)

MERGE_FANIN = 8  # hourly files of one level merged into one of the next
DELETE_AFTER_S = 600.0  # merged-away files older than this are deleted
_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.parquet$")


@dataclass(frozen=True)
class HourlyFile:
    path: Path
    first: int  # first minute-file sequence it covers
    last: int  # last minute-file sequence it covers
    level: int  # 0: summed from minute files; n + 1: merged from MERGE_FANIN files of level n


def _name(first: int, last: int, level: int) -> str:
    return f"{first:012d}-{last:012d}-{level}.parquet"


def hourly_files(folder: Path) -> list[HourlyFile]:
    """All hourly files of one partition folder, by first sequence."""
    out = []
    for p in folder.glob("[0-9]*.parquet"):
        m = _NAME.match(p.name)
        if m:
            out.append(HourlyFile(p, int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return sorted(out, key=lambda h: (h.first, -h.last))


def outermost(files: list[HourlyFile]) -> list[HourlyFile]:
    """The files no other file contains: what a reader must read (each sequence once)."""
    keep: list[HourlyFile] = []
    for h in files:  # sorted by first, widest first among equal firsts
        if keep and h.last <= keep[-1].last:
            continue  # inside the previous file: merged away
        keep.append(h)
    return keep


def _seq(path: Path) -> int:
    return int(path.stem)


@dataclass(frozen=True)
class TierSnapshot:
    """What a reader reads: hourly files, plus every minute file above the sequence they
    cover in its partition (`covered`: the partition's minute-file folder -> sequence)."""

    hourly: list[Path]
    covered: dict[Path, int]

    def is_recent(self, minute_file: Path) -> bool:
        return _seq(minute_file) > self.covered.get(minute_file.parent, 0)


def snapshot(store: Store) -> TierSnapshot:
    """List the hourly files for reading. The snapshot stays exact while the pipeline goes on:
    its newer minute files are all above `covered` (readers glob them at query time), and a
    newer hourly file only covers minute files above `covered` too. Files merged away after
    the snapshot are kept for DELETE_AFTER_S, longer than a reader keeps a snapshot."""
    hourly: list[Path] = []
    covered: dict[Path, int] = {}
    for folder in sorted(p for p in store.hourly_dir().glob("*/p*") if p.is_dir()):
        files = outermost(hourly_files(folder))
        if files:
            hourly += [h.path for h in files]
            covered[store.rollup_dir() / folder.relative_to(store.hourly_dir())] = \
                max(h.last for h in files)
    return TierSnapshot(hourly, covered)


def compact_partition(store: Store, topic: str, partition: int, upto_seq: int,
                      min_files: int = 1) -> int:
    """Sum the partition's minute files numbered up to `upto_seq` (durable ones only: the
    checkpoint's sequence) that no hourly file covers yet into a new hourly file, if there
    are at least `min_files` of them; then merge full levels. Returns the highest sequence
    the tier now covers (0: none).

    The caller must own the partition (the pipeline holds its PartitionLock)."""
    folder = store.hourly_partition_dir(topic, partition)
    existing = outermost(hourly_files(folder))
    covered = max((h.last for h in existing), default=0)
    todo = [f for f in store.partition_rollup_files(topic, partition)
            if covered < _seq(f) <= upto_seq]
    if todo and len(todo) >= min_files:
        path = folder / _name(_seq(todo[0]), _seq(todo[-1]), 0)
        _write_sum([str(f) for f in todo], path)
        existing = outermost(hourly_files(folder))
        covered = _seq(todo[-1])
    _merge_levels(folder, existing)
    _delete_merged(folder)
    return covered


def _merge_levels(folder: Path, files: list[HourlyFile]) -> None:
    while True:
        # The oldest run of MERGE_FANIN consecutive files of one level (levels only grow
        # towards the old end, so runs are contiguous in sequence).
        run = None
        for i in range(len(files) - MERGE_FANIN + 1):
            group = files[i:i + MERGE_FANIN]
            if len({h.level for h in group}) == 1:
                run = (i, group)
                break
        if run is None:
            return
        i, group = run
        level = group[0].level + 1
        path = folder / _name(group[0].first, group[-1].last, level)
        _write_sum([str(h.path) for h in group], path)
        files = files[:i] + [HourlyFile(path, group[0].first, group[-1].last, level)] \
            + files[i + MERGE_FANIN:]


def _delete_merged(folder: Path, now: float | None = None) -> None:
    now = time.time() if now is None else now
    keep = {h.path for h in outermost(hourly_files(folder))}
    for h in hourly_files(folder):
        if h.path not in keep:
            try:
                if now - h.path.stat().st_mtime > DELETE_AFTER_S:
                    h.path.unlink()
            except FileNotFoundError:
                pass


def _write_sum(files: list[str], path: Path) -> None:
    """Sum `files` (minute or hourly files: the same columns) per hour into `path`."""
    import duckdb
    from fleetlens.pipeline.query import list_literal, load_sql  # query imports this module

    sql = load_sql("compact_hourly").replace("{{files}}", list_literal(files))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"COPY ({sql}) TO {list_literal([str(tmp)])[1:-1]} "
                    "(FORMAT parquet, COMPRESSION zstd)")
    finally:
        con.close()
    publish(tmp, path)
    log.info("hourly tier: %s from %d files", path.name, len(files))
