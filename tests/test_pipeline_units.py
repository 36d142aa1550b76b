"""The pipeline's pieces on in-memory data: decode, tenancy, windows, rollups, catalog."""

from __future__ import annotations

import json

import polars as pl
import pytest
from fleetlens.pipeline import catalog
from fleetlens.pipeline.decode import Record, decode
from fleetlens.pipeline.rollup import empty_energy_state, rollup, rollup_with_state
from fleetlens.pipeline.store import Checkpoint
from fleetlens.pipeline.tenancy import LedgerError, attribute, ledger_frame, read_ledger_csv
from fleetlens.pipeline.windows import PartitionWindows

from fleetlens.config import Definitions, TenancyConfig

T0 = 1794787200.0  # 2026-11-16T00:00:00Z


def line(**over) -> bytes:
    s = {"v": 1, "ts": T0, "interval_s": 10.0, "node": "n1", "gpu": 0, "uuid": "GPU-1",
         "model": "NVIDIA H100 80GB HBM3", "gpu_util": 50.0}
    s.update(over)
    return json.dumps(s).encode()


# -- decode ---------------------------------------------------------------------------------
def test_decode_fast_path_keeps_source_offsets():
    recs = [Record(0, 5, b"n1", line(gpu=0) + b"\n" + line(gpu=1) + b"\n"),
            Record(1, 9, b"n2", line(node="n2"))]
    frame, dead = decode(recs)
    assert dead == []
    assert frame.select("gpu", "_partition", "_offset").rows() == [(0, 0, 5), (1, 0, 5),
                                                                    (0, 1, 9)]


def test_decode_bad_line_costs_only_itself():
    value = b"\n".join([line(gpu=0), b"{oops", line(gpu=2, gpu_util="x"), line(gpu=3)])
    frame, dead = decode([Record(0, 1, b"n1", value)])
    assert frame["gpu"].to_list() == [0, 3]
    assert [d.offset for d in dead] == [1, 1]
    assert "not valid JSON" in dead[0].reason and dead[0].line == "{oops"
    assert "'gpu_util' must be a number" in dead[1].reason


def test_decode_value_rules_are_checked_after_a_clean_parse():
    frame, dead = decode([Record(0, 1, b"n1", line(sm_active=1.5) + b"\n" + line(v=7))])
    assert frame.height == 0
    assert sorted(d.reason for d in dead) == ["field 'sm_active' is above 1",
                                              "unsupported schema version"]


# -- tenancy --------------------------------------------------------------------------------
def write_ledger(tmp_path, body: str):
    p = tmp_path / "ledger.csv"
    p.write_text("tenant,node,gpu,start,end\n" + body)
    return p


def test_overlapping_allocations_are_rejected_naming_both_rows(tmp_path):
    p = write_ledger(tmp_path, "a,n1,*,2026-11-16T00:00:00Z,2026-11-16T02:00:00Z\n"
                               "b,n1,3,2026-11-16T01:00:00Z,2026-11-16T03:00:00Z\n")
    with pytest.raises(LedgerError) as err:
        read_ledger_csv(p)
    assert "line 2 (a, n1, gpu *" in str(err.value) and "line 3 (b, n1, gpu 3" in str(err.value)


@pytest.mark.parametrize("body, fragment", [
    ("a,n1,x,2026-11-16T00:00:00Z,2026-11-16T01:00:00Z\n", "gpu must be an index or '*'"),
    ("a,n1,0,2026-11-16T00:00:00,2026-11-16T01:00:00Z\n", "has no UTC offset"),
    ("a,n1,0,2026-11-16T02:00:00Z,2026-11-16T01:00:00Z\n", "end must be after start"),
    ("a,n1,0,yesterday,2026-11-16T01:00:00Z\n", "is not an RFC 3339 time"),
])
def test_bad_ledger_rows(tmp_path, body, fragment):
    with pytest.raises(LedgerError, match=fragment):
        read_ledger_csv(write_ledger(tmp_path, body))


def test_adjacent_allocations_do_not_overlap_and_precedence_holds(tmp_path):
    rows = read_ledger_csv(write_ledger(
        tmp_path, "a,n1,0,2026-11-16T00:00:00Z,2026-11-16T00:01:00Z\n"
                  "b,n1,*,2026-11-16T00:01:00Z,2026-11-16T00:02:00Z\n"))
    samples = pl.DataFrame({
        "node": ["n1", "n1", "n1", "n1", "n2", "n2", "n2", "n2"],
        "gpu": [0, 1, 0, 0, 0, 1, 2, 3],
        "ts": [T0 + 59.9, T0 + 30, T0 + 60, T0 + 120, T0, T0, T0, T0],
        "tenant": [None, "self", "self", "self", None, None, None, None],
        "namespace": ["ns", "ns", None, "ns", "ns", "prod-a", "kube-system", None],
        "job_id": [None, None, None, None, "77", None, None, "77"]})
    tenancy = TenancyConfig(namespace_tenants={"prod-a": "team-a"},
                            slurm_accounts={"77": "physics"})
    out = attribute(samples, ledger_frame(rows), tenancy)
    assert out.select("tenant_resolved", "tenant_source").rows() == [
        ("a", "ledger"),  # ledger beats everything, start inclusive
        ("self", "sample"),  # gpu 1 has no row before +60: the sample's own tenant
        ("b", "ledger"),  # '*' covers every GPU of the node
        ("self", "sample"),  # end is exclusive
        ("ns", "namespace"),  # an unmapped namespace stands for itself (the default) ...
        ("team-a", "namespace"),  # ... a mapped one for its tenant
        ("kube-system", "namespace"),
        ("physics", "slurm"),  # Slurm job -> account, below the namespace in precedence
    ]
    strict = TenancyConfig(namespace_tenants={"prod-a": "team-a"},
                           namespace_fallback="unallocated")
    out = attribute(samples, ledger_frame(rows), strict)
    assert out["tenant_resolved"].to_list()[4:] == [None, "team-a", None, None]


# -- windows --------------------------------------------------------------------------------
def frame(rows):
    schema = {"node": pl.String, "ts": pl.Float64, "_offset": pl.Int64, "_partition": pl.Int32}
    return pl.DataFrame(rows, orient="row", schema=schema)


def test_window_closes_on_the_nodes_own_watermark_and_commit_follows_open_windows():
    w = PartitionWindows(0, Checkpoint())
    w.accept(frame([("a", T0 + 10, 0, 0), ("b", T0 + 10, 1, 0), ("a", T0 + 65, 2, 0)]), now=0)
    for o in range(3):
        w.consumed(o)
    # a's watermark (T0+65) is not yet 60 s + 10 s lateness past minute T0.
    assert w.take_closed(10, 120, now=1).height == 0
    w.accept(frame([("a", T0 + 70, 3, 0)]), now=2)
    w.consumed(3)
    closed = w.take_closed(10, 120, now=3)
    assert closed.select("node", "_offset").rows() == [("a", 0)]
    assert w.commit_offset() == 1  # b's minute is still open at offset 1
    assert w.closed == {"a": int(T0)}
    # b falls silent for idle_close_s: its window closes by processing time.
    closed = w.take_closed(10, 120, now=200)
    assert set(closed["node"]) == {"a", "b"} and w.commit_offset() == 4


def test_replayed_rows_are_skipped_and_late_rows_returned():
    cp = Checkpoint(seq=3, commit_offset=10, consumed_offset=20, closed={"a": int(T0)})
    w = PartitionWindows(0, cp)
    late, skipped = w.accept(frame([("a", T0 + 5, 12, 0), ("a", T0 + 61, 13, 0),
                                    ("a", T0 + 7, 25, 0)]), now=0)
    assert skipped == 1  # offset 12 <= 20: made durable before the restart
    assert late.select("_offset").to_series().to_list() == [25]
    assert w.pending_rows == 1


# -- rollups --------------------------------------------------------------------------------
def samples(rows):
    base = {"v": 1, "interval_s": 30.0, "node": "n1", "gpu": 0, "uuid": "GPU-1",
            "model": "NVIDIA H100 80GB HBM3"}
    from fleetlens.schema import FIELD_NAMES, polars_schema

    full = [{**{k: None for k in FIELD_NAMES}, **base, **r} for r in rows]
    return pl.DataFrame(full, schema=polars_schema())


def test_rollup_minute_figures_by_hand():
    df = samples([
        {"ts": T0, "gpu_util": 100.0, "tensor_active": 0.6, "sm_clock_mhz": 915.0,
         "power_w": 500.0, "xid": 13},
        {"ts": T0 + 30, "gpu_util": 0.0, "sm_active": 0.0, "fb_used_mib": 2000.0,
         "power_w": 100.0, "throttle": 64},
        {"ts": T0 + 30, "gpu_util": 0.0, "sm_active": 0.0, "fb_used_mib": 2000.0,
         "power_w": 100.0},  # duplicate delivery of the same sample
    ])
    defs = Definitions()
    out = rollup(df, ledger_frame([]), defs).to_dicts()
    assert len(out) == 1
    r = out[0]
    assert (r["samples"], r["observed_s"], r["busy_s"], r["idle_s"], r["idle_held_s"]) == \
        (2, 60.0, 30.0, 30.0, 30.0)
    assert r["mfu_s"] == pytest.approx(0.6 * 915 / 1830 * 30)  # 0.3 x 30 s
    assert (r["mfu_basis_s"], r["mfu_busy_basis_s"]) == (60.0, 30.0)
    assert r["energy_j"] == 500 * 30 + 100 * 30
    assert r["gpu_util_mean"] == 50.0 and r["power_w_mean"] == 300.0
    assert (r["xid_count"], r["xid_last"], r["throttled_s"]) == (1, 13, 30.0)
    assert (r["unavailable_s"], r["low_eff_s"]) == (0.0, 0.0)
    assert r["tenant"] is None and r["tenant_source"] == "none"
    assert r["model_key"] == "h100_sxm5_80gb"


def test_gpu_down_xid_low_efficiency_and_the_buckets_add_up():
    df = samples([
        {"ts": T0, "gpu_util": 100.0, "sm_active": 0.1, "tensor_active": 0.05},  # low-eff
        {"ts": T0 + 30, "gpu_util": 100.0, "sm_active": 0.9, "xid": 79},  # fell off the bus
    ])
    r = rollup(df, ledger_frame([]), Definitions()).to_dicts()[0]
    assert (r["busy_s"], r["low_eff_s"], r["unavailable_s"], r["idle_s"]) == (30, 30, 30, 0)
    assert r["observed_s"] == r["busy_s"] + r["idle_s"] + r["unavailable_s"]
    assert r["mfu_basis_s"] == 30.0  # the down sample has no MFU


def test_energy_from_counter_deltas_with_reset_and_fallback():
    df = samples([
        {"ts": T0, "energy_j": 1000.0, "power_w": 300.0},  # no previous reading: power x time
        {"ts": T0 + 30, "energy_j": 10000.0, "power_w": 300.0},  # delta 9000
        {"ts": T0 + 60, "energy_j": 500.0, "power_w": 200.0},  # reset: power x time = 6000
        {"ts": T0 + 90, "energy_j": 4500.0, "power_w": 200.0},  # delta 4000
    ])
    rows, state = rollup_with_state(df, ledger_frame([]), Definitions())
    assert rows["energy_j"].to_list() == [300 * 30 + 9000, 200 * 30 + 4000]
    assert state.rows() == [("GPU-1", None, T0 + 90, 4500.0)]
    # The carried state gives the next flush's first sample its delta.
    nxt = samples([{"ts": T0 + 120, "energy_j": 5100.0, "power_w": 1.0}])
    rows, _ = rollup_with_state(nxt, ledger_frame([]), Definitions(), energy_state=state)
    assert rows["energy_j"].to_list() == [600.0]


def test_samples_are_cut_at_minute_and_allocation_boundaries(tmp_path):
    ledger = ledger_frame(read_ledger_csv(write_ledger(
        tmp_path, "a,n1,0,2026-11-16T00:00:00Z,2026-11-16T00:00:50Z\n")))
    # 40 s at T0+30: 20 s in allocation a, then 10 s unallocated, then 10 s in minute 2.
    df = samples([{"ts": T0 + 30, "interval_s": 40.0, "gpu_util": 50.0, "power_w": 400.0}])
    rows = rollup(df, ledger, Definitions()).sort("minute", "tenant", nulls_last=True)
    got = rows.select("tenant", "observed_s", "samples", "energy_j").rows()
    assert got == [("a", 20.0, 1, 8000.0), (None, 10.0, 0, 4000.0), (None, 10.0, 0, 4000.0)]
    assert rows["minute"].dt.epoch("s").to_list() == [T0, T0, T0 + 60]


def test_power_limit_tells_an_h200_nvl_from_an_sxm():
    df = samples([
        {"ts": T0, "model": "NVIDIA H200", "power_limit_w": 600.0, "gpu_util": 100.0,
         "tensor_active": 0.5, "sm_clock_mhz": 1545.0},
        {"ts": T0, "uuid": "GPU-2", "gpu": 1, "model": "NVIDIA H200", "power_limit_w": 700.0,
         "gpu_util": 100.0, "tensor_active": 0.5, "sm_clock_mhz": 1545.0},
    ])
    rows = rollup(df, ledger_frame([]), Definitions()).sort("gpu")
    assert rows["model_key"].to_list() == ["h200_nvl", "h200_sxm"]
    # NVL spec clock 1545 MHz: ratio 1.0; SXM 1830 MHz: ratio 1545/1830
    assert rows["mfu_s"].to_list() == pytest.approx([0.5 * 30, 0.5 * 1545 / 1830 * 30])


def test_thresholds_come_from_config():
    df = samples([{"ts": T0, "gpu_util": 4.0, "sm_active": 0.03}])
    assert rollup(df, ledger_frame([]), Definitions())["busy_s"][0] == 30.0
    loose = Definitions(idle_gpu_util_max=5.0, idle_sm_active_max=0.05)
    assert rollup(df, ledger_frame([]), loose)["idle_s"][0] == 30.0


# -- catalog --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "h100_sxm5_80gb"),
    ("NVIDIA-H100-80GB-HBM3", "h100_sxm5_80gb"),  # --replace-blanks-in-model-name
    ("nvidia h100 80gb hbm3", "h100_sxm5_80gb"),
    ("NVIDIA H20", "h20"),
    ("NVIDIA H200", "h200_sxm"),
    ("NVIDIA H200 NVL", "h200_nvl"),
    ("NVIDIA A100-SXM4-80GB", "a100_sxm4_80gb"),
    ("NVIDIA A100-PCIE-80GB", "a100_pcie_80gb"),
    ("NVIDIA L40", "l40"),
    ("NVIDIA L40S", "l40s"),
    ("NVIDIA L4", "l4"),
    ("NVIDIA GH200 144G HBM3e", "gh200_144gb"),
    ("NVIDIA H100", None),  # simulators' short name: unknown, never guessed to be SXM
    ("NVIDIA Z9000", None),
    ("", None),
])
def test_catalog_matches_whole_names(name, key):
    spec = catalog.lookup(name)
    assert (spec.model_key if spec else None) == key


def test_catalog_peaks_reproduce_from_sm_count_and_spec_clock():
    h100 = catalog.load_catalog()["h100_sxm5_80gb"]
    # Hopper: 4096 dense BF16 FLOP per clock per SM.
    assert h100.sm_count * 4096 * h100.spec_clock_mhz * 1e6 / 1e12 == pytest.approx(
        h100.bf16_dense_tflops, rel=0.001)
    assert all(s.source for s in catalog.load_catalog().values())


def test_silences_between_samples_of_one_tenant_count_as_unavailable(tmp_path):
    from fleetlens.pipeline.gaps import empty_gap_state, gap_rows
    from fleetlens.pipeline.rollup import prepare

    ledger = ledger_frame(read_ledger_csv(write_ledger(
        tmp_path, "led,n1,2,2026-11-16T00:00:00Z,2026-11-16T01:00:00Z\n")))
    df = samples([
        # GPU 0, namespace ns: 0-30, 30-60, silence 60-300 (240 s > 3 x 30 - 30), 300-330
        {"ts": T0, "namespace": "ns", "gpu_util": 50.0},
        {"ts": T0 + 30, "namespace": "ns", "gpu_util": 50.0},
        {"ts": T0 + 300, "namespace": "ns", "gpu_util": 50.0},
        # GPU 1: a silence, but the tenant changed across it: nobody's allocation is known
        {"ts": T0, "uuid": "GPU-b", "gpu": 1, "namespace": "a"},
        {"ts": T0 + 600, "uuid": "GPU-b", "gpu": 1, "namespace": "b"},
        # GPU 2: ledger-allocated: the report counts missing ledger time itself
        {"ts": T0, "uuid": "GPU-c", "gpu": 2},
        {"ts": T0 + 600, "uuid": "GPU-c", "gpu": 2},
        # GPU 3: a short silence (60 s, not more than 3 intervals of 30 s): not a gap
        {"ts": T0, "uuid": "GPU-d", "gpu": 3, "namespace": "ns"},
        {"ts": T0 + 90, "uuid": "GPU-d", "gpu": 3, "namespace": "ns"},
    ])
    prepared, _ = prepare(df, empty_energy_state())
    rows, state = gap_rows(prepared, empty_gap_state(), ledger, Definitions())
    assert rows.select("uuid", "tenant", "gap_s", "observed_s").rows() == [
        ("GPU-1", "ns", 240.0, 0.0)]
    assert rows["minute"].dt.epoch("s").to_list() == [T0 + 300]
    # The state carries each GPU's last sample to the next flush.
    nxt = samples([{"ts": T0 + 1000, "namespace": "ns", "gpu_util": 1.0}])
    prepared, _ = prepare(nxt, empty_energy_state())
    rows, _ = gap_rows(prepared, state, ledger, Definitions())
    assert rows["gap_s"].to_list() == [1000.0 - 330.0]


# -- flush schedule ---------------------------------------------------------------------------
def test_live_data_flushes_a_second_after_a_minute_becomes_closable():
    from fleetlens.pipeline.flush_schedule import EARLY_FLUSH_GRACE_S, FlushSchedule

    s = FlushSchedule(interval_s=5.0, lateness_s=5.0, max_pending_rows=100, last_flush=0.0)
    minute = 1_800_000_000.0  # a minute start, epoch s
    s.observe(minute + 64.0, now=1.0, wall=minute + 64.5)  # the minute before is closable
    s.flushed(now=1.0 + EARLY_FLUSH_GRACE_S)
    s.observe(minute + 64.9, now=2.0, wall=minute + 65.0)  # `minute` is not closable yet
    assert not s.due(now=2.0, pending_rows=10)
    s.observe(minute + 65.0, now=2.0, wall=minute + 65.2)  # reaches 60 s + lateness
    assert not s.due(now=2.0 + EARLY_FLUSH_GRACE_S / 2, pending_rows=10)
    assert s.due(now=2.0 + EARLY_FLUSH_GRACE_S, pending_rows=10)
    s.flushed(now=3.0)
    # The same minute does not trigger again; the timer still does.
    s.observe(minute + 66.0, now=3.5, wall=minute + 66.1)
    assert not s.due(now=4.5, pending_rows=10)
    assert s.due(now=8.0, pending_rows=10)


def test_a_backlog_flushes_on_the_timer_and_the_row_limit_only():
    from fleetlens.pipeline.flush_schedule import FlushSchedule

    s = FlushSchedule(interval_s=5.0, lateness_s=5.0, max_pending_rows=100, last_flush=0.0)
    old = 1_800_000_000.0
    for k in range(10):  # minutes race past, but the samples are hours old
        s.observe(old + 60.0 * k, now=0.1 * k, wall=old + 7200.0)
    assert not s.due(now=1.5, pending_rows=99)
    assert s.due(now=1.5, pending_rows=100)
    assert s.due(now=5.0, pending_rows=0)
