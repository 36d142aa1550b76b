"""Each built-in rule fires and resolves on crafted rollup streams, delivered for real.

The evaluator is driven directly with rollup frames (what the pipeline's observers get), the
notifications go through the real outbox and delivery threads to a real HTTP receiver in the
test. Expected times are worked out by hand from the crafted rows.
"""

from __future__ import annotations

import json

import pytest
from fleetlens.pipeline.decode import Record, decode
from fleetlens.pipeline.job import PipelineJob
from fleetlens.pipeline.store import Checkpoint
from fleetlens.pipeline.windows import PartitionWindows

from fleetlens.alerts.formats import rfc3339
from fleetlens.alerts.rules import Health
from fleetlens.config import Config
from tests.test_alerts_support import (
    BASE,
    T0,
    Clock,
    Recorder,
    alerting,
    minutes,
    receiver_toml,
    rollups,
    row,
)


@pytest.fixture
def rec():
    with Recorder() as r:
        yield r


def _alerts(body: dict) -> dict[str, dict]:
    return {a["alertname"]: a for a in body["alerts"]}


def test_idle_held_and_idle_fire_after_for_and_resolve(tmp_path, rec):
    a = alerting(tmp_path, BASE + """
[rules.gpu_idle]
for = "5m"
""" + receiver_toml("r", rec.url))
    try:
        ev = a.evaluator
        # GPU 0 idle with memory held, GPU 1 idle with memory released, GPU 2 idle but not
        # allocated (no tenant): minutes 0-3 -> 4 minutes, still pending.
        ev.process(rollups(minutes(0, 4, gpu=0, state="held") + minutes(0, 4, gpu=1,
                                                                       state="idle")
                           + minutes(0, 4, gpu=2, state="idle", tenant=None)))
        assert a.deliverer.drain(5) and rec.ok == []
        assert {i.state for i in ev.book.instances.values()} == {"pending"}
        # Minute 4 closes the fifth idle minute: both fire (since T0), GPU 2 never does.
        ev.process(rollups([row(T0 + 240, gpu=0, state="held"), row(T0 + 240, gpu=1,
                                                                    state="idle"),
                            row(T0 + 240, gpu=2, state="idle", tenant=None)]))
        bodies = rec.wait_for(2)
        got = {b["alerts"][0]["alertname"]: b["alerts"][0] for b in bodies}
        assert set(got) == {"GpuIdleHeldWhileAllocated", "GpuIdleWhileAllocated"}
        held = got["GpuIdleHeldWhileAllocated"]
        assert held["status"] == "firing" and held["startsAt"] == rfc3339(T0)
        assert held["labels"] == {"alertname": "GpuIdleHeldWhileAllocated",
                                  "severity": "warning", "tenant": "acme", "node": "n1",
                                  "gpu": "0", "uuid": "GPU-n1-0", "model": "NVIDIA H100 80GB HBM3",
                                  "cluster": "c1"}
        assert "idle with memory held for 5m" in held["annotations"]["summary"]
        assert "48.8 GiB of memory held" in held["annotations"]["description"]
        assert got["GpuIdleWhileAllocated"]["labels"]["gpu"] == "1"
        # More idle minutes: nothing new (already told).
        ev.process(rollups(minutes(5, 3, gpu=0, state="held") + minutes(5, 3, gpu=1,
                                                                       state="idle")))
        assert a.deliverer.drain(5) and len(rec.ok) == 2
        # GPU 0 busy at minute 8: resolved at 8, GPU 1 stays firing.
        ev.process(rollups([row(T0 + 480, gpu=0), row(T0 + 480, gpu=1, state="idle")]))
        body = rec.wait_for(3)[2]
        assert body["status"] == "resolved"
        [resolved] = body["alerts"]
        assert resolved["alertname"] == "GpuIdleHeldWhileAllocated"
        assert resolved["endsAt"] == rfc3339(T0 + 480)
        assert resolved["fingerprint"] == held["fingerprint"]
        # GPU 1 handed to another tenant while idle: the acme alert resolves, a new one starts
        # pending for the new tenant (it is a different alert).
        ev.process(rollups([row(T0 + 540, gpu=1, state="idle", tenant="beta")]))
        body = rec.wait_for(4)[3]
        assert [(x["status"], x["labels"]["tenant"]) for x in body["alerts"]] == [
            ("resolved", "acme")]
        assert ev.book.get("GpuIdleWhileAllocated", "n1/1/GPU-n1-1/-").state == "pending"
    finally:
        a.stop()


def test_idle_per_tenant_override_and_min_idle_ratio(tmp_path, rec):
    a = alerting(tmp_path, BASE + """
[rules.gpu_idle]
for = "3m"
[rules.gpu_idle.tenants.patient]
for = "1h"
[rules.gpu_idle.tenants.quiet]
enabled = false
""" + receiver_toml("r", rec.url))
    try:
        rows = (minutes(0, 5, gpu=0, state="idle", tenant="patient")
                + minutes(0, 5, gpu=1, state="idle", tenant="quiet")
                # 50 s of 60 idle: under min_idle_ratio 0.9, so not an idle minute
                + minutes(0, 5, gpu=2, state="idle", idle_s=50.0, busy_s=10.0)
                + minutes(0, 5, gpu=3, state="idle"))
        a.evaluator.process(rollups(rows))
        [body] = rec.wait_for(1)
        assert [x["labels"]["gpu"] for x in body["alerts"]] == ["3"]
        assert a.deliverer.drain(5) and len(rec.ok) == 1
    finally:
        a.stop()


def test_low_mfu_fires_once_the_window_is_covered_and_resolves(tmp_path, rec):
    a = alerting(tmp_path, BASE + """
[rules.low_mfu]
threshold = 0.2
window = "10m"
min_basis = "10m"
""" + receiver_toml("r", rec.url))
    try:
        ev = a.evaluator
        # Two busy GPUs at MFU 0.05 (3 MFU-seconds per 60 s): low from the first minute, but
        # the window is covered only once 10 minutes of data exist.
        low = [row(T0 + 60 * m, gpu=g, mfu_s=3.0) for m in range(9) for g in (0, 1)]
        ev.process(rollups(low))
        assert a.deliverer.drain(5) and rec.ok == []
        ev.process(rollups([row(T0 + 540, gpu=g, mfu_s=3.0) for g in (0, 1)]))
        [body] = rec.wait_for(1)
        [alert] = body["alerts"]
        assert alert["alertname"] == "TenantLowMfu" and alert["labels"]["tenant"] == "acme"
        assert alert["labels"]["severity"] == "info"
        assert alert["value"] == pytest.approx(0.05)
        assert alert["startsAt"] == rfc3339(T0 + 600)
        assert "MFU 5.0% over the last 10m (threshold 20.0%)" in alert["annotations"]["summary"]
        # MFU 0.6 from minute 10: the 10-minute window average passes 0.2 when
        # (k*36 + (10-k)*3) / 600 >= 0.2, i.e. after k = 3 good minutes (minute 12 closed).
        ev.process(rollups([row(T0 + 600, gpu=g, mfu_s=36.0) for g in (0, 1)]
                           + [row(T0 + 660, gpu=g, mfu_s=36.0) for g in (0, 1)]))
        assert a.deliverer.drain(5) and len(rec.ok) == 1
        ev.process(rollups([row(T0 + 720, gpu=g, mfu_s=36.0) for g in (0, 1)]))
        body = rec.wait_for(2)[1]
        [alert] = body["alerts"]
        assert alert["status"] == "resolved" and alert["endsAt"] == rfc3339(T0 + 780)
    finally:
        a.stop()


def test_xid_fires_with_code_meaning_and_severity_and_clears(tmp_path, rec):
    a = alerting(tmp_path, BASE + """
[rules.xid]
clear_after = "5m"
ignore_codes = [43]
[rules.stale]
enabled = false  # GPU 2 stops reporting after minute 0; not what this test is about
""" + receiver_toml("r", rec.url))
    try:
        ev = a.evaluator
        ev.process(rollups([row(T0, gpu=0, xid_count=1, xid_last=79),
                            row(T0, gpu=1, xid_count=2, xid_last=13),
                            row(T0, gpu=2, xid_count=1, xid_last=43)]))
        bodies = rec.wait_for(1)
        alerts = {a_["labels"]["xid"]: a_ for a_ in bodies[0]["alerts"]}
        assert set(alerts) == {"79", "13"}  # 43 ignored
        assert alerts["79"]["labels"]["severity"] == "critical"
        assert alerts["13"]["labels"]["severity"] == "warning"
        assert "XID 79" in alerts["79"]["annotations"]["summary"]
        assert "GPU has fallen off the bus" in alerts["79"]["annotations"]["summary"]
        assert "Graphics engine exception" in alerts["13"]["annotations"]["summary"]
        # GPU 1 repeats XID 13 at minute 3: still one alert, its clock restarts.
        ev.process(rollups(minutes(1, 4, gpu=0) + minutes(1, 2, gpu=1)
                           + [row(T0 + 180, gpu=1, xid_count=1, xid_last=13)]))
        assert a.deliverer.drain(5) and len(rec.ok) == 1
        # Minute 5 closes 5 minutes without XID 79 on GPU 0: resolved at T0+60+300. The group
        # (alertname, tenant) still fires with XID 13 in it.
        ev.process(rollups([row(T0 + 300, gpu=0), row(T0 + 300, gpu=1)]))
        body = rec.wait_for(2)[1]
        assert body["status"] == "firing"
        assert [(x["status"], x["labels"]["xid"], x["endsAt"]) for x in body["alerts"]] == [
            ("firing", "13", None), ("resolved", "79", rfc3339(T0 + 360))]
        ev.process(rollups(minutes(6, 3, gpu=1)))  # minute 8 ends 5 min after minute 3
        body = rec.wait_for(3)[2]
        assert body["status"] == "resolved"
        assert [(x["status"], x["labels"]["xid"], x["endsAt"]) for x in body["alerts"]] == [
            ("resolved", "13", rfc3339(T0 + 240 + 300))]
    finally:
        a.stop()


def test_xid_that_fired_and_cleared_within_one_batch_is_still_told(tmp_path, rec):
    a = alerting(tmp_path, BASE + '[rules.xid]\nclear_after = "2m"\n'
                 + receiver_toml("r", rec.url))
    try:
        a.evaluator.process(rollups([row(T0, xid_count=1, xid_last=48)]
                                    + minutes(1, 5)))
        rec.wait_for(1)
        a.evaluator.process()  # the next flush (group_interval 0) sends the resolve
        first, second = rec.wait_for(2)
        assert [(x["status"], x["labels"]["xid"]) for x in first["alerts"]] == [
            ("firing", "48")]
        assert [(x["status"], x["endsAt"]) for x in second["alerts"]] == [
            ("resolved", rfc3339(T0 + 180))]
    finally:
        a.stop()


def test_throttle_fires_when_sustained_while_busy_and_resolves(tmp_path, rec):
    a = alerting(tmp_path, BASE + '[rules.throttle]\nfor = "3m"\n'
                 + receiver_toml("r", rec.url))
    try:
        ev = a.evaluator
        hot = dict(throttled_s=60.0, temp_max_c=88.0)
        ev.process(rollups(minutes(0, 2, gpu=0, **hot)
                           # an idle GPU "throttled" (NVML's GpuIdle reason): not an alert
                           + minutes(0, 5, gpu=1, state="idle", **hot)
                           # throttled 20 s of 60: under min_ratio
                           + minutes(0, 5, gpu=2, throttled_s=20.0)))
        assert a.deliverer.drain(5) and rec.ok == []
        ev.process(rollups([row(T0 + 120, gpu=0, **hot)]))
        [body] = rec.wait_for(1)
        [alert] = body["alerts"]
        assert alert["alertname"] == "GpuThrottled" and alert["labels"]["gpu"] == "0"
        assert alert["startsAt"] == rfc3339(T0)
        assert "max temperature 88 °C" in alert["annotations"]["description"]
        ev.process(rollups([row(T0 + 180, gpu=0)]))
        body = rec.wait_for(2)[1]
        assert [(x["status"], x["endsAt"]) for x in body["alerts"]] == [
            ("resolved", rfc3339(T0 + 180))]
    finally:
        a.stop()


def test_gpu_stale_when_a_gpu_drops_out_of_its_nodes_minutes(tmp_path, rec):
    a = alerting(tmp_path, BASE + """
[rules.stale]
intervals = 2
min_after = "3m"
""" + receiver_toml("r", rec.url))
    try:
        ev = a.evaluator
        ev.process(rollups(minutes(0, 3, gpu=0) + minutes(0, 3, gpu=1)))
        # GPU 1 has no minute after minute 2; node n1 goes on with GPU 0.
        ev.process(rollups(minutes(3, 2, gpu=0)))  # gap 2 minutes: not yet
        assert a.deliverer.drain(5) and rec.ok == []
        ev.process(rollups(minutes(5, 1, gpu=0)))  # node minute 5 - GPU minute 2 = 3m
        [body] = rec.wait_for(1)
        [alert] = body["alerts"]
        assert alert["alertname"] == "GpuStale" and alert["labels"]["gpu"] == "1"
        assert alert["startsAt"] == rfc3339(T0 + 180)
        ev.process(rollups(minutes(6, 1, gpu=0) + minutes(6, 1, gpu=1)))
        body = rec.wait_for(2)[1]
        assert [(x["status"], x["endsAt"]) for x in body["alerts"]] == [
            ("resolved", rfc3339(T0 + 360))]
    finally:
        a.stop()


def test_node_stale_on_processing_time_and_back(tmp_path, rec):
    clock = Clock()
    start = clock.t
    a = alerting(tmp_path, BASE + """
[rules.stale]
intervals = 5
min_after = "1m"
""" + receiver_toml("r", rec.url), clock=clock)
    try:
        ev = a.evaluator
        # Node n1 samples every 30 s (from the rollups: observed_s / samples).
        ev.process(rollups([row(T0, samples=2)]), arrivals={"n1": start})
        clock.advance(149)
        ev.process(arrivals={})
        assert a.deliverer.drain(5) and rec.ok == []
        clock.advance(1)  # 150 s = 5 x 30 s without a sample
        ev.process(arrivals={})
        [body] = rec.wait_for(1)
        [alert] = body["alerts"]
        assert alert["alertname"] == "NodeStale" and alert["labels"]["node"] == "n1"
        assert alert["startsAt"] == rfc3339(start)
        assert "sends no samples (2m30s)" in alert["annotations"]["summary"]
        clock.advance(60)
        ev.process(arrivals={"n1": clock.t - 5})
        body = rec.wait_for(2)[1]
        assert [(x["status"], x["endsAt"]) for x in body["alerts"]] == [
            ("resolved", rfc3339(clock.t - 5))]
    finally:
        a.stop()


def test_node_stale_through_the_jobs_flush_hook(tmp_path, rec):
    """The flush hook reads sample arrivals from a real PipelineJob's partition windows."""
    clock = Clock()
    a = alerting(tmp_path, BASE + '[rules.stale]\nintervals = 1\nmin_after = "1m"\n'
                 + receiver_toml("r", rec.url), clock=clock)
    try:
        job = PipelineJob(Config(), str(tmp_path / "store"), group_id="g")
        a.attach(job)
        part = job.parts[0] = PartitionWindows(0, Checkpoint())
        line = json.dumps({"v": 1, "ts": T0, "interval_s": 60.0, "node": "n7", "gpu": 0,
                           "uuid": "GPU-7", "model": "NVIDIA H100 80GB HBM3",
                           "gpu_util": 50.0}).encode()
        frame, dead = decode([Record(0, 0, "n7", line)])
        assert not dead
        part.accept(frame)
        for hook in job.flush_hooks:
            hook(job)
        assert a.evaluator.stale.nodes["n7"]["arrival"] == pytest.approx(clock.t, abs=5)
        clock.advance(61)
        for hook in job.flush_hooks:
            hook(job)
        [body] = rec.wait_for(1)
        assert [x["labels"]["node"] for x in body["alerts"]] == ["n7"]
    finally:
        a.stop()


def test_pipeline_dead_letter_rate_and_consumer_lag(tmp_path, rec):
    clock = Clock()
    a = alerting(tmp_path, BASE + """
[rules.pipeline]
max_lag = 1000
lag_for = "2m"
max_dead_letter_ratio = 0.05
min_dead_letters = 10
dead_letter_window = "5m"
""" + receiver_toml("r", rec.url), clock=clock)
    try:
        ev = a.evaluator

        def tick(samples, dead, lag):
            ev.process(health=Health(now=clock.t, samples_total=samples,
                                     dead_letters_total=dead, lag=lag, topic="t", group="g"))
            clock.advance(60)

        tick(0, 0, 5000)
        tick(1000, 20, 5000)  # 20 of 1020 = 2%: under 5%
        tick(1100, 100, 5000)  # 100 of 1200 over 2 minutes = 8.3%: fires; lag 2m -> fires
        bodies = rec.wait_for(2)
        alerts = {b["alerts"][0]["alertname"]: b["alerts"][0] for b in bodies}
        dead = alerts["PipelineDeadLetterRate"]
        assert dead["labels"] == {"alertname": "PipelineDeadLetterRate", "severity": "critical",
                                  "topic": "t", "group": "g"}
        assert dead["value"] == pytest.approx(100 / 1200)
        assert "8.3%" in dead["annotations"]["summary"]
        assert alerts["PipelineConsumerLag"]["value"] == 5000
        for i in range(6):  # clean input for 6 minutes: the 5-minute window forgets the bad
            tick(2000 + 1000 * i, 100, 10)
        bodies = rec.wait_for(4)
        resolved = sorted(x["alertname"] for b in bodies[2:] for x in b["alerts"]
                          if x["status"] == "resolved")
        assert resolved == ["PipelineConsumerLag", "PipelineDeadLetterRate"]
    finally:
        a.stop()


def test_rule_disabled_after_restart_resolves_its_firing_alerts(tmp_path, rec):
    cfg = BASE + '[rules.gpu_idle]\nfor = "0s"\n' + receiver_toml("r", rec.url)
    a = alerting(tmp_path, cfg)
    a.evaluator.process(rollups(minutes(0, 2, state="idle")))
    rec.wait_for(1)
    a.stop()
    b = alerting(tmp_path, cfg.replace('for = "0s"', 'for = "0s"\nenabled = false'))
    try:
        b.evaluator.process()
        body = rec.wait_for(2)[1]
        assert [x["status"] for x in body["alerts"]] == ["resolved"]
    finally:
        b.stop()
