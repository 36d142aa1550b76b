"""End to end through a real Kafka-protocol broker (Tansu): replay -> pipeline -> report.

The expected figures are worked out by hand below from tests/fixtures/e2e_samples.ndjson
(every sample stands for 30 s) and tests/fixtures/e2e_allocations.csv - not by the code under
test.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import FIXTURES, run_cli

pytestmark = pytest.mark.broker

FROM, TO = "2026-11-16T00:00:00Z", "2026-11-16T01:00:00Z"

# The fixture, minute by minute (a0/a1 = node-a GPUs 0/1, H100 SXM, spec clock 1830 MHz;
# b0 = node-b GPU 0, a model the catalog does not know):
#
#  ts   a0                                a1                                b0
#  +0   util 90, tensor .5, 1830 MHz      util .5, sm .005 -> idle          util 80 busy, delta
#  +30  util 0, fb 50000 -> idle-held     util 1, sm null, fb 2048 -> held  util 0 idle, delta
#  +60  util 95, tensor .4, 1464 MHz      util 50, tensor .2, clock null    util 0 idle, no tenant
#  +90  util 100, tensor null             util 2, tensor 1.0, 2196 MHz      util 10 busy, no tenant
#
# Ledger: alpha owns a0 for [0, 60); beta owns all of node-a for [60, 120); epsilon owns
# node-c GPU 0 for [0, 120), but node-c never reports: 120 s allocated and unavailable.
# a1 carries namespace=gamma throughout: it counts for gamma only where no ledger row covers it.
# The a0 +0 line is delivered twice (deduplicated); one line is malformed (skipped by replay).
H = 3600.0
EXPECTED = {
    "alpha": dict(
        gpu_hours_allocated=60 / H, gpu_hours_busy=30 / H, gpu_hours_idle=30 / H,
        gpu_hours_idle_held=30 / H, gpu_hours_unavailable=0.0, gpu_hours_low_efficiency=0.0,
        mfu_reported=None,
        mfu_allocated=(0.5 * 30) / 60,  # busy 0.5 for 30 s, idle counts as 0
        mfu_busy=0.5,
        energy_kwh=(600 * 30 + 100 * 30) / 3.6e6),
    "beta": dict(
        gpu_hours_allocated=120 / H, gpu_hours_busy=120 / H, gpu_hours_idle=0.0,
        gpu_hours_idle_held=0.0, gpu_hours_unavailable=0.0, mfu_reported=None,
        gpu_hours_low_efficiency=30 / H,  # a1+90 is busy (util 2) with sm_active .02 < .15
        # a0+60: .4 x 1464/1830 = .32; a0+90: tensor null -> unknown, left out of the basis;
        # a1+60: .2 x 1.0 (no clock); a1+90: 1.0 x 2196/1830 = 1.2, clamped to 1.0.
        mfu_allocated=(0.32 + 0.2 + 1.0) * 30 / 90,
        mfu_busy=(0.32 + 0.2 + 1.0) * 30 / 90,
        energy_kwh=(650 + 700 + 300 + 310) * 30 / 3.6e6),
    "delta": dict(
        gpu_hours_allocated=60 / H, gpu_hours_busy=30 / H, gpu_hours_idle=30 / H,
        gpu_hours_idle_held=0.0, gpu_hours_unavailable=0.0, gpu_hours_low_efficiency=0.0,
        mfu_reported=None,
        mfu_allocated=None, mfu_busy=None,  # unknown model: never a guessed peak
        energy_kwh=(400 + 50) * 30 / 3.6e6),
    "gamma": dict(
        gpu_hours_allocated=60 / H, gpu_hours_busy=0.0, gpu_hours_idle=60 / H,
        gpu_hours_idle_held=30 / H, gpu_hours_unavailable=0.0, gpu_hours_low_efficiency=0.0,
        mfu_reported=None,
        mfu_allocated=0.0, mfu_busy=None,  # all idle: zero, and no busy time to divide by
        energy_kwh=(80 + 90) * 30 / 3.6e6),
    "epsilon": dict(
        gpu_hours_allocated=120 / H, gpu_hours_busy=0.0, gpu_hours_idle=0.0,
        gpu_hours_idle_held=0.0, gpu_hours_unavailable=120 / H, gpu_hours_low_efficiency=0.0,
        mfu_allocated=None, mfu_busy=None, mfu_reported=None, energy_kwh=0.0),
}
EXPECTED_FLEET = {"gpu_hours_observed": 12 * 30 / H, "gpu_hours_unallocated": 60 / H,
                  "gpu_hours_unavailable": 120 / H}


def assert_report_matches(report: dict) -> None:
    assert report["from"] == FROM and report["to"] == TO
    tenants = {t["tenant"]: t for t in report["tenants"]}
    assert sorted(tenants) == sorted(EXPECTED)
    for name, expected in EXPECTED.items():
        got = tenants[name]
        assert set(got) == {"tenant", *expected}
        for key, value in expected.items():
            if value is None:
                assert got[key] is None, (name, key, got[key])
            else:
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)
    fleet = report["fleet"]
    for key, value in EXPECTED_FLEET.items():
        assert fleet[key] == pytest.approx(value, rel=1e-9), key
    assert fleet["unknown_models"] == [
        {"model": "NVIDIA Z9000 Prototype", "gpus": 1, "gpu_hours_observed": 120 / H}]


def report_json(store) -> dict:
    out = run_cli("report", "range", "--store", str(store), "--from", FROM, "--to", TO,
                  "--format", "json").stdout
    return json.loads(out)


def pipeline(broker, topic, store, group, *extra, env=None):
    return run_cli("pipeline", "--bootstrap", broker.bootstrap, "--topic", topic,
                   "--store", str(store), "--group", group, "--until-idle", "2", *extra,
                   env=env)


def test_replay_pipeline_report_matches_hand_computed_figures(broker, topic, tmp_path):
    store = tmp_path / "store"
    run_cli("allocations", "load", str(FIXTURES / "e2e_allocations.csv"), "--store", str(store))
    replayed = run_cli("replay", str(FIXTURES / "e2e_samples.ndjson"),
                       "--bootstrap", broker.bootstrap, "--topic", topic)
    assert "published 13 samples" in replayed.stderr
    assert "skipped 1 invalid lines" in replayed.stderr
    assert "e2e_samples.ndjson:6: field 'ts' must be a number" in replayed.stderr

    group = f"g-{uuid.uuid4().hex[:8]}"
    first = pipeline(broker, topic, store, group)
    stats = json.loads(first.stderr.split("pipeline: ", 1)[1])
    assert stats["samples"] == 13 and stats["dead_letters"] == 0
    assert stats["unknown_models"] == {"NVIDIA Z9000 Prototype": 2}  # rollup rows: 2 minutes
    # Going idle, the job summed its rollup files into the hourly tier, so the whole-hour
    # report below is read from there (pipeline/compact.py).
    assert list((store / "hourly").rglob("*.parquet"))
    report = report_json(store)
    assert_report_matches(report)

    # Idempotent: the same group again (nothing new), then a new consumer group. The store's
    # checkpoints, not the group's offsets, say where each partition resumes, so neither
    # run reads a sample twice, writes a file or changes a number.
    pipeline(broker, topic, store, group)
    assert report_json(store) == report
    again = pipeline(broker, topic, store, f"g-{uuid.uuid4().hex[:8]}")
    stats = json.loads(again.stderr.split("pipeline: ", 1)[1])
    assert stats["files_written"] == 0 and stats["samples"] == 0
    assert report_json(store) == report

    # The table and CSV formats carry the same rows.
    table = run_cli("report", "range", "--store", str(store), "--from", FROM, "--to", TO).stdout
    for name in EXPECTED:
        assert name in table
    assert "unknown GPU model (no MFU): 'NVIDIA Z9000 Prototype'" in table
    csv_out = run_cli("report", "range", "--store", str(store), "--from", FROM, "--to", TO,
                      "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("scope,tenant,gpu_hours_allocated")
    assert len(csv_out) == 1 + len(EXPECTED) + 1


def test_a_failed_compaction_is_counted_and_loses_nothing(broker, topic, tmp_path):
    """The hourly tier is an optimisation: when it cannot be written (here a file stands
    where its folder should be) ingestion goes on, the failure is counted, and reports read
    the minute rollups with the same numbers."""
    store = tmp_path / "store"
    run_cli("allocations", "load", str(FIXTURES / "e2e_allocations.csv"), "--store", str(store))
    (store / "hourly").write_text("not a folder")
    run_cli("replay", str(FIXTURES / "e2e_samples.ndjson"), "--bootstrap", broker.bootstrap,
            "--topic", topic)
    done = pipeline(broker, topic, store, f"g-{uuid.uuid4().hex[:8]}")
    stats = json.loads(done.stderr.split("pipeline: ", 1)[1])
    assert stats["samples"] == 13 and stats["compaction_errors"] >= 1
    assert list((store / "rollups").rglob("*.parquet"))
    assert_report_matches(report_json(store))


def test_tenant_filter(broker, topic, tmp_path):
    store = tmp_path / "store"
    run_cli("allocations", "load", str(FIXTURES / "e2e_allocations.csv"), "--store", str(store))
    run_cli("replay", str(FIXTURES / "e2e_samples.ndjson"), "--bootstrap", broker.bootstrap,
            "--topic", topic)
    pipeline(broker, topic, store, f"g-{uuid.uuid4().hex[:8]}")
    out = json.loads(run_cli("report", "range", "--store", str(store), "--from", FROM, "--to",
                             TO, "--tenant", "beta", "--format", "json").stdout)
    assert [t["tenant"] for t in out["tenants"]] == ["beta"]
    assert out["tenants"][0]["gpu_hours_busy"] == pytest.approx(EXPECTED["beta"]["gpu_hours_busy"])


def test_workload_reported_mfu_next_to_the_counter_estimate(broker, topic, tmp_path):
    """Jobs publish their achieved FLOPs; the pipeline turns them into true MFU (PaLM)
    against the catalog peak of the GPUs they ran on."""
    from kafka import KafkaProducer

    workload = f"workload-{uuid.uuid4().hex[:8]}"
    env = {"FLEETLENS_KAFKA_WORKLOAD_TOPIC": workload}
    store = tmp_path / "store"
    run_cli("allocations", "load", str(FIXTURES / "e2e_allocations.csv"), "--store", str(store))
    run_cli("replay", str(FIXTURES / "e2e_samples.ndjson"), "--bootstrap", broker.bootstrap,
            "--topic", topic)
    t1 = 1794787260.0  # +60 s, beta's minute
    reports = [
        # 989.4 TFLOPS over two H100 SXM (989.4 dense BF16 each): MFU 0.5 for 2 x 60 GPU-s.
        {"ts": t1, "interval_s": 60, "job_id": "j1", "tenant": "beta", "dtype": "bf16",
         "gpus": ["GPU-a0", "GPU-a1"], "achieved_tflops": 989.4},
        # 1000 tokens/s of a 7e9-parameter model, 32 layers x 4096 hidden x 4096 tokens:
        # (6 x 7e9 + 12 x 32 x 4096 x 4096) x 1000 FLOP/s on one GPU.
        {"ts": t1, "interval_s": 60, "job_id": "j2", "tenant": "beta", "gpus": ["GPU-a0"],
         "tokens_per_s": 1000, "model_params": 7e9, "layers": 32, "hidden": 4096,
         "seq_len": 4096},
        {"ts": t1, "job_id": "j3", "tenant": "beta", "gpus": ["GPU-a0"], "dtype": "fp7",
         "achieved_tflops": 1.0},  # unknown dtype: dead letter
        {"ts": t1, "job_id": "j4", "tenant": "delta", "gpus": ["GPU-b0"],
         "achieved_tflops": 1.0},  # GPU model not in the catalog: dead letter, no guess
    ]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for r in reports:
        producer.send(workload, json.dumps(r).encode())
    producer.flush()
    producer.close()
    out = pipeline(broker, topic, store, f"g-{uuid.uuid4().hex[:8]}", env=env)
    stats = json.loads(out.stderr.split("pipeline: ", 1)[1])
    assert stats["dead_letters"] == 2
    j2 = (6 * 7e9 + 12 * 32 * 4096 * 4096) * 1000 / 1e12 / 989.4
    report = report_json(store)
    beta = next(t for t in report["tenants"] if t["tenant"] == "beta")
    assert beta["mfu_reported"] == pytest.approx((0.5 * 120 + j2 * 60) / 180)
    assert all(t["mfu_reported"] is None for t in report["tenants"] if t["tenant"] != "beta")
    jobs = json.loads(run_cli("report", "workloads", "--store", str(store), "--from", FROM,
                              "--to", TO).stdout)["workloads"]
    j1 = next(j for j in jobs if j["job_id"] == "j1")
    # Counter estimate over j1's GPU-minutes (a0 and a1 in minute +60): (.32 x 30 + .2 x 30
    # + 1.0 x 30) / 90 known seconds (a0+90 has no tensor_active).
    assert j1["mfu_reported"] == pytest.approx(0.5)
    assert j1["mfu_estimate"] == pytest.approx((0.32 + 0.2 + 1.0) * 30 / 90)
    assert j1["mfu_gap"] == pytest.approx(0.5 - (0.32 + 0.2 + 1.0) * 30 / 90)
