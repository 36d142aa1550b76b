"""PartitionWindows.accept skips the per-node join when every row is newer than every closed
window; that shortcut must queue, return and count exactly what the join would."""

from __future__ import annotations

import polars as pl
import pytest
from fleetlens.pipeline.store import Checkpoint
from fleetlens.pipeline.windows import PartitionWindows
from polars.testing import assert_frame_equal

T0 = 1794787200.0


def frame(rows) -> pl.DataFrame:
    schema = {"node": pl.String, "ts": pl.Float64, "_offset": pl.Int64, "_partition": pl.Int32}
    return pl.DataFrame(rows, orient="row", schema=schema)


@pytest.mark.parametrize("rows", [
    [("a", T0 + 120, 30, 0), ("b", T0 + 125, 31, 0), ("c", T0 + 60, 32, 0)],  # all newer
    [("a", T0 + 59, 30, 0), ("b", T0 + 125, 31, 0)],  # a's closed minute: late
    [("a", T0 + 30, 12, 0), ("b", T0 + 60, 13, 0), ("a", T0 + 61, 40, 0)],  # replay, edge
    [("b", T0 + 60.0, 50, 0)],  # exactly the minute after b's last closed one
])
def test_accept_matches_the_per_node_join(rows):
    cp = Checkpoint(seq=3, commit_offset=10, consumed_offset=20,
                    closed={"a": int(T0), "b": int(T0)})
    batch = frame(rows)
    w = PartitionWindows(0, cp)
    late, skipped = w.accept(batch, now=0)
    fresh, want_late, want_skipped = PartitionWindows(0, cp)._split_closed(batch)
    assert skipped == want_skipped
    assert_frame_equal(late, want_late)
    got_fresh = pl.concat(w.pending) if w.pending else batch.clear()
    assert_frame_equal(got_fresh, fresh)
    assert w.pending_rows == fresh.height
    assert w.watermark == dict(fresh.group_by("node").agg(pl.col("ts").max()).iter_rows())


def reference_take_closed(pending: list[pl.DataFrame], horizons: dict[str, float]
                          ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(closed rows, rows still open) the way take_closed did it before: all waiting rows
    in one frame, joined with the per-node horizons."""
    frame = pl.concat(pending, how="vertical_relaxed")
    h = pl.DataFrame({"node": list(horizons), "_horizon": list(horizons.values())},
                     schema={"node": pl.String, "_horizon": pl.Float64})
    frame = frame.join(h, on="node", how="left", maintain_order="left").with_columns(
        ((pl.col("ts") // 60) * 60).cast(pl.Int64).alias("_minute"))
    is_closed = (pl.col("_minute") <= pl.col("_horizon")).fill_null(False)
    return (frame.filter(is_closed).drop("_horizon", "_minute"),
            frame.filter(~is_closed).drop("_horizon", "_minute"))


def test_take_closed_per_frame_matches_one_concatenated_frame():
    w = PartitionWindows(0, Checkpoint())
    polls = [
        [("a", T0 + 1, 0, 0), ("b", T0 + 2, 1, 0)],  # wholly closed later
        [("a", T0 + 50, 2, 0), ("b", T0 + 62, 3, 0), ("c", T0 + 5, 4, 0)],  # across
        [("a", T0 + 125, 5, 0), ("b", T0 + 90, 6, 0)],  # sets the watermarks
        [("a", T0 + 126, 7, 0), ("b", T0 + 127, 8, 0)],  # wholly open
    ]
    for k, rows in enumerate(polls):
        w.accept(frame(rows), now=float(k))
    w.last_seen["c"] = -500.0  # c fell silent: closed whatever its watermark
    pending = list(w.pending)
    horizons = {"a": T0 + 126 - 70, "b": T0 + 127 - 70, "c": float("inf")}
    want_done, want_keep = reference_take_closed(pending, horizons)
    done = w.take_closed(10, 120, now=4.0)
    assert_frame_equal(done, want_done)
    assert_frame_equal(pl.concat(w.pending), want_keep)
    assert w.pending_rows == want_keep.height
    assert w.closed == {"a": int(T0), "b": int(T0), "c": int(T0)}
    assert "c" not in w.watermark
    assert w.commit_offset() == want_keep["_offset"].min()
