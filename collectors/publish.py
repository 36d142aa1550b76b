"""Where an agent's messages go: Kafka (production) or stdout (debugging, --stdout)."""

from __future__ import annotations

import sys
from typing import IO, Protocol

from fleetlens.config import KafkaConfig


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
