"""End to end: samples -> Kafka (Tansu) -> `fleetlens pipeline --alerts` -> a real receiver.

Crafted stream (one sample per GPU per minute, 60 s each, node n1, tenant acme from the
sample's own `tenant` field):

  minute  0-7   GPU 0 idle with 50 GB held      GPU 1 busy, XID 79 at minute 2
  minute  8-11  GPU 0 busy                      GPU 1 busy

With gpu_idle for = 5m, the idle-held alert fires once minute 4 closes (startsAt = minute 0)
and resolves at minute 8; XID 79 fires and, with clear_after = 30m, is still firing at the
end. Each part runs a separate pipeline process: state crosses restarts.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.conftest import run_cli
from tests.test_alerts_support import T0, Recorder, receiver_toml

pytestmark = pytest.mark.broker


def sample(minute: int, gpu: int, idle: bool, xid: int | None = None) -> dict:
    s = {"v": 1, "ts": T0 + 60 * minute, "interval_s": 60.0, "node": "n1", "gpu": gpu,
         "uuid": f"GPU-e2e-{gpu}", "model": "NVIDIA H100 80GB HBM3", "cluster": "c1",
         "tenant": "acme"}
    if idle:
        s.update(gpu_util=0.0, sm_active=0.0, tensor_active=0.0, sm_clock_mhz=345,
                 fb_used_mib=50000.0, power_w=90.0)
    else:
        s.update(gpu_util=95.0, sm_active=0.8, tensor_active=0.5, sm_clock_mhz=1830,
                 fb_used_mib=60000.0, power_w=650.0)
    if xid is not None:
        s["xid"] = xid
    return s


def write_samples(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def part1(path):
    return write_samples(path, [sample(m, g, idle=(g == 0), xid=79 if (g, m) == (1, 2) else None)
                                for m in range(8) for g in (0, 1)])


def part2(path):
    return write_samples(path, [sample(m, g, idle=False) for m in range(8, 12) for g in (0, 1)])


def alerts_toml(path, url: str, **receiver) -> str:
    path.write_text("""
[alerts]
group_interval = "0s"
shutdown_drain = "15s"
[rules.gpu_idle]
for = "5m"
[rules.xid]
clear_after = "30m"
""" + receiver_toml("e2e", url, **receiver))
    return str(path)


def pipeline(broker, topic, store, group, alerts, timeout=180):
    proc = run_cli("pipeline", "--bootstrap", broker.bootstrap, "--topic", topic, "--store",
                   str(store), "--group", group, "--until-idle", "2", "--alerts", alerts,
                   timeout=timeout)
    return json.loads(proc.stderr.split("pipeline: ", 1)[1])


def _group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def test_pipeline_fires_and_resolves_once_across_restarts(broker, topic, tmp_path):
    store = tmp_path / "store"
    with Recorder() as rec:
        cfg = alerts_toml(tmp_path / "alerts.toml", rec.url)
        run_cli("replay", part1(tmp_path / "p1.ndjson"), "--bootstrap", broker.bootstrap,
                "--topic", topic)
        group = _group()
        stats = pipeline(broker, topic, store, group, cfg)
        assert stats["samples"] == 16
        # The pipeline drains the outbox on exit: both are delivered by now.
        firing = {b["alerts"][0]["alertname"]: b for b in rec.ok}
        assert set(firing) == {"GpuIdleHeldWhileAllocated", "GpuXidError"}
        idle = firing["GpuIdleHeldWhileAllocated"]["alerts"][0]
        assert idle["status"] == "firing" and idle["startsAt"] == "2026-11-16T00:00:00.000Z"
        assert idle["labels"]["tenant"] == "acme" and idle["labels"]["uuid"] == "GPU-e2e-0"
        assert "idle with memory held" in idle["annotations"]["summary"]
        xid = firing["GpuXidError"]["alerts"][0]
        assert xid["labels"]["xid"] == "79" and xid["labels"]["severity"] == "critical"
        assert xid["startsAt"] == "2026-11-16T00:02:00.000Z"
        assert (store / "alerts" / "state.json").is_file()

        run_cli("replay", part2(tmp_path / "p2.ndjson"), "--bootstrap", broker.bootstrap,
                "--topic", topic)
        pipeline(broker, topic, store, group, cfg)
        assert len(rec.ok) == 3, rec.ok  # the resolve only: XID still firing, not re-sent
        resolved = rec.ok[2]
        assert resolved["status"] == "resolved"
        [alert] = resolved["alerts"]
        assert alert["alertname"] == "GpuIdleHeldWhileAllocated"
        assert alert["endsAt"] == "2026-11-16T00:08:00.000Z"
        assert alert["fingerprint"] == idle["fingerprint"]

        # Restarts with nothing new, under the same and a new consumer group: the store's
        # checkpoints skip what was done, the alert state knows what was sent: silence.
        pipeline(broker, topic, store, group, cfg)
        stats = pipeline(broker, topic, store, _group(), cfg)
        assert stats["samples"] == 0
        assert len(rec.ok) == 3


def test_hanging_receiver_does_not_hold_up_the_pipeline(broker, topic, tmp_path):
    store = tmp_path / "store"
    run_cli("replay", part1(tmp_path / "p1.ndjson"), "--bootstrap", broker.bootstrap,
            "--topic", topic)
    with Recorder(hang=True) as rec:
        cfg = alerts_toml(tmp_path / "alerts.toml", rec.url, timeout="120s")
        p = tmp_path / "alerts.toml"
        p.write_text(p.read_text().replace('shutdown_drain = "15s"', 'shutdown_drain = "2s"'))
        t = time.monotonic()
        stats = pipeline(broker, topic, store, _group(), cfg, timeout=90)
        took = time.monotonic() - t
        # The receiver was holding a request open the whole time and never answered ...
        assert rec.started.is_set() and rec.answered == 0
        # ... yet the pipeline processed everything and exited well before the receiver's
        # 120 s timeout, leaving the notifications in the outbox for the next start.
        assert stats["samples"] == 16 and stats["files_written"] >= 1
        assert took < 90
        queued = sorted((store / "alerts" / "outbox" / "e2e").glob("*.json"))
        assert len(queued) == 2
        rec.release.set()
    with Recorder(port=rec.port) as again:
        pipeline(broker, topic, store, _group(), cfg)  # no new samples: delivers the outbox
        assert sorted(b["alerts"][0]["alertname"] for b in again.ok) == [
            "GpuIdleHeldWhileAllocated", "GpuXidError"]
        assert list((store / "alerts" / "outbox" / "e2e").glob("*.json")) == []
