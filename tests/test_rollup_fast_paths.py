"""The rollup's fast paths give exactly what the straightforward formulation gives.

prepare() dedupes and orders with one stable numeric sort and finds each GPU's previous
sample with plain shifts; aggregate() skips minute splitting when no sample crosses a minute,
the SM-clock window when no clock is missing, and the ledger joins when the ledger is empty;
gap_rows() uses the same sort and shifts. The references below are the formulations these
replaced (unique + sort + window functions over the GPU key, always-on splitting): outputs
must be frame-equal, row order and the raw archive included, on generated batches with
duplicates, redeliveries in another order, MIG instances, missing and reset counters,
missing clocks, samples across minute and allocation edges, carried state, with and
without a ledger.
"""

from __future__ import annotations

import polars as pl
from fleetlens.pipeline import rollup as R
from fleetlens.pipeline.gaps import empty_gap_state, gap_rows
from fleetlens.pipeline.rollup import GPU_KEY, KEYS, aggregate, empty_energy_state, prepare
from fleetlens.pipeline.tenancy import ledger_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from fleetlens.config import Definitions, TenancyConfig
from fleetlens.schema import FIELD_NAMES, polars_schema
from tests.test_rollup_properties import build_ledger as non_overlapping

T0 = 1794787200.0
GPUS = [("n1", 0, None), ("n1", 1, None), ("n2", 0, 1), ("n2", 0, 2), ("n2", 1, None)]


# -- references: the formulations before the fast paths ------------------------------------
def ref_prepare(samples: pl.DataFrame, state: pl.DataFrame):
    s = samples.unique(subset=[*GPU_KEY, "ts"], keep="first", maintain_order=True)
    s = s.sort([*GPU_KEY, "ts"])
    s = s.join(state, on=GPU_KEY, how="left", nulls_equal=True, maintain_order="left")
    counter = pl.col("energy_j")
    first = pl.int_range(pl.len()).over(GPU_KEY) == 0
    s = s.with_columns(
        pl.when(first).then(pl.col("_prev_energy")).otherwise(counter.shift(1).over(GPU_KEY))
        .alias("_pe"),
        pl.when(first).then(pl.col("_prev_ts")).otherwise(pl.col("ts").shift(1).over(GPU_KEY))
        .alias("_pt"))
    delta = counter - pl.col("_pe")
    usable = (counter.is_not_null() & pl.col("_pe").is_not_null() & (delta >= 0)
              & (pl.col("ts") - pl.col("_pt") <= 2 * pl.col("interval_s")))
    s = s.with_columns(
        pl.when(usable).then(delta).otherwise(pl.col("power_w") * pl.col("interval_s"))
        .alias("_energy")).drop("_prev_energy", "_prev_ts", "_pe", "_pt")
    return s


def ref_aggregate(s, ledger, defs, tenancy, monkeypatch):
    """aggregate() with every fast path forced off."""
    def split(frame, ledger_):
        pieces = R.split_at_allocations(R.split_at_minutes(frame), ledger_)
        return pieces.with_columns(
            (pl.col("_end") - pl.col("ts")).alias("_secs"),
            ((pl.col("_end") - pl.col("ts")) / pl.col("interval_s")).alias("_frac"))

    def fill_clock(frame):
        return frame.with_columns(
            pl.coalesce("sm_clock_mhz", pl.col("sm_clock_mhz").max().over("uuid", "ts")))

    with monkeypatch.context() as m:
        m.setattr(R, "split_into_pieces", split)
        m.setattr(R, "fill_shared_clock", fill_clock)
        return aggregate(s, _with_far_allocation(ledger), defs, tenancy)


def _with_far_allocation(ledger: pl.DataFrame) -> pl.DataFrame:
    """The same ledger plus an allocation no sample can touch: forces the as-of join path."""
    far = pl.DataFrame({"tenant": ["nobody"], "node": ["no-such-node"], "gpu": [None],
                        "start_ts": [0.0], "end_ts": [1.0]}, schema=ledger.schema)
    return pl.concat([ledger, far])


# -- generated batches -----------------------------------------------------------------------
sample_st = st.fixed_dictionaries({
    "gpu_ix": st.integers(0, len(GPUS) - 1),
    "ts": st.integers(0, 150).map(lambda x: T0 + x),
    "interval_s": st.sampled_from([1.0, 1.0, 1.0, 7.5, 45.0]),
    "gpu_util": st.one_of(st.none(), st.sampled_from([0.0, 50.0, 100.0])),
    "sm_active": st.one_of(st.none(), st.sampled_from([0.0, 0.1, 0.5])),
    "tensor_active": st.one_of(st.none(), st.sampled_from([0.0, 0.3, 0.6])),
    "sm_clock_mhz": st.one_of(st.none(), st.sampled_from([1000.0, 1980.0])),
    "energy_j": st.one_of(st.none(), st.integers(0, 400).map(float)),
    "power_w": st.one_of(st.none(), st.sampled_from([50.0, 400.0])),
    "xid": st.one_of(st.none(), st.sampled_from([13, 79])),
    "namespace": st.one_of(st.none(), st.just("ns1")),
    "cluster": st.one_of(st.none(), st.just("c1")),
})

alloc_st = st.lists(
    st.tuples(st.sampled_from(["n1", "n2"]), st.sampled_from([None, 0, 1]),
              st.integers(0, 149), st.integers(1, 100), st.sampled_from(["t1", "t2"])),
    max_size=4)


def build_samples(raw: list[dict], same_clock: bool) -> pl.DataFrame:
    rows = []
    for r in raw:
        node, gpu, mig = GPUS[r["gpu_ix"]]
        row = {k: None for k in FIELD_NAMES}
        row.update({k: v for k, v in r.items() if k != "gpu_ix"})
        if same_clock:
            row["sm_clock_mhz"] = 1500.0
        row.update(v=1, node=node, gpu=gpu, uuid=f"GPU-{node}-{gpu}", mig_instance=mig,
                   mig_profile="1g.10gb" if mig is not None else None,
                   model="NVIDIA H100 80GB HBM3")
        rows.append(row)
        if mig == 1 and not same_clock:
            # Its sibling instance at the same time, with the clock only one of them reports.
            rows.append({**row, "mig_instance": 2,
                         "sm_clock_mhz": None if row["sm_clock_mhz"] else 1980.0})
    return pl.DataFrame(rows, schema=polars_schema())


def build_ledger(raw) -> pl.DataFrame:
    return ledger_frame(non_overlapping(raw))


SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.lists(sample_st, min_size=1, max_size=60), st.lists(sample_st, max_size=10),
       alloc_st, st.booleans(), st.booleans())
def test_fast_paths_equal_the_straightforward_formulation(monkeypatch, raw, earlier, allocs,
                                                          same_clock, whole_seconds):
    if whole_seconds:  # no sample crosses a minute: the splitting fast path is taken
        raw = [{**r, "interval_s": 1.0} for r in raw]
    samples = build_samples(raw, same_clock)
    # Redelivered duplicates, out of order (the first copy wins in both formulations).
    # Values differ between the copies, so keeping the wrong one shows.
    samples = pl.concat([samples, samples.reverse().head(5).with_columns(
        pl.col("gpu_util").fill_null(3.0) * 0.5, pl.col("energy_j") + 7)])
    ledger = build_ledger(allocs)
    defs, tenancy = Definitions(), TenancyConfig()
    # State carried from an earlier flush (counters, last samples of some GPUs).
    _, state = prepare(build_samples(earlier, same_clock).with_columns(
        pl.col("ts") - 400), empty_energy_state())

    got, got_state = prepare(samples, state)
    want = ref_prepare(samples, state)
    assert_frame_equal(got, want)
    want_state = R.sample_energy(want.drop("_energy"), state)[1]
    assert_frame_equal(got_state.sort(GPU_KEY, nulls_last=True),
                       want_state.sort(GPU_KEY, nulls_last=True))

    # Rollup rows come sorted by GPU-minute; the order of two tenants' rows of one GPU-minute
    # was never fixed (group_by order), so the comparison sorts by every key.
    assert_frame_equal(
        aggregate(got, ledger, defs, tenancy).sort(KEYS, nulls_last=True),
        ref_aggregate(want, ledger, defs, tenancy, monkeypatch).sort(KEYS, nulls_last=True))

    gaps, gap_state = gap_rows(got, empty_gap_state(), ledger, defs, tenancy)
    far = _with_far_allocation(ledger)
    ref_gaps, ref_gap_state = gap_rows(want.sample(fraction=1.0, shuffle=True, seed=1),
                                       empty_gap_state(), far, defs, tenancy)
    assert_frame_equal(gaps, ref_gaps)
    assert_frame_equal(gap_state.sort(GPU_KEY, nulls_last=True),
                       ref_gap_state.sort(GPU_KEY, nulls_last=True))


def test_mig_instances_share_the_reported_clock_in_both_formulations(monkeypatch):
    raw = [{"gpu_ix": 2, "ts": T0 + k, "interval_s": 1.0, "gpu_util": 50.0, "sm_active": 0.5,
            "tensor_active": 0.6, "sm_clock_mhz": clock, "energy_j": None, "power_w": None,
            "xid": None, "namespace": None, "cluster": None}
           for k, clock in enumerate([None, 1000.0])]
    samples, _ = prepare(build_samples(raw, same_clock=False), empty_energy_state())
    ledger = build_ledger([])
    got = aggregate(samples, ledger, Definitions(), TenancyConfig()).sort(KEYS)
    want = ref_aggregate(samples, ledger, Definitions(), TenancyConfig(), monkeypatch)
    assert_frame_equal(got, want.sort(KEYS))
    # Each second, the instance without a clock of its own used its sibling's (1980 MHz, then
    # 1000 MHz; the H100's spec clock is 1830 MHz), not a ratio of 1.
    for mfu_s in got["mfu_s"]:
        assert abs(mfu_s - 0.6 * (1980 + 1000) / 1830) < 1e-9


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "ab"]), st.sampled_from([None, 0, 1]),
                          st.integers(0, 3).map(float)), max_size=8))
def test_in_gpu_order_agrees_with_a_stable_sort(keys):
    frame = pl.DataFrame(keys, schema={"uuid": pl.String, "mig_instance": pl.Int64,
                                       "ts": pl.Float64}, orient="row")
    frame = frame.with_row_index("_i")
    ordered = frame.sort("uuid", "mig_instance", "ts", maintain_order=True)
    assert R.in_gpu_order(frame) == frame.equals(ordered)
    assert_frame_equal(R.gpu_sorted(frame), ordered)
