"""`fleetlens replay FILE.ndjson`: publish a recorded file of schema-v1 samples.

Lines are validated with the schema module; consecutive lines of the same (node, ts) become
one Kafka message, as the agent would have sent them. Invalid lines are reported with their
line number and skipped; every valid line is still published.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from fleetlens.collectors.publish import Publisher

from fleetlens.schema import InvalidSample, encode_message, group_by_node_tick, parse_line


@dataclass
class ReplayResult:
    samples: int = 0
    messages: int = 0
    invalid: list[str] = field(default_factory=list)


def read_samples(path: Path, result: ReplayResult) -> list[dict]:
    samples = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                samples.append(parse_line(line))
            except InvalidSample as exc:
                result.invalid.append(f"{path}:{n}: {exc}")
    return samples


def replay(path: str | Path, publisher: Publisher) -> ReplayResult:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    result = ReplayResult()
    for node, batch in group_by_node_tick(read_samples(path, result)):
        publisher.publish(node, encode_message(batch))
        result.samples += len(batch)
        result.messages += 1
    publisher.close()
    for msg in result.invalid[:20]:
        print(f"skipped {msg}", file=sys.stderr)
    return result
