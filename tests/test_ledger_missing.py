"""`ledger_missing` (sql/ledger_missing_macro.sql): allocated GPU-seconds for which no sample
arrived, per tenant, counted by hand on a small store.

The ledger allocates three ways: a whole node whose GPUs report for part of the time, a whole
node that never reports, and one GPU that reports half of each minute. A MIG instance on the
first node must not count as a GPU of its own. The same answer must come from minute rows and,
after compaction, from the hourly tier.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from fleetlens.pipeline.compact import compact_partition
from fleetlens.pipeline.query import connect, range_params
from fleetlens.pipeline.rollup import ROLLUP_SCHEMA
from fleetlens.pipeline.store import Store
from fleetlens.pipeline.tenancy import LEDGER_SCHEMA

TOPIC = "fleetlens.samples"
T0 = datetime(2026, 11, 16, tzinfo=UTC)
GPUS_PER_NODE = 8


def row(minute: int, node: str, gpu: int, tenant: str, observed_s: float,
        mig_instance: int | None = None) -> dict:
    return {"minute": (T0 + timedelta(minutes=minute)).replace(tzinfo=None), "node": node,
            "gpu": gpu, "uuid": f"GPU-{node}-{gpu}", "mig_instance": mig_instance,
            "tenant": tenant, "tenant_source": "ledger", "model": "NVIDIA H100 80GB HBM3",
            "model_key": "h100-sxm5-80gb", "samples": 1, "observed_s": observed_s,
            "busy_s": observed_s, "idle_s": 0.0, "unavailable_s": 0.0, "gap_s": 0.0}


@pytest.fixture
def store(tmp_path) -> Store:
    rows = []
    for m in range(120):
        rows.append(row(m, "n1", 1, "whole", 60.0))          # reports all the time
        if m < 30:
            rows.append(row(m, "n1", 0, "whole", 60.0))      # stops after 30 minutes
        rows.append(row(m, "n1", 4, "whole", 60.0, mig_instance=1))  # a MIG instance
        if m < 60:
            rows.append(row(m, "n3", 2, "one", 30.0))        # half of each minute, 1 hour
    frame = pl.DataFrame(rows)
    frame = frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
                          for c, t in ROLLUP_SCHEMA.items()])
    s = Store(tmp_path)
    for seq, m0 in enumerate(range(0, 120, 20), start=1):  # files of 20 minutes
        s.write_rollups(TOPIC, 0, seq, frame.filter(
            pl.col("minute") >= (T0 + timedelta(minutes=m0)).replace(tzinfo=None),
            pl.col("minute") < (T0 + timedelta(minutes=m0 + 20)).replace(tzinfo=None)))
    start, end = T0.timestamp(), T0.timestamp() + 7200
    s.write_ledger(pl.DataFrame({"tenant": ["whole", "gone", "one"], "node": ["n1", "n2", "n3"],
                                 "gpu": [None, None, 2], "start_ts": [start] * 3,
                                 "end_ts": [end] * 3}, schema=LEDGER_SCHEMA))
    return s


def missing(s: Store, start: datetime, end: datetime) -> dict[str, float]:
    params = {**range_params(start, end), "gpus_per_node": GPUS_PER_NODE}
    rows = connect(str(s.root)).execute(
        "SELECT tenant, missing_s FROM ledger_missing($t_from, $t_to, $h_from, $h_to, "
        "$gpus_per_node)", params).fetchall()
    return dict(rows)


# [0, 120 min): whole = GPU 0 unseen for 90 of its 120 minutes; gone = 8 GPUs x 2 h;
# one = 120 min allocated, 60 x 30 s seen.
WHOLE_RANGE = (T0, T0 + timedelta(hours=2), {"whole": 5400.0, "gone": 57600.0, "one": 5400.0})
# [10, 100 min): 5,400 s allocated per GPU; GPU 0 of n1 seen 20 minutes, n3's GPU 50 x 30 s.
PARTIAL_RANGE = (T0 + timedelta(minutes=10), T0 + timedelta(minutes=100),
                 {"whole": 4200.0, "gone": 43200.0, "one": 3900.0})


@pytest.mark.parametrize("start,end,expected", [WHOLE_RANGE, PARTIAL_RANGE])
def test_missing_seconds_by_hand(store, start, end, expected):
    assert missing(store, start, end) == pytest.approx(expected)
    compact_partition(store, TOPIC, 0, 6)
    assert missing(store, start, end) == pytest.approx(expected)  # through the hourly tier
