"""Helpers (no tests) for the agent end-to-end tests: run the real CLI, read its tick log,
scrape its metrics, read a topic completely, rebuild expected messages from the simulator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path

from fleetlens.collectors.sim import FleetSim

from fleetlens.schema import encode_message
from tests.conftest import cli_env

ROOT = Path(__file__).resolve().parents[1]


def wait_until(cond, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll cond() until it returns something truthy; fail after timeout (or if proc died)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"agent exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def start_agent(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fleetlens", "agent", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(env), cwd=ROOT)


def stop_agent(proc: subprocess.Popen, sig, timeout: float = 30) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"agent did not exit within {timeout}s of {sig}:\n{err}") from None
    return proc.returncode, err


def summary(stderr: str) -> dict[str, int]:
    """The agent's closing line: 'agent: ticks=.. samples=.. sent=.. ...'."""
    for line in stderr.splitlines():
        if line.startswith("agent: ticks="):
            return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    raise AssertionError(f"no summary line in the agent's stderr:\n{stderr}")


def tick_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def scrape(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
            if ln and not ln.startswith("#")}


def read_topic(bootstrap: str, topic: str, timeout: float = 30) -> list[tuple[int, int, str,
                                                                              bytes]]:
    """Every record of the topic as (partition, offset, key, value), read to its end offsets
    (so duplicates would show: nothing is left unread)."""
    from kafka import TopicPartition

    from fleetlens.config import KafkaConfig
    from fleetlens.kafka_client import make_consumer

    consumer = make_consumer(KafkaConfig(bootstrap=bootstrap),
                             group_id=f"agent-test-{uuid.uuid4().hex[:8]}")
    try:
        parts = wait_until(lambda: consumer.partitions_for_topic(topic), 15,
                           f"metadata of {topic}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end offsets {end}")
            for tp, recs in consumer.poll(500).items():
                out += [(tp.partition, r.offset, r.key.decode(), r.value) for r in recs]
        return out
    finally:
        consumer.close()


def check_delivery(records, expected_log: list[dict], seed: int, nodes: int,
                   interval: float) -> None:
    """Kafka holds exactly the messages of expected_log: none lost, none twice, each node's in
    the agent's order, each value byte-identical to what the simulator gives for that tick."""
    sim = FleetSim(seed=seed, nodes=nodes)
    by_name = {n.name: n for n in sim.nodes}
    got: dict[str, list[float]] = defaultdict(list)
    for _, _, key, value in sorted(records, key=lambda r: (r[0], r[1])):
        ts = json.loads(value.split(b"\n", 1)[0])["ts"]
        assert value == encode_message(sim.node_samples(by_name[key], ts, interval)), (key, ts)
        got[key].append(ts)
    want: dict[str, list[float]] = defaultdict(list)
    for entry in expected_log:
        want[entry["node"]].append(entry["ts"])
    for node in set(got) | set(want):
        g, w = got[node], want[node]
        lost = sorted(set(w) - set(g))
        dup = sorted(t for t in set(g) if g.count(t) > 1)
        assert not lost and not dup and len(g) == len(w), (
            f"{node}: {len(lost)} lost {lost[:5]}, duplicated {dup[:5]}, {len(g)} vs {len(w)}")
        assert g == w, f"{node}: out of order"
    assert len(records) == len(expected_log)
