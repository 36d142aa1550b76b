"""The store: a directory of Parquet files that any number of DuckDB readers can open.

Layout (all paths relative to the store directory):

    raw/<topic>/p<partition>/<seq>.parquet       the samples behind rollup file <seq>
    rollups/<topic>/p<partition>/<seq>.parquet   per-GPU-minute rollups, one file per flush
    hourly/<topic>/p<partition>/<first>-<last>-<level>.parquet
                                                 rollup files first..last summed per GPU-hour
                                                 (pipeline/compact.py)
    workload/<topic>/p<partition>/<seq>.parquet  workload-reported MFU rows
    checkpoints/<topic>/p<partition>.json        what partition <partition> has made durable
    allocations/ledger-<version>.parquet         allocation ledger versions (newest wins)

Why files and not one DuckDB database: DuckDB lets one process write a database file and a
writer blocks even read-only opens elsewhere; the pipeline, the API and report runs must never
block each other. Every file is written to a temporary name, fsynced, then renamed, so readers
see whole files or nothing.

Exactly-once effect: a flush of partition p writes rollup file seq N, then the checkpoint that
names N; offsets are committed to Kafka after that. If the process dies between the two, the
restart reads checkpoint N-1, replays, and writes seq N again under the same name - replacing
the orphan instead of adding to it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl


@dataclass
class Checkpoint:
    """Durable progress of one topic partition."""

    seq: int = 0  # last rollup file written
    commit_offset: int | None = None  # resume here (None: from the beginning)
    consumed_offset: int = -1  # highest offset whose effects are durable or dead-lettered
    closed: dict[str, int] = field(default_factory=dict)  # node -> last closed minute (epoch s)
    # Last energy counter reading per GPU: [uuid, mig_instance, ts, energy_j], so that the
    # first sample after a restart gets the same counter delta as in an uninterrupted run.
    energy: list[list] = field(default_factory=list)
    # Last sample per GPU: [uuid, mig_instance, end, tenant, tenant_source] (pipeline/gaps.py).
    gaps: list[list] = field(default_factory=list)
    # The ledger version every window written for this partition is attributed with.
    ledger_version: int = 0
    # Offsets at or below consumed_offset that are still waiting (workload reports whose GPUs
    # had no samples yet): a restart must not skip them.
    pending: list[int] = field(default_factory=list)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def publish(tmp: Path, path: Path) -> None:
    """Make the finished file `tmp` durable and visible as `path` in one step."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_parquet(path: Path, frame: pl.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    frame.write_parquet(tmp, compression="zstd", statistics=True)
    publish(tmp, path)


class PartitionLock:
    """Exclusive ownership of one topic partition's files in this store.

    Kafka's group protocol can briefly give a partition to a new member while the old one
    has not yet noticed the rebalance (a slow poll, a long flush). Two writers of one
    partition would overwrite each other's sequence files, so the owner holds an flock on
    the partition's lock file for as long as it is assigned; a newcomer waits for it. (flock
    is per host: workers on several machines need a store with its own fencing.)
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        import fcntl

        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


class Store:
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    # Three kinds of sequence files, one directory per topic partition:
    # raw (the prepared samples), rollups, workload (workload-reported MFU).
    def _partition_dir(self, kind: str, topic: str, partition: int) -> Path:
        return self.root / kind / _safe(topic) / f"p{partition:04d}"

    def _write_seq(self, kind: str, topic: str, partition: int, seq: int,
                   frame: pl.DataFrame) -> Path:
        path = self._partition_dir(kind, topic, partition) / f"{seq:012d}.parquet"
        atomic_write_parquet(path, frame)
        return path

    def _files(self, kind: str) -> list[Path]:
        return sorted((self.root / kind).glob("**/[0-9]*.parquet"))

    def _glob(self, kind: str) -> str:
        return str(self.root / kind / "**" / "*.parquet")

    # -- rollups ------------------------------------------------------------------------------
    def rollup_dir(self) -> Path:
        return self.root / "rollups"

    def rollup_glob(self) -> str:
        return self._glob("rollups")

    def rollup_files(self) -> list[Path]:
        return self._files("rollups")

    def write_rollups(self, topic: str, partition: int, seq: int, frame: pl.DataFrame) -> Path:
        return self._write_seq("rollups", topic, partition, seq, frame)

    def partition_rollup_files(self, topic: str, partition: int) -> list[Path]:
        return sorted(self._partition_dir("rollups", topic, partition).glob("[0-9]*.parquet"))

    # -- hourly tier (pipeline/compact.py) ---------------------------------------------------
    def hourly_dir(self) -> Path:
        return self.root / "hourly"

    def hourly_partition_dir(self, topic: str, partition: int) -> Path:
        return self._partition_dir("hourly", topic, partition)

    # -- raw archive ----------------------------------------------------------------------------
    def write_raw(self, topic: str, partition: int, seq: int, frame: pl.DataFrame) -> Path:
        """The prepared samples behind rollup file `seq` (written first, same sequence)."""
        return self._write_seq("raw", topic, partition, seq, frame)

    def read_raw(self, topic: str, partition: int, max_seq: int, nodes: list[str],
                 start_ts: float, end_ts: float) -> pl.DataFrame | None:
        """Archived samples of `nodes` with ts in [start_ts, end_ts), from durable files only
        (sequence <= max_seq: a file above it may be the orphan of an unfinished flush)."""
        folder = self._partition_dir("raw", topic, partition)
        files = [f for f in sorted(folder.glob("[0-9]*.parquet")) if int(f.stem) <= max_seq]
        if not files:
            return None
        return (pl.scan_parquet(files)
                .filter(pl.col("node").is_in(nodes) & (pl.col("ts") >= start_ts)
                        & (pl.col("ts") < end_ts))
                .collect())

    # -- workload-reported MFU ---------------------------------------------------------------
    def workload_glob(self) -> str:
        return self._glob("workload")

    def workload_files(self) -> list[Path]:
        return self._files("workload")

    def write_workload(self, topic: str, partition: int, seq: int, frame: pl.DataFrame) -> Path:
        return self._write_seq("workload", topic, partition, seq, frame)

    # -- checkpoints --------------------------------------------------------------------------
    def _checkpoint_path(self, topic: str, partition: int) -> Path:
        return self.root / "checkpoints" / _safe(topic) / f"p{partition:04d}.json"

    def partition_lock(self, topic: str, partition: int) -> PartitionLock:
        return PartitionLock(self.root / "checkpoints" / _safe(topic) / f"p{partition:04d}.lock")

    def read_checkpoint(self, topic: str, partition: int) -> Checkpoint:
        path = self._checkpoint_path(topic, partition)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return Checkpoint()
        return Checkpoint(**data)

    def write_checkpoint(self, topic: str, partition: int, cp: Checkpoint) -> None:
        data = json.dumps(asdict(cp), sort_keys=True).encode()
        atomic_write_bytes(self._checkpoint_path(topic, partition), data)

    # -- allocation ledger --------------------------------------------------------------------
    def ledger_dir(self) -> Path:
        return self.root / "allocations"

    def ledger_versions(self) -> list[Path]:
        return sorted(self.ledger_dir().glob("ledger-*.parquet"))

    def write_ledger(self, frame: pl.DataFrame) -> Path:
        versions = self.ledger_versions()
        n = int(versions[-1].stem.split("-")[1]) + 1 if versions else 1
        path = self.ledger_dir() / f"ledger-{n:06d}.parquet"
        atomic_write_parquet(path, frame)
        return path

    def ledger_version(self, name: str | None) -> int:
        return int(name.split("-")[1].split(".")[0]) if name else 0

    def read_ledger_version(self, version: int) -> pl.DataFrame:
        """Ledger version `version` (0: no ledger yet, i.e. empty)."""
        from fleetlens.pipeline.tenancy import LEDGER_SCHEMA

        if version == 0:
            return pl.DataFrame(schema=LEDGER_SCHEMA)
        return pl.read_parquet(self.ledger_dir() / f"ledger-{version:06d}.parquet")

    def read_ledger(self) -> tuple[str | None, pl.DataFrame]:
        """(version name, ledger frame) of the newest ledger; an empty frame if none."""
        from fleetlens.pipeline.tenancy import LEDGER_SCHEMA

        versions = self.ledger_versions()
        if not versions:
            return None, pl.DataFrame(schema=LEDGER_SCHEMA)
        return versions[-1].name, pl.read_parquet(versions[-1])
