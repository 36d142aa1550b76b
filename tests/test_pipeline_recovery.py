"""The pipeline survives bad input and crashes without changing a number.

* Malformed lines go to the dead-letter topic with a reason; valid lines of the same message
  are still counted.
* A pipeline killed (SIGKILL, no goodbye to the broker) mid-run and restarted ends with exactly
  the rollups of an uninterrupted run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pytest
from kafka import KafkaConsumer, KafkaProducer

from tests.conftest import cli_env, run_cli

pytestmark = pytest.mark.broker


def _line(**over) -> bytes:
    sample = {"v": 1, "ts": 1794787200.0, "interval_s": 60.0, "node": "n1", "gpu": 0,
              "uuid": "GPU-1", "model": "NVIDIA H100 80GB HBM3", "gpu_util": 50.0}
    sample.update(over)
    return json.dumps({k: v for k, v in sample.items() if v != "DROP"}).encode()


def _read_topic(bootstrap: str, topic: str, expect: int, timeout_s: float = 30) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             group_id=f"t-{uuid.uuid4().hex[:8]}", enable_auto_commit=False,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000)
    got = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expect and time.monotonic() < deadline:
        for records in consumer.poll(500).values():
            got.extend(records)
    consumer.close()
    return got


def test_malformed_lines_are_dead_lettered_and_the_rest_is_kept(broker, topic, tmp_path):
    dlq = f"dlq-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    mixed = b"\n".join([
        _line(gpu=0, uuid="GPU-1"),
        b'{"v":1,"ts":1794787200.0,"node":',  # truncated JSON
        _line(gpu=1, uuid="DROP"),  # required field missing
        _line(gpu=2, uuid="GPU-3", gpu_util="high"),  # wrong type
        _line(gpu=3, uuid="GPU-4", gpu_util=150.0),  # out of range
        _line(gpu=4, uuid="GPU-5", v=2),  # unknown schema version
        _line(gpu=5, uuid="GPU-6"),
    ])
    producer.send(topic, key=b"n1", value=mixed)
    producer.send(topic, key=b"n1", value=b"")
    producer.send(topic, key=b"n1", value=b"[1, 2]\n")
    producer.flush()
    producer.close()

    store = tmp_path / "store"
    proc = run_cli("pipeline", "--bootstrap", broker.bootstrap, "--topic", topic, "--store",
                   str(store), "--group", f"g-{uuid.uuid4().hex[:8]}", "--until-idle", "2",
                   env={"FLEETLENS_KAFKA_DEADLETTER_TOPIC": dlq})
    stats = json.loads(proc.stderr.split("pipeline: ", 1)[1])
    assert stats["samples"] == 2
    assert stats["dead_letters"] == 7

    letters = [json.loads(r.value) for r in _read_topic(broker.bootstrap, dlq, 7)]
    reasons = sorted(d["reason"] for d in letters)
    assert len(letters) == 7
    assert all(d["topic"] == topic and d["partition"] is not None for d in letters)
    expected_fragments = ["not valid JSON", "missing required field 'uuid'",
                          "field 'gpu_util' must be a number", "'gpu_util'=150.0 is above 100",
                          "unsupported schema version", "empty message", "must be a JSON object"]
    for fragment in expected_fragments:
        assert any(fragment in r for r in reasons), (fragment, reasons)
    # The dead letter keeps the original line, so it can be fixed and replayed.
    assert any(d["line"].startswith('{"v":1,"ts":1794787200.0,"node":') for d in letters)

    report = json.loads(run_cli("report", "range", "--store", str(store), "--from",
                                "2026-11-16", "--to", "2026-11-17", "--format", "json").stdout)
    assert report["fleet"]["gpu_hours_observed"] == pytest.approx(2 * 60 / 3600)


def _checkpoints(store: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (store / "checkpoints").glob("*/*.json")]


def _rollups(store: Path) -> list[tuple]:
    con = duckdb.connect()
    rows = con.execute(
        "SELECT * FROM read_parquet(?, union_by_name=true) "
        "ORDER BY minute, node, gpu, uuid, tenant",
        [str(store / "rollups" / "**" / "*.parquet")]).fetchall()
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows]


def test_killed_pipeline_restarts_to_the_same_rollups(broker, topic, tmp_path):
    span = ["--backfill-from", "2026-11-16T00:00:00Z", "--backfill-to", "2026-11-16T12:00:00Z"]
    sim = ["--nodes", "4", "--tenants", "4", "--seed", "7"]
    run_cli("agent", "--source", "sim", "--bootstrap", broker.bootstrap, "--topic", topic,
            "--interval", "60", *span, *sim)
    messages = 4 * 12 * 60  # 4 nodes, one message per node per minute
    ledger = tmp_path / "ledger.csv"
    run_cli("sim", "ledger", "--from", span[1], "--to", span[3], "--out", str(ledger), *sim)

    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    for store in (reference, crashed):
        run_cli("allocations", "load", str(ledger), "--store", str(store))
    run_cli("pipeline", "--bootstrap", broker.bootstrap, "--topic", topic, "--store",
            str(reference), "--group", f"g-{uuid.uuid4().hex[:8]}", "--until-idle", "2")

    # Small polls and a flush after each make many durable points to die between.
    slow = {"FLEETLENS_KAFKA_MAX_POLL_RECORDS": "40", "FLEETLENS_PIPELINE_FLUSH_INTERVAL_S": "0"}
    group = f"g-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "fleetlens", "pipeline", "--bootstrap", broker.bootstrap,
           "--topic", topic, "--store", str(crashed), "--group", group, "--until-idle", "2"]
    kills = 0
    for files_before_kill in (3, 12):
        proc = subprocess.Popen(cmd, env=cli_env(slow), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((crashed / "rollups").glob("**/*.parquet"))) >= files_before_kill:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "pipeline finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        consumed = sum(c["consumed_offset"] + 1 for c in _checkpoints(crashed))
        assert 0 < consumed < messages, "the kill did not land mid-run"

    run_cli("pipeline", "--bootstrap", broker.bootstrap, "--topic", topic, "--store",
            str(crashed), "--group", group, "--until-idle", "2")
    assert kills == 2
    want, got = _rollups(reference), _rollups(crashed)
    assert len(want) == 4 * 8 * 12 * 60  # one 60-s sample per GPU-minute
    assert got == want
