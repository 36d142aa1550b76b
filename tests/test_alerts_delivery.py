"""Delivery to real HTTP receivers: formats, signatures, retries, outbox, grouping, restarts.

Every receiver here is a real http.server on 127.0.0.1 (tests/test_alerts_support.Recorder);
the alerting runtime is the real one (evaluator, outbox files, delivery threads).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import time

import pytest
from fleetlens.pipeline.job import PipelineJob
from fleetlens.pipeline.store import Checkpoint, Store
from fleetlens.pipeline.windows import PartitionWindows
from prometheus_client import generate_latest

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

IDLE_NOW = BASE + '[rules.gpu_idle]\nfor = "0s"\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def outbox_files(a) -> list:
    return sorted(p for p in (a.state_dir / "outbox").rglob("*.json"))


# -- formats -----------------------------------------------------------------------------------
def test_alertmanager_v4_payload(tmp_path):
    with Recorder() as rec:
        a = alerting(tmp_path, IDLE_NOW + receiver_toml("am", rec.url, "alertmanager",
                                                        max_alerts=1))
        try:
            a.evaluator.process(rollups(minutes(0, 1, gpu=0, state="idle")
                                        + minutes(0, 1, gpu=1, state="idle")))
            [body] = rec.wait_for(1)
            assert body["version"] == "4" and body["status"] == "firing"
            assert body["receiver"] == "am"
            assert body["groupKey"] == '{}:{alertname="GpuIdleWhileAllocated", tenant="acme"}'
            assert body["groupLabels"] == {"alertname": "GpuIdleWhileAllocated",
                                           "tenant": "acme"}
            assert body["commonLabels"]["node"] == "n1" and "gpu" not in body["commonLabels"]
            assert body["externalURL"] == "http://localhost/fleetlens"
            assert body["truncatedAlerts"] == 1 and len(body["alerts"]) == 1
            alert = body["alerts"][0]
            assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt",
                                  "generatorURL", "fingerprint"}
            assert alert["endsAt"] == "0001-01-01T00:00:00Z"
            assert alert["startsAt"] == "2026-11-16T00:00:00.000Z"
            a.evaluator.process(rollups([row(T0 + 60, gpu=0), row(T0 + 60, gpu=1)]))
            body = rec.wait_for(2)[1]
            assert body["status"] == "resolved"
            assert body["alerts"][0]["endsAt"] == "2026-11-16T00:01:00.000Z"
        finally:
            a.stop()


def test_slack_text(tmp_path):
    with Recorder() as rec:
        a = alerting(tmp_path, IDLE_NOW + receiver_toml("s", rec.url, "slack"))
        try:
            a.evaluator.process(rollups(minutes(0, 1, state="held")))
            a.evaluator.process(rollups([row(T0 + 60)]))
            first, second = rec.wait_for(2)
            assert set(first) == {"text"}
            lines = first["text"].splitlines()
            assert lines[0] == "[FIRING:1] alertname=GpuIdleHeldWhileAllocated tenant=acme"
            assert lines[1].startswith("• GPU 0 on n1 idle with memory held for 1m")
            assert second["text"].startswith("[RESOLVED] alertname=GpuIdleHeldWhileAllocated")
            assert "RESOLVED 2026-11-16T00:01:00.000Z: GPU 0 on n1" in second["text"]
        finally:
            a.stop()


def test_pagerduty_events_one_per_alert_trigger_then_resolve(tmp_path):
    with Recorder() as rec:
        a = alerting(tmp_path, IDLE_NOW + receiver_toml("pd", rec.url, "pagerduty",
                                                        routing_key="R" * 32))
        try:
            a.evaluator.process(rollups(minutes(0, 1, gpu=0, state="idle")
                                        + minutes(0, 1, gpu=1, state="idle")))
            triggers = rec.wait_for(2)
            assert [b["event_action"] for b in triggers] == ["trigger", "trigger"]
            t = triggers[0]
            assert t["routing_key"] == "R" * 32 and t["client"] == "fleetlens"
            assert t["dedup_key"].startswith("fleetlens/")
            p = t["payload"]
            assert p["severity"] == "warning" and p["source"] == "n1"
            assert p["class"] == "GpuIdleWhileAllocated" and p["group"] == "acme"
            assert p["timestamp"] == "2026-11-16T00:00:00.000Z"
            assert p["summary"].startswith("GPU ")
            a.evaluator.process(rollups([row(T0 + 60, gpu=0)]))
            resolve = rec.wait_for(3)[2]
            assert set(resolve) == {"routing_key", "event_action", "dedup_key"}
            assert resolve["event_action"] == "resolve"
            gpu0 = next(b for b in triggers if b["payload"]["component"] == "gpu0")
            assert resolve["dedup_key"] == gpu0["dedup_key"]
        finally:
            a.stop()


def test_json_format_signature_and_bearer_token(tmp_path, monkeypatch):
    monkeypatch.setenv("ALERTS_TEST_SECRET", "s3cret-key")
    with Recorder() as rec:
        a = alerting(tmp_path, IDLE_NOW + receiver_toml(
            "j", rec.url, "json", hmac_secret_env="ALERTS_TEST_SECRET", bearer_token="tok-1",
            headers={"X-Tenant-Scope": "ops"}))
        try:
            a.evaluator.process(rollups(minutes(0, 1, state="idle")))
            rec.wait_for(1)
            req = rec.requests[0]
            h = req["headers"]
            assert h["authorization"] == "Bearer tok-1"
            assert h["x-tenant-scope"] == "ops"
            assert h["content-type"] == "application/json"
            ts = h["x-fleetlens-timestamp"]
            assert abs(int(ts) - time.time()) < 60
            expected = hmac.new(b"s3cret-key", ts.encode() + b"." + req["raw"],
                                hashlib.sha256).hexdigest()
            assert h["x-fleetlens-signature-256"] == f"sha256={expected}"
            wrong = hmac.new(b"other", ts.encode() + b"." + req["raw"], hashlib.sha256)
            assert h["x-fleetlens-signature-256"] != f"sha256={wrong.hexdigest()}"
            body = req["body"]
            assert body["version"] == "fleetlens.alerts.v1"
            assert body["id"] == h["x-fleetlens-delivery"]
            [alert] = body["alerts"]
            assert alert["alertname"] == "GpuIdleWhileAllocated" and alert["endsAt"] is None
            assert alert["severity"] == "warning" and alert["value"] == 60.0
        finally:
            a.stop()


# -- retries -----------------------------------------------------------------------------------
def test_retries_on_5xx_with_backoff_same_delivery_id(tmp_path):
    with Recorder(statuses=[500, 503]) as rec:
        a = alerting(tmp_path, IDLE_NOW + receiver_toml("r", rec.url))
        try:
            a.evaluator.process(rollups(minutes(0, 1, state="idle")))
            rec.wait_for(1)
            assert a.deliverer.drain(5)
            assert [r["status"] for r in rec.requests] == [500, 503, 200]
            ids = {r["headers"]["x-fleetlens-delivery"] for r in rec.requests}
            assert len(ids) == 1
            times = [r["at"] for r in rec.requests]
            # retry_initial 0.1s: first delay drawn from [0.05, 0.1], second from [0.1, 0.2]
            assert times[1] - times[0] >= 0.04 and times[2] - times[1] >= 0.09
            m = a.metrics
            assert m.value("fleetlens_alerts_delivery_failures_total", receiver="r",
                           reason="http_5xx") == 2
            assert m.value("fleetlens_alerts_notifications_delivered_total", receiver="r") == 1
            assert outbox_files(a) == []
        finally:
            a.stop()


def test_receiver_down_then_up(tmp_path):
    port = free_port()
    a = alerting(tmp_path, IDLE_NOW + receiver_toml("r", f"http://127.0.0.1:{port}/hook"))
    try:
        a.evaluator.process(rollups(minutes(0, 1, state="idle")))
        deadline = time.monotonic() + 20
        while a.metrics.value("fleetlens_alerts_delivery_failures_total", receiver="r",
                              reason="network") < 2:
            assert time.monotonic() < deadline, "no failed attempt recorded"
            time.sleep(0.05)
        assert len(outbox_files(a)) == 1
        assert a.metrics.value("fleetlens_alerts_outbox_notifications", receiver="r") == 1
        with Recorder(port=port) as rec:
            [body] = rec.wait_for(1)
            assert body["alerts"][0]["alertname"] == "GpuIdleWhileAllocated"
            assert a.deliverer.drain(5)
        assert a.metrics.value("fleetlens_alerts_outbox_notifications", receiver="r") == 0
    finally:
        a.stop()


def test_rejected_4xx_is_dropped_and_later_notifications_go_on(tmp_path):
    with Recorder(statuses=[400]) as rec:
        a = alerting(tmp_path, IDLE_NOW + receiver_toml("r", rec.url))
        try:
            a.evaluator.process(rollups(minutes(0, 1, state="idle", tenant="t1")))
            a.evaluator.process(rollups(minutes(0, 1, gpu=1, state="idle", tenant="t2")))
            [body] = rec.wait_for(1)
            assert body["groupLabels"]["tenant"] == "t2"
            assert [r["status"] for r in rec.requests] == [400, 200]
            assert a.metrics.value("fleetlens_alerts_notifications_dropped_total",
                                   receiver="r", reason="rejected") == 1
        finally:
            a.stop()


def test_resolve_never_overtakes_its_firing(tmp_path):
    with Recorder(statuses=[502, 502]) as rec:
        a = alerting(tmp_path, IDLE_NOW + receiver_toml("r", rec.url))
        try:
            a.evaluator.process(rollups(minutes(0, 1, state="idle")))
            a.evaluator.process(rollups([row(T0 + 60)]))
            first, second = rec.wait_for(2)
            assert (first["status"], second["status"]) == ("firing", "resolved")
        finally:
            a.stop()


# -- outbox ------------------------------------------------------------------------------------
def test_outbox_survives_restart_and_is_delivered_once(tmp_path):
    port = free_port()
    cfg = IDLE_NOW + receiver_toml("r", f"http://127.0.0.1:{port}/hook")
    a = alerting(tmp_path, cfg)
    a.evaluator.process(rollups(minutes(0, 1, state="held")))
    a.stop()  # receiver down: the notification stays on disk
    [path] = outbox_files(a)
    assert path.parent.name == "r"
    with Recorder(port=port) as rec:
        b = alerting(tmp_path, cfg)
        try:
            b.evaluator.process(rollups(minutes(1, 2, state="held")))  # still firing: quiet
            [body] = rec.wait_for(1)
            assert body["alerts"][0]["alertname"] == "GpuIdleHeldWhileAllocated"
            assert b.deliverer.drain(5)
            assert outbox_files(b) == [] and len(rec.requests) == 1
        finally:
            b.stop()


def test_outbox_is_bounded_oldest_dropped(tmp_path):
    port = free_port()
    toml = IDLE_NOW.replace("[alerts]", "[alerts]\noutbox_max = 2")
    a = alerting(tmp_path, toml + receiver_toml("r", f"http://127.0.0.1:{port}/hook"),
                 start=False)
    try:
        for i in range(4):  # four tenants: four groups, four notifications
            a.evaluator.process(rollups(minutes(0, 1, gpu=i, state="idle", tenant=f"t{i}")))
        files = outbox_files(a)
        assert len(files) == 2
        assert a.metrics.value("fleetlens_alerts_notifications_dropped_total", receiver="r",
                               reason="outbox_full") == 2
        with Recorder(port=port) as rec:
            a.start()
            bodies = rec.wait_for(2)
            assert [b["groupLabels"]["tenant"] for b in bodies] == ["t2", "t3"]
    finally:
        a.stop()


def test_evaluation_is_not_blocked_by_a_hanging_receiver(tmp_path):
    with Recorder(hang=True) as rec:
        a = alerting(tmp_path, IDLE_NOW + receiver_toml("r", rec.url, timeout="30s"))
        try:
            a.evaluator.process(rollups(minutes(0, 1, node="n0", state="idle", tenant="t0")))
            assert rec.started.wait(10), "the delivery thread never reached the receiver"
            # The receiver now holds the first request open. Ten more flushes, each with a
            # new alert, are evaluated and queued while it hangs.
            durations = []
            for i in range(1, 11):
                t = time.monotonic()
                a.evaluator.process(rollups(minutes(i, 1, node=f"n{i}", state="idle",
                                                    tenant=f"t{i}")))
                durations.append(time.monotonic() - t)
            assert rec.answered == 0, "the receiver answered: it was not hanging"
            assert a.outbox.size("r") == 11
            assert max(durations) < 5.0  # bounded: far below the receiver's 30 s timeout
            rec.release.set()
            bodies = rec.wait_for(11)
            assert sorted(b["groupLabels"]["tenant"] for b in bodies) == sorted(
                f"t{i}" for i in range(11))
        finally:
            rec.release.set()
            a.stop()


# -- grouping, routing, repeat -------------------------------------------------------------------
def test_grouping_group_interval_and_repeat_interval(tmp_path):
    clock = Clock()
    with Recorder() as rec:
        a = alerting(tmp_path, """
[alerts]
group_by = ["alertname", "tenant"]
group_interval = "5m"
repeat_interval = "1h"
[rules.gpu_idle]
for = "0s"
[rules.stale]
enabled = false  # the clock jumps an hour without samples: NodeStale would join in
""" + receiver_toml("r", rec.url), clock=clock)
        try:
            ev = a.evaluator
            ev.process(rollups(minutes(0, 1, gpu=0, state="idle")
                               + minutes(0, 1, gpu=1, state="idle")))
            [body] = rec.wait_for(1)
            assert sorted(x["labels"]["gpu"] for x in body["alerts"]) == ["0", "1"]
            clock.advance(60)
            ev.process(rollups(minutes(1, 1, gpu=0, state="idle")
                               + minutes(1, 1, gpu=1, state="idle")
                               + minutes(1, 1, gpu=2, state="idle")))  # a change ...
            assert a.deliverer.drain(5) and len(rec.ok) == 1  # ... held by group_interval
            clock.advance(240)
            ev.process()
            body = rec.wait_for(2)[1]
            assert sorted(x["labels"]["gpu"] for x in body["alerts"]) == ["0", "1", "2"]
            clock.advance(3599)
            ev.process()
            assert a.deliverer.drain(5) and len(rec.ok) == 2
            clock.advance(1)  # an hour without change: repeated
            ev.process()
            body = rec.wait_for(3)[2]
            assert sorted(x["labels"]["gpu"] for x in body["alerts"]) == ["0", "1", "2"]
            assert body["id"] != rec.ok[1]["id"]
        finally:
            a.stop()


def test_stop_sends_what_group_interval_held_back(tmp_path):
    with Recorder() as rec:
        a = alerting(tmp_path, IDLE_NOW.replace('group_interval = "0s"',
                                                'group_interval = "1h"')
                     + receiver_toml("r", rec.url))
        a.evaluator.process(rollups(minutes(0, 1, state="idle")))
        rec.wait_for(1)
        a.evaluator.process(rollups([row(T0 + 60)]))  # resolved, held for an hour ...
        assert a.deliverer.drain(5) and len(rec.ok) == 1
        a.stop()  # ... but sent (and delivered within shutdown_drain) at stop
        assert [x["status"] for x in rec.ok[1]["alerts"]] == ["resolved"]


def test_routing_by_tenant_and_severity(tmp_path):
    with Recorder() as acme, Recorder() as critical, Recorder() as everyone:
        a = alerting(tmp_path, IDLE_NOW
                     + receiver_toml("acme", acme.url, tenants=["acme"])
                     + receiver_toml("crit", critical.url, severities=["critical"])
                     + receiver_toml("all", everyone.url))
        try:
            a.evaluator.process(rollups(
                minutes(0, 1, gpu=0, state="idle", tenant="acme")
                + minutes(0, 1, gpu=1, state="idle", tenant="beta")
                + [row(T0, gpu=2, tenant="beta", xid_count=1, xid_last=79)]))
            everyone.wait_for(3)
            assert a.deliverer.drain(5)
            assert {(x["alertname"], x["labels"]["tenant"]) for x in
                    (al for b in acme.ok for al in b["alerts"])} == {
                        ("GpuIdleWhileAllocated", "acme")}
            assert [x["alertname"] for b in critical.ok for x in b["alerts"]] == ["GpuXidError"]
        finally:
            a.stop()


# -- restarts ----------------------------------------------------------------------------------
def test_no_duplicate_firing_and_no_lost_resolve_across_restart(tmp_path):
    with Recorder() as rec:
        cfg = IDLE_NOW + receiver_toml("r", rec.url)
        a = alerting(tmp_path, cfg)
        a.evaluator.process(rollups(minutes(0, 2, state="idle")))
        rec.wait_for(1)
        a.stop()
        b = alerting(tmp_path, cfg)
        b.evaluator.process(rollups(minutes(2, 3, state="idle")))  # still idle: nothing
        assert b.deliverer.drain(5) and len(rec.ok) == 1
        b.evaluator.process(rollups([row(T0 + 300)]))
        # Stopped before the resolve could go out? It is in the outbox or sent by stop().
        b.stop()
        c = alerting(tmp_path, cfg)
        try:
            bodies = rec.wait_for(2)
            assert [x["status"] for b_ in bodies for x in b_["alerts"]] == ["firing",
                                                                           "resolved"]
            assert c.deliverer.drain(5) and len(rec.ok) == 2
        finally:
            c.stop()


def _flush(job, store: Store, topic: str, seq: int, frame, hooks: bool = True) -> None:
    """What PipelineJob.flush does for one partition, minus Kafka: file, checkpoint, then
    (unless the process 'dies' first) the observers and flush hooks."""
    store.write_rollups(topic, 0, seq, frame)
    cp = Checkpoint(seq=seq, commit_offset=seq, consumed_offset=seq)
    store.write_checkpoint(topic, 0, cp)
    job.parts[0] = PartitionWindows(0, cp)
    if hooks:
        for observe in job.observers:
            observe(frame)
        for hook in job.flush_hooks:
            hook(job)


def test_crash_between_checkpoint_and_alert_state_is_caught_up(tmp_path):
    """Rollups made durable by a flush whose alert evaluation never ran (the process died
    after the checkpoint) are read back from the store at the next start: the firing, and
    later the resolve, are not lost."""
    store_dir = tmp_path / "store"
    store = Store(store_dir)
    cfg = Config()
    topic = cfg.kafka.samples_topic
    with Recorder() as rec:
        toml = BASE + '[rules.gpu_idle]\nfor = "3m"\n' + receiver_toml("r", rec.url)
        a = alerting(tmp_path, toml, store=store_dir)
        job = PipelineJob(cfg, str(store_dir))
        a.attach(job)
        _flush(job, store, topic, 1, rollups(minutes(0, 2, state="idle")))
        _flush(job, store, topic, 2, rollups(minutes(2, 2, state="idle")), hooks=False)
        # crash: no state save, no delivery
        a.deliverer.stop()
        a.lock.release()
        assert rec.ok == []

        b = alerting(tmp_path, toml, store=store_dir)
        job = PipelineJob(cfg, str(store_dir))
        b.attach(job)  # catches up on file 2: 4 idle minutes -> firing
        [body] = rec.wait_for(1)
        assert body["alerts"][0]["startsAt"] == "2026-11-16T00:00:00.000Z"
        _flush(job, store, topic, 3, rollups([row(T0 + 240)]), hooks=False)
        b.deliverer.stop()
        b.lock.release()

        c = alerting(tmp_path, toml, store=store_dir)
        try:
            job = PipelineJob(cfg, str(store_dir))
            c.attach(job)
            bodies = rec.wait_for(2)
            assert bodies[1]["status"] == "resolved"
            assert bodies[1]["alerts"][0]["endsAt"] == "2026-11-16T00:04:00.000Z"
            c.attach(PipelineJob(cfg, str(store_dir)))  # nothing new: nothing sent
            assert c.deliverer.drain(5) and len(rec.ok) == 2
        finally:
            c.stop()


def test_one_evaluating_process_per_store(tmp_path):
    from fleetlens.config import ConfigError

    a = alerting(tmp_path, IDLE_NOW)
    try:
        with pytest.raises(ConfigError, match="in use by another process"):
            alerting(tmp_path, IDLE_NOW)
    finally:
        a.stop()
    alerting(tmp_path, IDLE_NOW).stop()  # released on stop


def test_corrupt_state_is_a_one_line_error(tmp_path):
    from fleetlens.config import ConfigError

    (tmp_path / "store" / "alerts").mkdir(parents=True)
    (tmp_path / "store" / "alerts" / "state.json").write_text('{"version": 1, "book": ')
    with pytest.raises(ConfigError, match=r"state.json is not valid JSON .*start afresh"):
        alerting(tmp_path, IDLE_NOW)
    (tmp_path / "store" / "alerts" / "state.json").unlink()
    alerting(tmp_path, IDLE_NOW).stop()  # the lock was released on the way out


# -- metrics -----------------------------------------------------------------------------------
def test_metrics_exposition(tmp_path):
    with Recorder(statuses=[500]) as rec:
        a = alerting(tmp_path, IDLE_NOW + receiver_toml("r", rec.url))
        try:
            a.evaluator.process(rollups(minutes(0, 1, state="idle")))
            rec.wait_for(1)
            assert a.deliverer.drain(5)
            text = generate_latest(a.metrics.registry).decode()
            for line in [
                'fleetlens_alerts_outbox_notifications{receiver="r"} 0.0',
                "fleetlens_alerts_outbox_capacity 10000.0",
                'fleetlens_alerts_notifications_enqueued_total{receiver="r",status="firing"} 1.0',
                'fleetlens_alerts_notifications_delivered_total{receiver="r"} 1.0',
                'fleetlens_alerts_delivery_failures_total{reason="http_5xx",receiver="r"} 1.0',
                'fleetlens_alerts_instances{alertname="GpuIdleWhileAllocated",state="firing"} 1.0',
                "fleetlens_alerts_evaluations_total 1.0",
            ]:
                assert line in text, line
            promtool = shutil.which("promtool")
            if promtool:  # lint the exposition as Prometheus would (names, units, types)
                out = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                                     capture_output=True, env={**os.environ})
                assert out.returncode == 0, out.stdout + out.stderr
        finally:
            a.stop()
