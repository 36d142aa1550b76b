"""The agent through a broker outage, end to end: the real `fleetlens agent` process, the sim
source, and a real Kafka-protocol broker (Tansu) started only after the agent.

What the agent produced is known from its tick log (--tick-log: one line per message, written
after the message was handed to the publisher); each message's content is rebuilt from the
deterministic simulator and compared byte for byte with what Kafka holds.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from fleetlens.broker import EmbeddedBroker, free_port
from tests.test_agent_support import (
    check_delivery,
    read_topic,
    scrape,
    start_agent,
    stop_agent,
    summary,
    tick_log,
    wait_until,
)

pytestmark = pytest.mark.broker

# The simulator's sample times are whole seconds (it is meant for intervals >= 1 s): with a
# shorter interval two ticks would give identical messages and order could not be checked.
SEED, NODES, INTERVAL = 7, 4, 1.0


def agent_args(port: int, topic: str, tmp_path, metrics_port: int, *extra: str) -> list[str]:
    return ["--source", "sim", "--nodes", str(NODES), "--seed", str(SEED),
            "--interval", str(INTERVAL), "--bootstrap", f"127.0.0.1:{port}", "--topic", topic,
            "--spool-dir", str(tmp_path / "spool"), "--tick-log", str(tmp_path / "ticks.ndjson"),
            "--metrics-port", str(metrics_port), *extra]


def test_broker_down_at_start_then_up_every_sample_arrives_once_in_order(tmp_path, topic):
    port, mport = free_port(), free_port()
    log = tmp_path / "ticks.ndjson"
    agent = start_agent(*agent_args(port, topic, tmp_path, mport))
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
    try:
        # No broker: the agent runs, takes samples and spools them.
        wait_until(lambda: len(tick_log(log)) >= 4 * NODES, 30, "4 ticks spooled", agent)
        # It tried to connect and failed (a connect attempt gives up after 3 s).
        m = wait_until(lambda: (m := scrape(mport)).get("fleetlens_agent_send_errors_total")
                       and m, 20, "a failed connect in the metrics", agent)
        assert m["fleetlens_agent_messages_sent_total"] == 0
        assert m["fleetlens_agent_spool_messages"] >= 4 * NODES
        assert m["fleetlens_agent_last_send_timestamp_seconds"] == 0
        outage_messages = len(tick_log(log))

        broker.start()
        # The backlog drains, then live messages keep flowing.
        wait_until(lambda: scrape(mport).get("fleetlens_agent_messages_sent_total", 0)
                   >= outage_messages + 2 * NODES, 60, "the spool to drain", agent)
        code, err = stop_agent(agent, signal.SIGTERM)
        assert code == 0, err
        produced = tick_log(log)
        s = summary(err)
        assert s["sent"] == s["spooled"] == len(produced)
        assert s["dropped_spool_full"] == 0 and s["spool_messages"] == 0
        assert s["samples"] == 8 * len(produced)
        records = read_topic(broker.bootstrap, topic)
        check_delivery(records, produced, SEED, NODES, INTERVAL)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
        broker.stop()


def test_beyond_the_spool_cap_the_oldest_are_dropped_and_counted_exactly(tmp_path, topic):
    port, mport = free_port(), free_port()
    log = tmp_path / "ticks.ndjson"
    # A node's message is ~4.7 kB: a 0.025 MB cap holds 5 of them.
    agent = start_agent(*agent_args(port, topic, tmp_path, mport, "--spool-max-mb", "0.025"))
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
    try:
        wait_until(lambda: len(tick_log(log)) >= 4 * NODES, 30, "4 ticks", agent)
        m = wait_until(lambda: scrape(mport), 10, "the metrics endpoint", agent)
        assert m['fleetlens_agent_messages_dropped_total{reason="spool_full"}'] >= 10
        assert m["fleetlens_agent_spool_bytes"] <= 0.025 * 1024 * 1024
        broker.start()
        wait_until(lambda: scrape(mport).get("fleetlens_agent_messages_sent_total", 0)
                   >= 5 + 2 * NODES, 60, "the spool to drain", agent)
        code, err = stop_agent(agent, signal.SIGTERM)
        assert code == 0, err
        produced = tick_log(log)
        s = summary(err)
        dropped = s["dropped_spool_full"]
        assert dropped >= 10
        records = read_topic(broker.bootstrap, topic)
        # Exactly the oldest `dropped` messages are missing; everything after them arrived
        # once and in order; the counter matches what is missing to the message.
        assert len(produced) - len(records) == dropped
        assert s["sent"] == len(records) and s["spooled"] == len(produced)
        check_delivery(records, produced[dropped:], SEED, NODES, INTERVAL)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
        broker.stop()


def test_broker_lost_mid_run_comes_back_empty_gets_every_unacknowledged_message_once(
        tmp_path, topic):
    """Broker A acknowledges for a while, then dies with messages in flight; broker B on the
    same address starts empty (memory storage: like a broker that lost its disk). The Kafka
    client's retries fail on B (it never saw that producer id), so the agent replaces its
    producer and re-sends. B must hold exactly the messages A had not acknowledged: each node's
    newest ones, none twice, in order."""
    port, mport = free_port(), free_port()
    log = tmp_path / "ticks.ndjson"
    a = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-a.log").start()
    b = EmbeddedBroker(port=port, log_path=tmp_path / "tansu-b.log")
    agent = start_agent(*agent_args(port, topic, tmp_path, mport))
    try:
        wait_until(lambda: scrape(mport).get("fleetlens_agent_messages_sent_total", 0)
                   >= 2 * NODES, 30, "sends to broker A", agent)
        a.stop()
        at_stop = len(tick_log(log))
        wait_until(lambda: len(tick_log(log)) >= at_stop + 3 * NODES, 30, "3 ticks", agent)
        acked_by_a = scrape(mport)["fleetlens_agent_messages_sent_total"]
        b.start()
        wait_until(lambda: (m := scrape(mport)).get("fleetlens_agent_spool_messages") == 0
                   and m["fleetlens_agent_messages_sent_total"] >= acked_by_a + 4 * NODES,
                   60, "the spool to drain to broker B", agent)
        code, err = stop_agent(agent, signal.SIGTERM)
        assert code == 0, err
        produced = tick_log(log)
        s = summary(err)
        assert s["sent"] == s["spooled"] == len(produced)
        records = read_topic(b.bootstrap, topic)
        assert len(records) == len(produced) - acked_by_a
        # A acknowledged each node's oldest messages (a partition acknowledges in order);
        # B holds the rest of each node's: a suffix of what the node produced, and with the
        # count above, exactly the messages A had not acknowledged.
        on_b = Counter(r[2] for r in records)
        seen: Counter[str] = Counter()
        per_node = Counter(e["node"] for e in produced)
        expected = []
        for e in produced:
            seen[e["node"]] += 1
            if seen[e["node"]] > per_node[e["node"]] - on_b[e["node"]]:
                expected.append(e)
        check_delivery(records, expected, SEED, NODES, INTERVAL)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
        a.stop()
        b.stop()
