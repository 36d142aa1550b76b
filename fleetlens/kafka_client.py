"""Kafka clients with the settings fleetlens relies on, in one place.

Everything here is plain Kafka protocol and works the same against Apache Kafka and the
embedded Tansu broker; the few settings chosen for Tansu (short session timeout) are legal
defaults on Apache Kafka too. See ../shared/reference/kafka-tansu.md.
"""

from __future__ import annotations

import contextlib
import logging
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from fleetlens.config import KafkaConfig
from fleetlens.kafka_records import use_fast_records

log = logging.getLogger(__name__)

try:  # kafka-python checks batch CRCs with this C extension when it is installed
    import crc32c as _crc32c_c  # noqa: F401

    FAST_CRC = True
except ImportError:
    FAST_CRC = False


def wait_for_broker(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until a broker answers at ``bootstrap`` (raises TimeoutError after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000).close()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f}s ({last})")


def ensure_topics(cfg: KafkaConfig, names: list[str]) -> None:
    """Create topics explicitly with the configured partition count (never rely on auto-create:
    Apache Kafka in production has it off, and Tansu would pick 4 partitions)."""
    admin = KafkaAdminClient(bootstrap_servers=cfg.bootstrap)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, cfg.partitions, cfg.replication_factor)
               for n in names if n not in existing]
        if new:
            # Another process may win the race to create it; that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
    finally:
        admin.close()


def make_producer(cfg: KafkaConfig, **overrides) -> KafkaProducer:
    compression = None if cfg.compression == "none" else cfg.compression
    settings = dict(
        bootstrap_servers=cfg.bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type=compression,
        linger_ms=20,
        batch_size=256 * 1024,
        max_request_size=1048576,
    )
    settings.update(overrides)
    return KafkaProducer(**settings)


def make_consumer(cfg: KafkaConfig, group_id: str | None = None, **overrides) -> KafkaConsumer:
    settings = dict(
        bootstrap_servers=cfg.bootstrap,
        group_id=group_id or cfg.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=cfg.session_timeout_ms,
        heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        max_poll_interval_ms=cfg.max_poll_interval_ms,
        max_poll_records=cfg.max_poll_records,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        # Without the `crc32c` C extension kafka-python checks CRC-32C in pure Python: measured
        # 60 % of the pipeline's fetch time (benchmarks, docs/benchmarks.md). The broker has
        # already validated each batch's CRC on produce and TCP checks the transfer, so the
        # consumer-side check is kept only where it is cheap (`crc32c` is a pinned dependency).
        check_crcs=FAST_CRC,
    )
    settings.update(overrides)
    consumer = KafkaConsumer(**settings)
    # Record batches are read by fleetlens.kafka_records: kafka-python's own per-record parsing
    # was most of the pipeline's fetch time (docs/benchmarks.md, optimisation 9).
    use_fast_records(consumer)
    return consumer
