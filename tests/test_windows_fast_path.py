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
