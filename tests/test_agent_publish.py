"""The spooling publisher against a fake Kafka client: never blocks the caller, sends in
order after an outage, re-sends after a failed send, flushes on close, and its metrics."""

from __future__ import annotations

import threading
import time

from fleetlens.collectors.agent_metrics import AgentMetrics, make_registry
from fleetlens.collectors.publish import SpoolingKafkaPublisher
from fleetlens.collectors.spool import Spool
from kafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from kafka.future import Future

from fleetlens.config import KafkaConfig


def wait_until(cond, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class FakeBroker:
    """What the fake producers deliver to. `up` False: connecting fails after a delay (as
    KafkaProducer's constructor does without a broker); `stalled`: sends never complete."""

    def __init__(self, up: bool = True, connect_delay: float = 0.2):
        self.up = up
        self.stalled = False
        self.connect_delay = connect_delay
        self.log: list[tuple[bytes, bytes]] = []
        self.fail_next: list[Exception] = []
        self.producers: list[FakeProducer] = []
        self.lock = threading.Lock()

    def connect(self):
        if not self.up:
            time.sleep(self.connect_delay)
            raise KafkaTimeoutError("Unable to bootstrap")
        p = FakeProducer(self)
        self.producers.append(p)
        return p


class FakeProducer:
    def __init__(self, broker: FakeBroker):
        self.broker = broker
        self.closed_with: float | None = None
        self.pending: list[Future] = []

    def send(self, topic, key=None, value=None):
        assert self.closed_with is None, "send on a closed producer"
        fut = Future()
        b = self.broker
        if b.stalled:
            self.pending.append(fut)
        elif b.fail_next:
            fut.failure(b.fail_next.pop(0))
        else:
            with b.lock:
                b.log.append((key, value))
            fut.success(None)
        return fut

    def close(self, timeout=None):
        self.closed_with = timeout
        for fut in self.pending:
            fut.failure(KafkaTimeoutError("producer closed"))


def make(tmp_path, broker: FakeBroker, **kw):
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    metrics = AgentMetrics()
    pub = SpoolingKafkaPublisher(KafkaConfig(), spool, metrics, connect=broker.connect,
                                 retry_max_s=0.2, **kw)
    return pub, spool, metrics


def messages(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [(f"node-{i % 2}".encode(), f'{{"i":{i}}}\n'.encode()) for i in range(start, n)]


def test_broker_down_publish_never_blocks_and_everything_goes_out_in_order(tmp_path):
    broker = FakeBroker(up=False, connect_delay=0.5)
    pub, spool, metrics = make(tmp_path, broker)
    slowest = 0.0
    for key, value in messages(30):
        t0 = time.monotonic()
        pub.publish(key.decode(), value)
        slowest = max(slowest, time.monotonic() - t0)
    assert slowest < 0.1  # a connect attempt takes 0.5 s; publish never waits for it
    wait_until(lambda: metrics.send_errors >= 2, what="failed connect attempts")
    assert broker.log == [] and spool.backlog[0] == 30 and metrics.sent == 0
    broker.up = True
    wait_until(lambda: metrics.sent == 30, what="the spool to drain")
    assert broker.log == messages(30)
    assert spool.backlog == (0, 0)
    assert metrics.last_send_timestamp > 0
    pub.close(1.0)


def test_a_failed_send_replaces_the_producer_and_nothing_is_lost(tmp_path):
    broker = FakeBroker(up=True)
    pub, spool, metrics = make(tmp_path, broker)
    for key, value in messages(5):
        pub.publish(key.decode(), value)
    wait_until(lambda: metrics.sent == 5)
    broker.fail_next = [NotLeaderForPartitionError("broker lost its state")]
    for key, value in messages(10, 5):
        pub.publish(key.decode(), value)
    wait_until(lambda: metrics.sent == 10, what="the failed message to be re-sent")
    assert len(broker.producers) == 2 and broker.producers[0].closed_with == 0
    assert sorted(broker.log) == sorted(messages(10))  # each exactly once here
    assert metrics.send_errors == 1
    pub.close(1.0)


def test_close_sends_what_is_spooled_before_returning(tmp_path):
    broker = FakeBroker(up=False, connect_delay=0.05)
    pub, spool, metrics = make(tmp_path, broker)
    for key, value in messages(20):
        pub.publish(key.decode(), value)
    broker.up = True  # the broker comes back just as the agent is asked to stop
    pub.close(5.0)
    assert broker.log == messages(20)
    assert Spool(tmp_path / "spool", max_bytes=1 << 20).backlog == (0, 0)


def test_close_with_the_broker_unreachable_keeps_everything_spooled(tmp_path):
    broker = FakeBroker(up=False, connect_delay=0.1)
    pub, spool, metrics = make(tmp_path, broker)
    for key, value in messages(12):
        pub.publish(key.decode(), value)
    t0 = time.monotonic()
    pub.close(0.5)
    assert time.monotonic() - t0 < 5  # the deadline holds (generous bound: loaded CI)
    again = Spool(tmp_path / "spool", max_bytes=1 << 20)
    assert [(r.key, r.value) for r in again.take(100)] == messages(12)
    again.close()


def test_close_with_a_stalled_broker_gives_up_at_the_deadline_and_loses_nothing(tmp_path):
    broker = FakeBroker(up=True)
    broker.stalled = True  # accepts the connection, never acknowledges
    pub, spool, metrics = make(tmp_path, broker)
    for key, value in messages(8):
        pub.publish(key.decode(), value)
    wait_until(lambda: len(broker.producers) == 1 and len(broker.producers[0].pending) == 8)
    t0 = time.monotonic()
    pub.close(0.3)
    assert time.monotonic() - t0 < 5  # the deadline holds (generous bound: loaded CI)
    assert broker.producers[0].closed_with == 0  # forced: pending sends abandoned
    assert metrics.sent == 0
    again = Spool(tmp_path / "spool", max_bytes=1 << 20)
    assert [(r.key, r.value) for r in again.take(100)] == messages(8)  # re-sent next run
    again.close()


def test_spool_full_during_an_outage_is_counted_in_the_metrics(tmp_path):
    broker = FakeBroker(up=False, connect_delay=0.05)
    spool = Spool(tmp_path / "spool", max_bytes=2000)
    metrics = AgentMetrics()
    pub = SpoolingKafkaPublisher(KafkaConfig(), spool, metrics, connect=broker.connect,
                                 retry_max_s=0.1)
    value = b"x" * 188  # 200 bytes with key and header: 10 fit
    for i in range(25):
        pub.publish("n", value[:-3] + f"{i:03d}".encode())
    assert metrics.spooled == 25 and metrics.dropped_spool_full == 15
    broker.up = True
    wait_until(lambda: metrics.sent == 10)
    assert [v[-3:] for _, v in broker.log] == [f"{i:03d}".encode() for i in range(15, 25)]
    pub.close(1.0)


def test_prometheus_exposition_names_and_values(tmp_path):
    from prometheus_client import generate_latest

    broker = FakeBroker(up=True)
    pub, spool, metrics = make(tmp_path, broker)
    metrics.source_counters = lambda: {"scrape_timeouts": 3, "nvml_not_supported": 7}
    metrics.ticks, metrics.ticks_skipped, metrics.samples = 4, 1, 32
    for key, value in messages(4):
        pub.publish(key.decode(), value)
    wait_until(lambda: metrics.sent == 4)
    text = generate_latest(make_registry(metrics)).decode()
    lines = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
             if ln and not ln.startswith("#")}
    assert lines["fleetlens_agent_ticks_total"] == 4
    assert lines["fleetlens_agent_ticks_skipped_total"] == 1
    assert lines["fleetlens_agent_samples_total"] == 32
    assert lines["fleetlens_agent_messages_spooled_total"] == 4
    assert lines["fleetlens_agent_messages_sent_total"] == 4
    assert lines['fleetlens_agent_messages_dropped_total{reason="spool_full"}'] == 0
    assert lines["fleetlens_agent_spool_messages"] == 0
    assert lines["fleetlens_agent_spool_bytes"] == 0
    assert lines["fleetlens_agent_last_send_timestamp_seconds"] > 1.7e9
    assert lines['fleetlens_agent_source_errors_total{kind="scrape_timeouts"}'] == 3
    assert lines['fleetlens_agent_source_errors_total{kind="nvml_not_supported"}'] == 7
    assert "# TYPE fleetlens_agent_spool_bytes gauge" in text
    pub.close(1.0)
