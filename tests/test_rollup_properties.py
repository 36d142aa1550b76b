"""Invariants of the rollups, checked on generated inputs (hypothesis).

* every second of a GPU is in exactly one bucket, and the buckets add up to the GPU time the
  samples cover;
* the tenants and the unallocated part add up to the fleet;
* a GPU-second goes to the tenant whose allocation covers it, cut exactly at allocation edges;
* shuffling and duplicating the input changes nothing.
"""

from __future__ import annotations

import random

import polars as pl
from fleetlens.pipeline.rollup import rollup
from fleetlens.pipeline.tenancy import Allocation, check_overlaps, ledger_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetlens.config import Definitions
from fleetlens.schema import FIELD_NAMES, polars_schema

T0 = 1794787200.0
GPUS = [("n1", 0), ("n1", 1), ("n2", 0)]
TENANTS = ["t1", "t2", "t3"]

sample_st = st.fixed_dictionaries({
    "gpu_ix": st.integers(0, len(GPUS) - 1),
    "ts": st.integers(0, 600).map(lambda x: T0 + x / 2),  # half-second steps over 5 minutes
    "interval_s": st.sampled_from([1.0, 7.5, 10.0, 30.0, 45.0, 60.0]),
    "gpu_util": st.one_of(st.none(), st.sampled_from([0.0, 0.5, 2.0, 50.0, 100.0])),
    "sm_active": st.one_of(st.none(), st.sampled_from([0.0, 0.005, 0.1, 0.5])),
    "tensor_active": st.one_of(st.none(), st.sampled_from([0.0, 0.3, 0.9])),
    "fb_used_mib": st.one_of(st.none(), st.sampled_from([0.0, 2048.0])),
    "xid": st.one_of(st.none(), st.sampled_from([13, 79])),
    "power_w": st.one_of(st.none(), st.sampled_from([50.0, 400.0])),
    "namespace": st.one_of(st.none(), st.just("ns1")),
})

# Allocations: per (node, gpu or '*'), cut points over [T0, T0 + 400) with tenants or gaps.
alloc_st = st.lists(
    st.tuples(st.sampled_from(["n1", "n2"]), st.sampled_from([None, 0, 1]),
              st.integers(0, 399), st.integers(1, 200), st.sampled_from(TENANTS)),
    max_size=6)


def build_samples(raw: list[dict]) -> pl.DataFrame:
    rows = []
    for r in raw:
        node, gpu = GPUS[r["gpu_ix"]]
        row = {k: None for k in FIELD_NAMES}
        row.update({k: v for k, v in r.items() if k != "gpu_ix"})
        row.update(v=1, node=node, gpu=gpu, uuid=f"GPU-{node}-{gpu}",
                   model="NVIDIA H100 80GB HBM3")
        rows.append(row)
    return pl.DataFrame(rows, schema=polars_schema())


def build_ledger(raw) -> list[Allocation]:
    """Keep the generated allocations that do not overlap one already kept."""
    kept: list[Allocation] = []
    for i, (node, gpu, start, length, tenant) in enumerate(raw):
        a = Allocation(i, tenant, node, gpu, T0 + start, T0 + start + length)
        try:
            check_overlaps([*kept, a])
        except ValueError:
            continue
        kept.append(a)
    return kept


def canonical(frame: pl.DataFrame) -> list[tuple]:
    keys = ["minute", "uuid", "tenant", "tenant_source"]
    sums = ["samples", "observed_s", "busy_s", "low_eff_s", "idle_s", "idle_held_s",
            "unavailable_s", "energy_j", "mfu_s", "mfu_basis_s", "mfu_busy_basis_s"]
    agg = frame.group_by(keys).agg(pl.col(sums).sum()).sort(keys, nulls_last=True)
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row)
            for row in agg.iter_rows()]


def covered_seconds(samples: pl.DataFrame) -> dict[str, float]:
    dedup = samples.unique(subset=["uuid", "mig_instance", "ts"], keep="first")
    return dict(dedup.group_by("uuid").agg(pl.col("interval_s").sum()).iter_rows())


SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.lists(sample_st, min_size=1, max_size=25), alloc_st)
def test_buckets_partition_each_gpus_time_and_tenants_sum_to_the_fleet(raw, allocs):
    samples = build_samples(raw)
    ledger = ledger_frame(build_ledger(allocs))
    out = rollup(samples, ledger, Definitions())
    for r in out.iter_rows(named=True):
        total = r["busy_s"] + r["idle_s"] + r["unavailable_s"]
        assert abs(r["observed_s"] - total) < 1e-9
        assert r["idle_held_s"] <= r["idle_s"] + 1e-9 and r["low_eff_s"] <= r["busy_s"] + 1e-9
        assert r["mfu_busy_basis_s"] <= r["mfu_basis_s"] + 1e-9
    per_gpu = dict(out.group_by("uuid").agg(pl.col("observed_s").sum()).iter_rows())
    want = covered_seconds(samples)
    assert per_gpu.keys() == want.keys()
    for uuid, seconds in want.items():
        assert abs(per_gpu[uuid] - seconds) < 1e-6
    by_tenant = out.group_by("tenant").agg(pl.col("observed_s").sum())["observed_s"].sum()
    assert abs(by_tenant - out["observed_s"].sum()) < 1e-6


@SETTINGS
@given(st.lists(sample_st, min_size=1, max_size=25), alloc_st)
def test_ledger_seconds_are_the_exact_overlap_with_allocations(raw, allocs):
    samples = build_samples(raw)
    kept = build_ledger(allocs)
    out = rollup(samples, ledger_frame(kept), Definitions())
    got = dict(out.filter(pl.col("tenant_source") == "ledger")
               .group_by("tenant").agg(pl.col("observed_s").sum()).iter_rows())
    # Brute force: overlap of each (deduplicated) sample interval with each allocation.
    want: dict[str, float] = {}
    dedup = samples.unique(subset=["uuid", "mig_instance", "ts"], keep="first")
    for s in dedup.iter_rows(named=True):
        for a in kept:
            if a.node == s["node"] and (a.gpu is None or a.gpu == s["gpu"]):
                overlap = min(a.end, s["ts"] + s["interval_s"]) - max(a.start, s["ts"])
                if overlap > 0:
                    want[a.tenant] = want.get(a.tenant, 0.0) + overlap
    assert got.keys() == {t for t, v in want.items() if v > 0}
    for tenant, seconds in want.items():
        assert abs(got[tenant] - seconds) < 1e-6


@SETTINGS
@given(st.lists(sample_st, min_size=1, max_size=25), alloc_st, st.randoms())
def test_shuffling_and_duplicating_the_input_changes_nothing(raw, allocs, rnd: random.Random):
    samples = build_samples(raw)
    ledger = ledger_frame(build_ledger(allocs))
    # Deduplication keeps the first copy: make copies identical, as redelivery would.
    samples = samples.unique(subset=["uuid", "mig_instance", "ts"], keep="first",
                             maintain_order=True)
    noisy = pl.concat([samples, samples.sample(fraction=0.5, seed=rnd.randint(0, 999))])
    noisy = noisy.sample(fraction=1.0, shuffle=True, seed=rnd.randint(0, 999))
    assert canonical(rollup(noisy, ledger, Definitions())) == \
        canonical(rollup(samples, ledger, Definitions()))
