"""Live pipeline metrics: the real `fleetlens pipeline --metrics-port` against the embedded
broker, scraped over HTTP.

The samples are written below, and every expected value is worked out by hand from them:

    T0 = 2026-11-16T00:00Z; every sample stands for 30 s; two samples per minute.
    a0  node-a GPU 0, H100 SXM   minute 0: tenant gamma, util 10            (superseded)
                                 minute 3: tenant alpha, util 90, sm .8, tensor .5 at the
                                           spec clock 1830 MHz, 600 W, fb 60000 MiB -> busy
    a1  node-a GPU 1, H100 SXM   minute 3: tenant alpha, util .5, sm .005, fb 2048 MiB
                                           -> idle with memory held, MFU 0
    b0  node-b GPU 0, unknown    minute 3: tenant beta, util 0, sm 0, fb 0 -> idle, no MFU
    c0  node-c GPU 0, H100 SXM   minute 0 only: tenant beta, busy; its newest minute is
                                 180 s behind the fleet's (stale after 100 s) -> unavailable
    + one message that is not JSON, one line without `uuid`, and later one late sample.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from types import SimpleNamespace

import pytest
from fleetlens.pipeline.job import JobStats
from fleetlens.pipeline.metrics import PipelineMetrics, exported_names, window_state
from kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from fleetlens.config import KafkaConfig
from fleetlens.kafka_client import ensure_topics, make_producer
from tests.conftest import cli_env, run_cli

T0 = 1794787200.0
H100 = "NVIDIA H100 80GB HBM3"
UNKNOWN = "NVIDIA Z9000 Prototype"


def sample(node, gpu, ts, model=H100, **fields):
    return {"v": 1, "ts": T0 + ts, "interval_s": 30.0, "node": node, "gpu": gpu,
            "uuid": f"GPU-{node}-{gpu}", "model": model, **fields}


A0_BUSY = dict(tenant="alpha", gpu_util=90, sm_active=0.8, tensor_active=0.5,
               sm_clock_mhz=1830, power_w=600, fb_used_mib=60000)
A1_HELD = dict(tenant="alpha", gpu_util=0.5, sm_active=0.005, tensor_active=0.0,
               sm_clock_mhz=345, power_w=80, fb_used_mib=2048)
B0_IDLE = dict(tenant="beta", gpu_util=0, sm_active=0.0, power_w=50, fb_used_mib=0)
C0_BUSY = dict(tenant="beta", gpu_util=50, sm_active=0.4, tensor_active=0.2, power_w=400)

# One Kafka message per (node, tick), as the agent sends them.
MESSAGES = [
    ("node-a", [sample("node-a", 0, 0, tenant="gamma", gpu_util=10, sm_active=0.1)]),
    ("node-a", [sample("node-a", 0, 30, tenant="gamma", gpu_util=10, sm_active=0.1)]),
    ("node-c", [sample("node-c", 0, 0, **C0_BUSY)]),
    ("node-c", [sample("node-c", 0, 30, **C0_BUSY)]),
    ("node-a", [sample("node-a", 0, 180, **A0_BUSY), sample("node-a", 1, 180, **A1_HELD)]),
    ("node-a", [sample("node-a", 0, 210, **A0_BUSY), sample("node-a", 1, 210, **A1_HELD)]),
    ("node-b", [sample("node-b", 0, 180, UNKNOWN, **B0_IDLE)]),
    ("node-b", [sample("node-b", 0, 210, UNKNOWN, **B0_IDLE)]),
]
BAD_MESSAGES = [
    ("node-b", b"{not json"),
    ("node-b", json.dumps({k: v for k, v in sample("node-b", 0, 200, UNKNOWN).items()
                           if k != "uuid"}).encode()),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, list]:
    """name -> [(labels, value)] of every sample on /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(m: dict, name: str, **labels) -> float | None:
    hits = [v for lab, v in m.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(hits) <= 1, (name, labels, hits)
    return hits[0] if hits else None


def gpu(node: str, idx: int) -> dict:
    return {"node": node, "gpu": str(idx), "uuid": f"GPU-{node}-{idx}"}


def wait_for(port: int, proc, cond, what: str, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"pipeline exited {proc.returncode}: {proc.stderr.read()}"
        try:
            last = scrape(port)
            if cond(last):
                return last
        except OSError:
            pass  # server not up yet
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last scrape: "
                         f"{ {k: v for k, v in last.items() if 'fleetlens' in k} }")


@pytest.mark.broker
def test_pipeline_exports_gpu_state_and_health_over_http(broker, topic, tmp_path):
    kcfg = KafkaConfig(bootstrap=broker.bootstrap, samples_topic=topic)
    ensure_topics(kcfg, [topic])
    producer = make_producer(kcfg)
    for node, rows in MESSAGES:
        producer.send(topic, key=node.encode(),
                      value="\n".join(json.dumps(r) for r in rows).encode())
    for node, raw in BAD_MESSAGES:
        producer.send(topic, key=node.encode(), value=raw)
    producer.flush()

    port = free_port()
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetlens", "pipeline", "--bootstrap", broker.bootstrap,
         "--topic", topic, "--store", str(tmp_path / "store"),
         "--group", f"g-{uuid.uuid4().hex[:8]}", "--metrics-port", str(port)],
        env=cli_env({"FLEETLENS_PIPELINE_IDLE_CLOSE_S": "1",
                     "FLEETLENS_PIPELINE_FLUSH_INTERVAL_S": "0.5",
                     "FLEETLENS_METRICS_GPU_STALE_S": "100"}),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        m = wait_for(port, proc, lambda m: value(m, "fleetlens_pipeline_rollup_rows_total") == 5
                     and value(m, "fleetlens_gpu_state", **gpu("node-c", 0),
                               state="unavailable") == 1, "all five rollup rows")

        # Per GPU: the newest minute only (a0's minute-0 tenant 'gamma' left no series).
        a0 = dict(gpu("node-a", 0), tenant="alpha", model=H100, mig_instance="")
        assert value(m, "fleetlens_gpu_utilization_ratio", **a0) == pytest.approx(0.9)
        assert value(m, "fleetlens_gpu_sm_active_ratio", **a0) == pytest.approx(0.8)
        assert value(m, "fleetlens_gpu_tensor_active_ratio", **a0) == pytest.approx(0.5)
        assert value(m, "fleetlens_gpu_mfu_ratio", **a0) == pytest.approx(0.5)
        assert value(m, "fleetlens_gpu_power_watts", **a0) == pytest.approx(600)
        assert value(m, "fleetlens_gpu_memory_used_bytes", **a0) == 60000 * 1024 * 1024
        assert value(m, "fleetlens_gpu_window_timestamp_seconds", **a0) == T0 + 180
        assert not [lab for lab, _ in m["fleetlens_gpu_utilization_ratio"]
                    if lab["tenant"] == "gamma"]

        a1 = dict(gpu("node-a", 1), tenant="alpha")
        assert value(m, "fleetlens_gpu_utilization_ratio", **a1) == pytest.approx(0.005)
        assert value(m, "fleetlens_gpu_mfu_ratio", **a1) == 0.0  # idle counts as zero
        b0 = dict(gpu("node-b", 0), tenant="beta", model=UNKNOWN)
        assert value(m, "fleetlens_gpu_utilization_ratio", **b0) == 0.0
        assert value(m, "fleetlens_gpu_mfu_ratio", **b0) is None  # unknown model: no guess
        assert value(m, "fleetlens_gpu_tensor_active_ratio", **b0) is None  # not measured

        expected_state = {("node-a", 0): "busy", ("node-a", 1): "idle_held",
                          ("node-b", 0): "idle", ("node-c", 0): "unavailable"}
        for (node, idx), state in expected_state.items():
            for s in ("busy", "idle", "idle_held", "unavailable"):
                assert value(m, "fleetlens_gpu_state", **gpu(node, idx), state=s) == \
                    (1.0 if s == state else 0.0), (node, idx, s)
        tenants = {(lab["tenant"], lab["state"]): v for lab, v in m["fleetlens_tenant_gpus"]}
        assert tenants == {
            ("alpha", "busy"): 1, ("alpha", "idle"): 0, ("alpha", "idle_held"): 1,
            ("alpha", "unavailable"): 0, ("beta", "busy"): 0, ("beta", "idle"): 1,
            ("beta", "idle_held"): 0, ("beta", "unavailable"): 1}

        # Health: counters from the job, lag per partition, the flush clock.
        assert value(m, "fleetlens_pipeline_messages_total") == 10
        assert value(m, "fleetlens_pipeline_samples_total") == 10
        assert value(m, "fleetlens_pipeline_dead_letters_total", reason="not valid JSON") == 1
        assert value(m, "fleetlens_pipeline_dead_letters_total",
                     reason="missing required field") == 1
        assert value(m, "fleetlens_pipeline_late_samples_total") == 0
        assert value(m, "fleetlens_pipeline_unknown_model_rollup_rows_total",
                     model=UNKNOWN) == 1
        assert value(m, "fleetlens_pipeline_assigned_partitions") == 4
        lag = {lab["partition"]: v for lab, v in m["fleetlens_pipeline_consumer_lag_records"]
               if lab["topic"] == topic}
        assert lag == {"0": 0, "1": 0, "2": 0, "3": 0}
        assert value(m, "fleetlens_pipeline_open_window_rows") == 0
        assert started <= value(m, "fleetlens_pipeline_last_flush_timestamp_seconds") \
            <= time.time()
        assert value(m, "fleetlens_pipeline_flushes_total") >= 1
        assert value(m, "fleetlens_pipeline_flush_duration_seconds_count") == \
            value(m, "fleetlens_pipeline_flushes_total")
        for stage in ("fetch", "decode", "window", "rollup", "write"):
            assert value(m, "fleetlens_pipeline_stage_seconds_total", stage=stage) > 0, stage
            assert value(m, "fleetlens_pipeline_stage_cpu_seconds_total", stage=stage) > 0, stage

        # A sample for node-a's minute 3, which has closed: late, counted, merged at the next
        # flush as a row of its own (not dead-lettered).
        producer.send(topic, key=b"node-a",
                      value=json.dumps(sample("node-a", 0, 200, **A0_BUSY)).encode())
        producer.flush()
        m = wait_for(port, proc, lambda m: value(m, "fleetlens_pipeline_late_samples_total")
                     == 1, "the late sample")
        assert value(m, "fleetlens_pipeline_samples_total") == 11
        m = wait_for(port, proc, lambda m: value(m, "fleetlens_pipeline_rollup_rows_total")
                     == 6, "the late sample's merge")
        assert value(m, "fleetlens_pipeline_dead_letters_total", reason="late") is None
    finally:
        producer.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, proc.stderr.read()


def test_bad_metrics_port_is_refused_before_anything_starts():
    proc = run_cli("pipeline", "--bootstrap", "127.0.0.1:1", "--store", "unused",
                   "--metrics-port", "70000", check=False)
    assert proc.returncode == 2
    assert "--metrics-port must be within 0..65535" in proc.stderr


# -- units: the parts whose inputs the end-to-end test cannot steer -----------------------------
class FakeConsumer:
    def __init__(self, highwater, ends, positions):
        self._hw, self._ends, self._pos = highwater, ends, positions

    def assignment(self):
        return set(self._pos)

    def highwater(self, tp):
        return self._hw.get(tp)

    def end_offsets(self, tps, timeout_ms=None):
        return {tp: self._ends[tp] for tp in tps}

    def position(self, tp, timeout_ms=None):
        return self._pos[tp]


def test_lag_uses_highwater_and_falls_back_to_end_offsets():
    t0, t1 = TopicPartition("s", 0), TopicPartition("s", 1)
    part = SimpleNamespace(pending_rows=7, checkpoint=SimpleNamespace(commit_offset=3))
    job = SimpleNamespace(stats=JobStats(), parts={0: part}, topic="s",
                          consumer=FakeConsumer({t0: 10}, {t1: 25}, {t0: 4, t1: 20}))
    metrics = PipelineMetrics()
    metrics.update_health(job)
    r = metrics.registry
    assert r.get_sample_value("fleetlens_pipeline_consumer_lag_records",
                              {"topic": "s", "partition": "0"}) == 6
    assert r.get_sample_value("fleetlens_pipeline_consumer_lag_records",
                              {"topic": "s", "partition": "1"}) == 5
    assert r.get_sample_value("fleetlens_pipeline_uncommitted_records",
                              {"topic": "s", "partition": "0"}) == 7
    assert r.get_sample_value("fleetlens_pipeline_open_window_rows") == 7
    # Counters follow the job's cumulative stats by deltas, never twice.
    job.stats.samples = 40
    job.stats.dead_letters["late"] = 2
    metrics.update_health(job)
    metrics.update_health(job)
    assert r.get_sample_value("fleetlens_pipeline_samples_total") == 40
    assert r.get_sample_value("fleetlens_pipeline_dead_letters_total", {"reason": "late"}) == 2


def test_window_state_takes_the_largest_share_with_fixed_ties():
    assert window_state(30, 30, 0) == "busy"
    assert window_state(20, 40, 30) == "idle_held"
    assert window_state(20, 40, 10) == "idle"
    assert window_state(0, 60, 30) == "idle_held"  # tie between held and free idle


def test_exported_names_cover_series_before_any_data():
    names = exported_names(PipelineMetrics().registry)
    assert {"fleetlens_gpu_state", "fleetlens_tenant_gpus", "fleetlens_gpu_mfu_ratio",
            "fleetlens_pipeline_samples_total", "fleetlens_pipeline_flush_duration_seconds_bucket",
            "fleetlens_pipeline_consumer_lag_records"} <= names
    assert "fleetlens_pipeline_samples" not in names

