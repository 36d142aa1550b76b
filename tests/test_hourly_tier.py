"""The hourly tier (pipeline/compact.py) changes how fast a range report is, never its numbers.

Every test builds a store of minute rollup files with the awkward cases of real data (tenant
changes inside an hour, MIG instances, an unknown model, ledger gaps, negative correction
rows, null MFU sums), then compares `report range` before and after compaction, and with an
independent sum over the minute rows.
"""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from fleetlens.pipeline.compact import (
    DELETE_AFTER_S,
    MERGE_FANIN,
    _delete_merged,
    compact_partition,
    hourly_files,
    outermost,
    snapshot,
)
from fleetlens.pipeline.query import connect, range_params
from fleetlens.pipeline.report import range_figures
from fleetlens.pipeline.rollup import ROLLUP_SCHEMA
from fleetlens.pipeline.store import Store
from fleetlens.pipeline.tenancy import LEDGER_SCHEMA

TOPIC = "fleetlens.samples"
T0 = datetime(2026, 11, 16, tzinfo=UTC)
TENANTS = ["acme", "borealis", None]


def minute_rows(rng: random.Random, minutes: range, gpus: int = 6) -> pl.DataFrame:
    rows = []
    for m in minutes:
        for g in range(gpus):
            node, gpu = f"n{g // 4}", g % 4
            mig = [None, None, 1, 2][g % 4] if g >= 4 else None
            tenant = TENANTS[(g + m // 25) % 3]  # changes at minute 25, 50, ... (mid-hour)
            unknown = g == 5
            busy = rng.uniform(0, 60)
            down = rng.choice([0.0, 0.0, 0.0, 5.0])
            idle = 60 - busy - down
            rows.append({
                "minute": (T0 + timedelta(minutes=m)).replace(tzinfo=None),
                "node": node, "gpu": gpu, "uuid": f"GPU-{g}", "mig_instance": mig,
                "tenant": tenant,
                "tenant_source": "ledger" if tenant == "acme" else ("sample" if tenant else None),
                "model": "Z9000" if unknown else "NVIDIA H100 80GB HBM3",
                "model_key": None if unknown else "h100-sxm5-80gb",
                "samples": 60, "observed_s": 60.0, "busy_s": busy, "low_eff_s": busy / 3,
                "idle_s": idle, "idle_held_s": idle / 2, "unavailable_s": down,
                "energy_j": rng.uniform(1e4, 4e4),
                "mfu_s": None if unknown else busy * rng.uniform(0.2, 0.5),
                "mfu_basis_s": None if unknown else 60.0 - down,
                "mfu_busy_basis_s": None if unknown else busy,
                "gap_s": rng.choice([0.0, 0.0, 12.5]) if tenant == "borealis" else 0.0,
            })
    frame = pl.DataFrame(rows, schema={k: ROLLUP_SCHEMA[k] for k in rows[0]})
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
                         for c, t in ROLLUP_SCHEMA.items()])


def correction_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """A ledger correction: the rows again with the opposite sign under another tenant (what
    pipeline/rollup.py `correction` writes), so sums move between tenants."""
    signed = [c for c, t in ROLLUP_SCHEMA.items() if t == pl.Float64 and c.endswith("_s")
              or c in ("energy_j", "samples")]
    minus = frame.with_columns([(-pl.col(c)).alias(c) for c in signed])
    plus = frame.with_columns(pl.lit("cobalt").alias("tenant"),
                              pl.lit("ledger").alias("tenant_source"))
    return pl.concat([minus, plus])


@pytest.fixture
def store(tmp_path) -> Store:
    rng = random.Random(7)
    s = Store(tmp_path)
    # Two partitions, 5 hours, one file per ~20 minutes (files cross hour boundaries).
    for p in (0, 1):
        for seq, m0 in enumerate(range(0, 300, 20), start=1):
            s.write_rollups(TOPIC, p, seq, minute_rows(rng, range(m0, m0 + 20)))
    ledger = pl.DataFrame({"tenant": ["acme", "dormant"], "node": ["n0", "n9"], "gpu": [None, None],
                           "start_ts": [T0.timestamp(), T0.timestamp()],
                           "end_ts": [T0.timestamp() + 4 * 3600, T0.timestamp() + 3600]},
                          schema=LEDGER_SCHEMA)
    s.write_ledger(ledger)
    return s


RANGES = [
    (T0, T0 + timedelta(hours=5)),  # whole hours: all from the tier
    (T0 + timedelta(minutes=7), T0 + timedelta(hours=4, minutes=31)),  # partial ends
    (T0 + timedelta(minutes=70), T0 + timedelta(minutes=110)),  # inside one hour
    (T0 + timedelta(hours=1), T0 + timedelta(hours=2, minutes=1)),  # one whole hour + 1 min
]


def figures(s: Store, start: datetime, end: datetime, tenant: str | None = None) -> dict:
    return range_figures(connect(str(s.root)), start, end, tenant)


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same(a[key], b[key])
        elif isinstance(a[key], list):
            assert len(a[key]) == len(b[key]), key
            for x, y in zip(a[key], b[key], strict=True):
                assert_same(x, y)
        elif isinstance(a[key], float):
            assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-9), key
        else:
            assert a[key] == b[key], key


def compact_all(s: Store, min_files: int = 1) -> None:
    for p in (0, 1):
        upto = max(int(f.stem) for f in s.partition_rollup_files(TOPIC, p))
        compact_partition(s, TOPIC, p, upto, min_files)


def test_report_is_the_same_from_the_tier_as_from_minute_rows(store):
    before = {r: figures(store, *r) for r in RANGES}
    compact_all(store)
    assert len(list(store.hourly_dir().rglob("*.parquet"))) == 2  # one per partition
    tier = snapshot(store)
    assert not any(tier.is_recent(f) for f in store.rollup_files())  # all covered
    for r in RANGES:
        assert_same(before[r], figures(store, *r))
    # and one tenant's view
    assert_same(figures(store, *RANGES[1], tenant="borealis"),
                {**before[RANGES[1]], "tenants": [t for t in before[RANGES[1]]["tenants"]
                                                  if t["tenant"] == "borealis"]})


def test_tier_figures_equal_an_independent_sum_of_the_minute_rows(store):
    compact_all(store)
    minutes = pl.read_parquet(store.rollup_files())
    for start, end in RANGES:
        rows = minutes.filter((pl.col("minute") >= start.replace(tzinfo=None))
                              & (pl.col("minute") < end.replace(tzinfo=None)))
        got = figures(store, start, end)
        assert got["fleet"]["gpu_hours_observed"] == pytest.approx(rows["observed_s"].sum() / 3600)
        busy = rows.group_by("tenant").agg(pl.col("busy_s").sum() / 3600)
        want = {t: b for t, b in busy.iter_rows() if t is not None}
        assert {t["tenant"]: t["gpu_hours_busy"] for t in got["tenants"]
                if t["tenant"] in want} == pytest.approx(want)
        unknown = rows.filter(pl.col("model_key").is_null())
        assert got["fleet"]["unknown_models"] == [
            {"model": "Z9000", "gpus": unknown["uuid"].n_unique(),
             "gpu_hours_observed": pytest.approx(unknown["observed_s"].sum() / 3600)}]


def test_rows_written_after_a_compaction_are_counted_once(store):
    compact_all(store)
    # A correction for minutes of hour 1 (already in the tier) lands in a newer file, and a
    # flush still in progress (seq above the checkpoint) must not be compacted.
    fix = correction_rows(minute_rows(random.Random(1), range(61, 64)))
    store.write_rollups(TOPIC, 0, 100, fix)
    expected = figures(store, *RANGES[0])
    tier = snapshot(store)
    assert [f.name for f in store.rollup_files() if tier.is_recent(f)] == ["000000000100.parquet"]
    assert compact_partition(store, TOPIC, 0, upto_seq=99) == 15  # 100 is not durable yet
    assert_same(expected, figures(store, *RANGES[0]))
    assert compact_partition(store, TOPIC, 0, upto_seq=100) == 100
    tier = snapshot(store)
    assert not any(tier.is_recent(f) for f in store.rollup_files())
    assert_same(expected, figures(store, *RANGES[0]))
    cobalt = {t["tenant"]: t for t in expected["tenants"]}["cobalt"]
    moved = fix.filter(pl.col("tenant") == "cobalt")
    assert cobalt["gpu_hours_allocated"] == pytest.approx(
        (moved["observed_s"].sum() + moved["gap_s"].sum()) / 3600)


def test_an_open_connection_sees_files_written_and_compacted_after_it_was_made(store):
    """The API keeps one connection for a while: the pipeline's newer minute files and
    compactions must neither be missed nor counted twice on it."""
    compact_all(store)
    con = connect(str(store.root))
    store.write_rollups(TOPIC, 1, 16, minute_rows(random.Random(3), range(300, 330)))
    store.write_rollups(TOPIC, 1, 17, correction_rows(minute_rows(random.Random(4),
                                                                  range(120, 122))))
    span = (T0, T0 + timedelta(hours=6))
    assert_same(figures(store, *span), range_figures(con, *span))
    compact_all(store)  # a newer hourly file the open connection does not list
    assert_same(figures(store, *span), range_figures(con, *span))
    assert range_figures(con, *span)["fleet"]["gpu_hours_observed"] > \
        figures(store, *RANGES[0])["fleet"]["gpu_hours_observed"]


def test_levels_merge_and_readers_never_count_a_sequence_twice(store):
    """One compaction per file: after MERGE_FANIN of them a merged file appears; until the
    merged-away files are deleted, readers skip them."""
    expected = figures(store, *RANGES[1])
    for seq in range(1, 16):
        compact_partition(store, TOPIC, 0, upto_seq=seq)
    folder = store.hourly_partition_dir(TOPIC, 0)
    files = hourly_files(folder)
    levels = sorted(h.level for h in outermost(files))
    assert levels == [0] * (15 - MERGE_FANIN) + [1]
    assert len(files) == 15 + 1  # the 8 merged-away level-0 files are still there
    assert_same(expected, figures(store, *RANGES[1]))

    _delete_merged(folder)  # too new to delete: a reader may have just listed them
    assert len(hourly_files(folder)) == 16
    _delete_merged(folder, now=time.time() + DELETE_AFTER_S + 1)
    assert len(hourly_files(folder)) == 15 - MERGE_FANIN + 1
    assert_same(expected, figures(store, *RANGES[1]))


def test_a_level_merge_left_half_done_is_read_correctly(store):
    """A crash after writing a merged file, before deleting anything: both generations sit in
    the folder and the reader takes the outermost."""
    expected = figures(store, *RANGES[0])
    for seq in range(1, MERGE_FANIN + 1):
        compact_partition(store, TOPIC, 1, upto_seq=seq)
    folder = store.hourly_partition_dir(TOPIC, 1)
    assert [h.level for h in outermost(hourly_files(folder))] == [1]
    # Pretend the deletion ran long ago for the rest of this check, but keep one old file:
    old = [h for h in hourly_files(folder) if h.level == 0]
    for h in old[1:]:
        os.utime(h.path, (0, 0))
    _delete_merged(folder)
    assert len(hourly_files(folder)) == 2  # merged + one too new to delete
    assert_same(expected, figures(store, *RANGES[0]))


def test_range_params_split_whole_hours():
    p = range_params(T0 + timedelta(minutes=7), T0 + timedelta(hours=3, minutes=2))
    assert (p["h_from"], p["h_to"]) == ((T0 + timedelta(hours=1)).replace(tzinfo=None),
                                        (T0 + timedelta(hours=3)).replace(tzinfo=None))
    p = range_params(T0, T0 + timedelta(hours=2))
    assert (p["h_from"], p["h_to"]) == (p["t_from"], p["t_to"])
    p = range_params(T0 + timedelta(minutes=5), T0 + timedelta(minutes=50))
    assert p["h_from"] == p["h_to"] == p["t_to"]  # no whole hour: minute rows only
