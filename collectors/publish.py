"""Where an agent's messages go.

* ``SpoolingKafkaPublisher``: the live agent. Spool on disk first, Kafka in the background.
* ``KafkaPublisher``: straight to Kafka, blocking when the client's buffer is full (backfill
  and replay, which must not drop anything and have no schedule to keep).
* ``StdoutPublisher``: NDJSON on stdout (``--stdout``, debugging).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Protocol

from fleetlens.config import KafkaConfig

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, node: str, value: bytes) -> None: ...
    def close(self) -> None: ...


class StdoutPublisher:
    """Writes each message's NDJSON lines as they are; the output is valid schema-v1 NDJSON."""

    def __init__(self, stream: IO[bytes] | None = None):
        self.stream = stream or sys.stdout.buffer
        self.messages = 0

    def publish(self, node: str, value: bytes) -> None:
        self.stream.write(value)
        self.messages += 1

    def close(self) -> None:
        self.stream.flush()


class KafkaPublisher:
    """One Kafka message per node per tick, keyed by node name (keeps a node's samples in one
    partition, in order)."""

    def __init__(self, cfg: KafkaConfig):
        from fleetlens.kafka_client import ensure_topics, make_producer

        ensure_topics(cfg, [cfg.samples_topic])
        self.topic = cfg.samples_topic
        self.producer = make_producer(cfg)
        self.messages = 0

    def publish(self, node: str, value: bytes) -> None:
        self.producer.send(self.topic, key=node.encode(), value=value)
        self.messages += 1

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


# -- the live agent's publisher: spool first, Kafka in the background ------------------------
#: The sender keeps at most this many messages handed to the Kafka client and unacknowledged.
MAX_IN_FLIGHT = 1000
#: delivery_timeout_ms of the agent's producer: a message stays in the Kafka client (retried
#: by it, in order, under idempotence) until the broker takes it, however long an outage lasts.
DELIVERY_TIMEOUT_MS = 24 * 3600 * 1000


def connect_producer(cfg: KafkaConfig, bootstrap_timeout_ms: int = 3000):
    """Make sure the samples topic exists and return an idempotent acks=all producer.

    Raises (kafka.errors.KafkaError, OSError, ...) when no broker answers within
    bootstrap_timeout_ms: KafkaProducer's constructor needs a broker, so the sender thread calls
    this again until it succeeds."""
    import contextlib

    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from fleetlens.kafka_client import make_producer

    admin = KafkaAdminClient(bootstrap_servers=cfg.bootstrap,
                             bootstrap_timeout_ms=bootstrap_timeout_ms,
                             request_timeout_ms=10000, reconnect_backoff_max_ms=1000)
    try:
        if cfg.samples_topic not in set(admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):  # another agent was first
                admin.create_topics([NewTopic(cfg.samples_topic, cfg.partitions,
                                              cfg.replication_factor)])
    finally:
        admin.close()
    return make_producer(cfg, bootstrap_timeout_ms=bootstrap_timeout_ms,
                         delivery_timeout_ms=DELIVERY_TIMEOUT_MS, max_block_ms=5000,
                         reconnect_backoff_max_ms=1000)


class SpoolingKafkaPublisher:
    """``publish`` appends the message to the on-disk spool and returns; a sender thread moves
    spooled messages to Kafka oldest first, and a message leaves the spool only once the broker
    acknowledged it (acks=all, idempotent producer). Sampling therefore never waits on Kafka,
    an outage only lengthens the spool, and the agent starts with the broker down.

    Delivery: at-least-once. A message acknowledged by the broker but not yet recorded in the
    spool cursor when the agent dies is sent again after the restart (at most
    ``Spool.cursor_interval_s`` of them, or the in-flight window on a SIGTERM whose flush
    deadline expired). Within one run nothing is sent twice unless the Kafka client reports a
    send as failed: the sender then replaces the producer and re-sends every message not yet
    acknowledged, in order, which can duplicate ones the broker had in fact written and puts the
    failed one after later messages of other partitions that had already been acknowledged.
    """

    def __init__(self, cfg: KafkaConfig, spool, metrics=None,
                 connect: Callable[[], object] | None = None, max_in_flight: int = MAX_IN_FLIGHT,
                 retry_max_s: float = 5.0, idle_wake_s: float = 1.0):
        from fleetlens.collectors.agent_metrics import AgentMetrics

        self.topic = cfg.samples_topic
        self.spool = spool
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.metrics.spool_backlog = lambda: spool.backlog
        self._connect = connect or (lambda: connect_producer(cfg))
        self.max_in_flight = max_in_flight
        self.retry_max_s = retry_max_s
        self.idle_wake_s = idle_wake_s
        self.messages = 0
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._deadline = float("inf")
        self._producer = None
        self._thread = threading.Thread(target=self._run, name="fleetlens-sender", daemon=True)
        self._thread.start()

    # -- sampling side -----------------------------------------------------------------------
    def publish(self, node: str, value: bytes) -> None:
        try:
            self.spool.append(node.encode(), value)
        except OSError as exc:
            self.metrics.dropped_write_error += 1
            log.error("spool write failed, message of %s dropped: %s", node, exc)
            return
        finally:
            self.metrics.spooled = self.spool.stats.appended
            self.metrics.dropped_spool_full = self.spool.stats.dropped
        self.messages += 1
        self._wake.set()

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is spooled for up to timeout_s, then stop; what is left stays spooled."""
        self._deadline = time.monotonic() + timeout_s
        self._closing.set()
        self._wake.set()
        # The sender closes its producer itself before it ends; allow it a moment for that.
        self._thread.join(timeout_s + 0.5)
        if self._thread.is_alive():
            log.warning("sender still busy (connecting?) after the flush deadline; leaving")
        self.spool.close()

    # -- sender thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # never die silently: the spool keeps everything, log loudly
            log.exception("sender thread failed; messages stay in the spool")
        finally:
            self._close_producer(0)

    def _close_producer(self, timeout_s: float) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=max(0.0, timeout_s))
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.debug("producer close: %s", exc)

    def _loop(self) -> None:
        from kafka.errors import MessageSizeTooLargeError

        inflight: deque[list] = deque()  # [Record, future | None], oldest first
        backoff = 0.2
        warned = False
        while True:
            self._wake.clear()
            if self._closing.is_set():
                remaining = self._deadline - time.monotonic()
                if remaining <= 0 or (not inflight and self.spool.unsent == 0):
                    self._close_producer(max(0.0, min(remaining, 1.0)))
                    return
            if self._producer is None:
                try:
                    self._producer = self._connect()
                except Exception as exc:  # noqa: BLE001 - any failure: retry later
                    self.metrics.send_errors += 1
                    (log.debug if warned else log.warning)(
                        "Kafka not reachable (%s); spooling, retrying", exc)
                    warned = True
                    self._sleep(backoff)
                    backoff = min(backoff * 2, self.retry_max_s)
                    continue
                if warned:
                    log.warning("Kafka reachable again; sending %d spooled message(s)",
                                self.spool.backlog[0])
                backoff, warned = 0.2, False
                if self._closing.is_set() and time.monotonic() >= self._deadline:
                    continue
            producer = self._producer
            if len(inflight) < self.max_in_flight:
                inflight.extend([rec, None] for rec in
                                self.spool.take(min(200, self.max_in_flight - len(inflight))))
            for entry in inflight:
                if entry[1] is not None:
                    continue
                rec = entry[0]
                try:
                    fut = producer.send(self.topic, key=rec.key, value=rec.value)
                except MessageSizeTooLargeError as exc:  # can never be sent: do not block on it
                    log.error("message of %d bytes rejected by the Kafka client: %s",
                              len(rec.value), exc)
                    entry[1] = "rejected"
                    continue
                except Exception as exc:  # noqa: BLE001 - e.g. metadata timeout: retry later
                    self.metrics.send_errors += 1
                    log.warning("send failed (%s); retrying", exc)
                    break  # keep the order: nothing after it goes before it
                fut.add_both(self._on_done)
                entry[1] = fut
            failed = self._reap(inflight)
            if failed is not None:
                self.metrics.send_errors += 1
                log.warning("Kafka send failed (%r); re-sending %d unacknowledged message(s) "
                            "with a new producer", failed, len(inflight))
                self._close_producer(0)
                for entry in inflight:
                    entry[1] = None
                continue
            self.spool.maybe_sync()
            if inflight and inflight[0][1] is None:  # a send failed synchronously
                self._sleep(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
            else:
                self._sleep(self.idle_wake_s)

    def _sleep(self, seconds: float) -> None:
        """Until woken (a new message, a finished send, close) or seconds pass; never past
        the flush deadline once closing."""
        if self._closing.is_set():
            seconds = min(seconds, max(0.0, self._deadline - time.monotonic()))
        self._wake.wait(seconds)

    def _on_done(self, *_: object) -> None:
        self._wake.set()

    def _reap(self, inflight: deque) -> BaseException | None:
        """Acknowledge finished sends; returns the first failure, if any."""
        if not any(e[1] is not None and (e[1] == "rejected" or e[1].is_done) for e in inflight):
            return None
        keep = []
        failed = None
        for entry in inflight:
            rec, fut = entry
            if fut == "rejected":
                self.metrics.dropped_rejected += 1
                self.spool.ack(rec)
            elif fut is not None and fut.is_done:
                if fut.succeeded():
                    self.spool.ack(rec)
                    self.metrics.sent += 1
                    self.metrics.last_send_timestamp = time.time()
                else:
                    failed = failed or fut.exception
                    keep.append(entry)
            else:
                keep.append(entry)
        inflight.clear()
        inflight.extend(keep)
        return failed
