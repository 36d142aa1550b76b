"""The pipeline survives bad input and crashes without changing a number.

* Malformed lines go to the dead-letter topic with a reason; valid lines of the same message
  are still counted.
* A pipeline killed (SIGKILL, no goodbye to the broker) mid-run and restarted ends with exactly
  the rollups of an uninterrupted run.
"""

from __future__ import annotations

import json
import random
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


SPAN = ["--backfill-from", "2026-11-16T00:00:00Z", "--backfill-to", "2026-11-16T12:00:00Z"]
SIM = ["--nodes", "4", "--tenants", "4", "--seed", "7"]
MESSAGES = 4 * 12 * 60  # 4 nodes, one message per node per minute


@pytest.fixture(scope="module")
def backfilled(broker, tmp_path_factory):
    """Twelve simulated hours of 4 nodes in a 4-partition topic, plus the ledger, and the
    rollups of one uninterrupted pipeline run over them (the reference)."""
    topic = f"samples-{uuid.uuid4().hex[:10]}"
    run_cli("agent", "--source", "sim", "--bootstrap", broker.bootstrap, "--topic", topic,
            "--interval", "60", *SPAN, *SIM)
    work = tmp_path_factory.mktemp("backfilled")
    ledger = work / "ledger.csv"
    run_cli("sim", "ledger", "--from", SPAN[1], "--to", SPAN[3], "--out", str(ledger), *SIM)
    reference = work / "reference"
    run_cli("allocations", "load", str(ledger), "--store", str(reference))
    run_cli("pipeline", "--bootstrap", broker.bootstrap, "--topic", topic, "--store",
            str(reference), "--group", f"g-{uuid.uuid4().hex[:8]}", "--until-idle", "2")
    rows = _rollups(reference)
    assert len(rows) == 4 * 8 * 12 * 60  # one 60-s sample per GPU-minute
    return topic, ledger, rows


def _pipeline_cmd(broker, topic, store, group):
    return [sys.executable, "-m", "fleetlens", "pipeline", "--bootstrap", broker.bootstrap,
            "--topic", topic, "--store", str(store), "--group", group, "--until-idle", "3"]


def test_killed_pipeline_restarts_to_the_same_rollups(broker, backfilled, tmp_path):
    topic, ledger, want = backfilled
    crashed = tmp_path / "crashed"
    run_cli("allocations", "load", str(ledger), "--store", str(crashed))
    # Small polls and a flush after each give many durable points to die between.
    slow = {"FLEETLENS_KAFKA_MAX_POLL_RECORDS": "40", "FLEETLENS_PIPELINE_FLUSH_INTERVAL_S": "0"}
    group = f"g-{uuid.uuid4().hex[:8]}"
    rng = random.Random(20261128)
    kill_points = []
    while len(kill_points) < 5:
        proc = subprocess.Popen(_pipeline_cmd(broker, topic, crashed, group), env=cli_env(slow),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait until this run has made progress of its own, then die at a random moment.
        before = sum(c["consumed_offset"] + 1 for c in _checkpoints(crashed))
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if sum(c["consumed_offset"] + 1 for c in _checkpoints(crashed)) > before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.8))
        assert proc.poll() is None, "pipeline finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        consumed = sum(c["consumed_offset"] + 1 for c in _checkpoints(crashed))
        assert consumed < MESSAGES, "the kill did not land mid-run"
        kill_points.append(consumed)

    run_cli("pipeline", "--bootstrap", broker.bootstrap, "--topic", topic, "--store",
            str(crashed), "--group", group, "--until-idle", "2")
    assert kill_points == sorted(kill_points) and len(set(kill_points)) == 5, kill_points
    assert _rollups(crashed) == want


def test_two_workers_in_one_group_give_the_same_rollups_as_one(broker, backfilled, tmp_path):
    topic, ledger, want = backfilled
    store = tmp_path / "two"
    run_cli("allocations", "load", str(ledger), "--store", str(store))
    group = f"g-{uuid.uuid4().hex[:8]}"
    slow = {"FLEETLENS_KAFKA_MAX_POLL_RECORDS": "100"}
    workers = [subprocess.Popen(_pipeline_cmd(broker, topic, store, group), env=cli_env(slow),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=300)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    stats = [json.loads(o.split("pipeline: ", 1)[1]) for o in outputs]
    # Both took part: each consumed some of the samples (the partitions were shared).
    assert all(s["samples"] > 0 for s in stats), stats
    assert _rollups(store) == want
