"""Event-time windows of one Kafka partition: which samples wait, which are ready, what to commit.

A window is one node's minute. Samples of a node arrive in order in one partition (the key is
the node), so each node has its own watermark: the newest `ts` seen from it. The node's
minute M closes once its watermark reaches M + 60 + lateness_s, or when the node has been
silent for idle_close_s of processing time (so one dead node cannot hold back commits), or
at shutdown with flush_all.

Raw samples of open windows are kept until the window closes; the rollup of a window is then
computed from all its samples at once, never merged from partial results.

The offset to commit is the smallest offset of any sample still waiting (a restart must see
those again), or the next offset when nothing waits.
"""

from __future__ import annotations

import time

import polars as pl
from fleetlens.pipeline.gaps import state_from_rows as gap_state_from_rows
from fleetlens.pipeline.rollup import ENERGY_STATE_SCHEMA
from fleetlens.pipeline.store import Checkpoint


def energy_state_from_rows(rows: list[list]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ENERGY_STATE_SCHEMA, orient="row")


def energy_state_to_rows(state: pl.DataFrame) -> list[list]:
    return [list(r) for r in state.sort("uuid", "mig_instance", nulls_last=True).iter_rows()]


class PartitionWindows:
    def __init__(self, partition: int, checkpoint: Checkpoint):
        self.partition = partition
        self.checkpoint = checkpoint
        self.closed: dict[str, int] = dict(checkpoint.closed)
        self.energy_state = energy_state_from_rows(checkpoint.energy)
        self.gap_state = gap_state_from_rows(checkpoint.gaps)
        self.ledger_version = checkpoint.ledger_version
        self.late: list[pl.DataFrame] = []  # samples for closed windows, merged at the flush
        self.pending: list[pl.DataFrame] = []
        self.pending_rows = 0
        self.next_offset: int | None = checkpoint.commit_offset
        self.watermark: dict[str, float] = {}
        self.newest_ts: float | None = None  # newest sample of any node (early flushes)
        self.last_seen: dict[str, float] = {}

    # -- intake -------------------------------------------------------------------------------
    def consumed(self, offset: int) -> None:
        """Record that `offset` was read (also for messages that produced no valid row)."""
        if self.next_offset is None or offset + 1 > self.next_offset:
            self.next_offset = offset + 1

    def is_replay(self, offset: int) -> bool:
        """True for offsets whose effects were made durable before the last restart."""
        return offset <= self.checkpoint.consumed_offset

    def accept(self, rows: pl.DataFrame, now: float | None = None) -> tuple[pl.DataFrame, int]:
        """Queue rows of open windows. Returns (late rows, number of replayed rows skipped).

        A row whose window already closed is either a replay of work made durable before a
        restart (skipped silently, counted) or late data (returned, for the dead-letter topic).
        """
        if rows.height == 0:
            return rows, 0
        now = time.monotonic() if now is None else now
        if not self.closed or int(rows["ts"].min() // 60 * 60) > max(self.closed.values()):
            # The usual case: every row is newer than every closed window, so nothing is late
            # or a replay, and the per-node join of _split_closed could find nothing.
            fresh, late, skipped = rows, rows.clear(), 0
        else:
            fresh, late, skipped = self._split_closed(rows)
        if fresh.height:
            self.pending.append(fresh)
            self.pending_rows += fresh.height
            newest = fresh["ts"].max()
            if self.newest_ts is None or newest > self.newest_ts:
                self.newest_ts = newest
            for node, ts in fresh.group_by("node").agg(pl.col("ts").max()).iter_rows():
                if ts > self.watermark.get(node, float("-inf")):
                    self.watermark[node] = ts
                self.last_seen[node] = now
        return late, skipped

    def _split_closed(self, rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
        """(rows of open windows, late rows, number of replayed rows) by each node's last
        closed minute."""
        closed = pl.DataFrame(
            {"node": list(self.closed), "_closed": list(self.closed.values())},
            schema={"node": pl.String, "_closed": pl.Int64})
        minute = ((pl.col("ts") // 60) * 60).cast(pl.Int64)
        rows = rows.join(closed, on="node", how="left", maintain_order="left")
        is_closed = (minute <= pl.col("_closed")).fill_null(False)
        replay = pl.col("_offset") <= self.checkpoint.consumed_offset
        rows = rows.with_columns(is_closed.alias("_is_closed"), replay.alias("_replay"))
        helpers = ["_closed", "_is_closed", "_replay"]
        skipped = rows.filter(pl.col("_is_closed") & pl.col("_replay")).height
        late = rows.filter(pl.col("_is_closed") & ~pl.col("_replay")).drop(helpers)
        fresh = rows.filter(~pl.col("_is_closed")).drop(helpers)
        return fresh, late, skipped

    # -- closing ------------------------------------------------------------------------------
    def take_closed(self, lateness_s: float, idle_close_s: float, flush_all: bool = False,
                    now: float | None = None) -> pl.DataFrame:
        """Remove and return the rows of every window that is now closed."""
        if not self.pending:
            return pl.DataFrame()
        now = time.monotonic() if now is None else now
        # Per node: windows with minute <= horizon are closed.
        horizons = {}
        for node, mark in self.watermark.items():
            silent = now - self.last_seen.get(node, now) >= idle_close_s
            if flush_all or silent:
                horizons[node] = float("inf")
            else:
                horizons[node] = mark - lateness_s - 60
        minute = ((pl.col("ts") // 60) * 60).cast(pl.Int64)
        horizon = pl.col("node").replace_strict(horizons, default=None, return_dtype=pl.Float64)
        is_closed = (minute <= horizon).fill_null(False)
        # Each queued frame (one poll's rows) is judged on its own: most are wholly closed or
        # wholly open and move as they are; only frames across the horizon are split. The
        # rows come out in the same order as from one concatenated frame, without copying
        # every waiting row at every flush.
        done_parts: list[pl.DataFrame] = []
        keep: list[pl.DataFrame] = []
        for f in self.pending:
            mask = f.select(is_closed).to_series()
            if mask.all():
                done_parts.append(f)
            elif not mask.any():
                keep.append(f)
            else:
                done_parts.append(f.filter(mask))
                keep.append(f.filter(~mask))
        done = pl.concat([*(f.clear() for f in self.pending), *done_parts],
                         how="vertical_relaxed")
        self.pending = keep
        self.pending_rows = sum(f.height for f in keep)
        for node, m in done.group_by("node").agg(minute.max()).iter_rows():
            self.closed[node] = max(m, self.closed.get(node, m))
        for node in [n for n, hz in horizons.items() if hz == float("inf")]:
            # A node closed for silence starts afresh if it speaks again.
            self.watermark.pop(node, None)
            self.last_seen.pop(node, None)
        return done

    def commit_offset(self) -> int | None:
        if self.pending:
            return int(min(f["_offset"].min() for f in self.pending))
        return self.next_offset
