"""Alert instances and their state machine, and the state file that survives restarts.

One *instance* per (alertname, subject): the subject is what a rule watches (a GPU, a node, a
tenant, the pipeline). Its states:

    inactive --condition true--> pending --true for `for` seconds--> firing
    pending  --condition false--> inactive (dropped, nothing is sent)
    firing   --condition false--> resolved (kept until the notifier has queued the resolve)

Times are the rule's clock: event time (the rollup minutes) for the rules on sample data, so a
replay gives the same answer; processing time (wall clock) for staleness of nodes and pipeline
health. Observations older than the instance's last one are ignored, so a replayed or
out-of-order minute cannot move an instance backwards.

If the labels of a subject's alert change (a GPU handed to another tenant), the old instance
ends where the new one starts: the old one's resolve is sent, the new one goes pending.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fleetlens.config import ConfigError
from fleetlens.pipeline.store import atomic_write_bytes

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
STATE_VERSION = 1


def fingerprint(labels: dict[str, str]) -> str:
    """Stable 16-hex id of a label set (the same labels always give the same id)."""
    text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Instance:
    rule: str
    key: str                      # "<alertname>|<subject>"
    labels: dict[str, str]
    state: str
    active_since: float           # epoch seconds: when the condition became true
    last_at: float                # the latest time the instance was evaluated at
    annotations: dict[str, str] = field(default_factory=dict)
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    @property
    def alertname(self) -> str:
        return self.labels["alertname"]

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy is the slow part of saving the state.
        return {f: getattr(self, f) for f in _FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instance:
        return cls(**d)


_FIELDS = [f.name for f in fields(Instance)]


class AlertBook:
    """All live instances; rules report conditions, the book applies the state machine."""

    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.resolved: list[Instance] = []  # resolved since the notifier last looked

    def get(self, alertname: str, subject: str) -> Instance | None:
        return self.instances.get(f"{alertname}|{subject}")

    def active(self, rule: str, alertname: str, subject: str, labels: dict[str, str],
               since: float, at: float, for_s: float) -> Instance | None:
        """The condition holds from `since` (if not already pending/firing) up to `at`.

        Returns the instance (pending or firing) so the rule can set its annotations, or None
        when the observation is older than what the instance has already seen.
        """
        key = f"{alertname}|{subject}"
        labels = {"alertname": alertname, **labels}
        cur = self.instances.get(key)
        if cur is not None:
            if at < cur.last_at:
                return None
            if cur.labels != labels:
                self._end(cur, since)
                cur = None
        if cur is None:
            cur = Instance(rule=rule, key=key, labels=labels, state=PENDING,
                           active_since=since, last_at=at)
            self.instances[key] = cur
        cur.last_at = at
        if cur.state == PENDING and at - cur.active_since >= for_s:
            cur.state = FIRING
            cur.fired_at = cur.active_since + for_s
        return cur

    def inactive(self, alertname: str, subject: str, at: float) -> Instance | None:
        """The condition is false at `at`: a pending instance is dropped, a firing one resolved.

        Returns the resolved instance (to update its annotations), else None.
        """
        cur = self.instances.get(f"{alertname}|{subject}")
        if cur is None or at < cur.last_at:
            return None
        return self._end(cur, at)

    def end(self, inst: Instance, at: float) -> Instance | None:
        """End an instance whatever its condition (rule disabled, subject forgotten)."""
        if self.instances.get(inst.key) is inst:
            return self._end(inst, max(at, inst.last_at))
        return None

    def _end(self, cur: Instance, at: float) -> Instance | None:
        del self.instances[cur.key]
        if cur.state != FIRING:
            return None
        cur.state = RESOLVED
        cur.resolved_at = at
        cur.last_at = max(cur.last_at, at)
        self.resolved.append(cur)
        return cur

    def of_rule(self, rule: str) -> list[Instance]:
        return [i for i in self.instances.values() if i.rule == rule]

    def firing(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.state == FIRING]

    def take_resolved(self) -> list[Instance]:
        out, self.resolved = self.resolved, []
        return out

    # -- persistence ---------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"instances": [i.to_dict() for i in self.instances.values()],
                "resolved": [i.to_dict() for i in self.resolved]}

    def load_state(self, data: dict[str, Any]) -> None:
        self.instances = {d["key"]: Instance.from_dict(d) for d in data.get("instances", [])}
        self.resolved = [Instance.from_dict(d) for d in data.get("resolved", [])]


class StateFile:
    """`<state_dir>/state.json`, replaced atomically (temp file, fsync, rename) on each save."""

    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / "state.json"

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ConfigError(f"alert state {self.path} is not valid JSON ({exc}); move it "
                              "away to start afresh") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ConfigError(f"alert state {self.path}: unsupported version "
                              f"{data.get('version') if isinstance(data, dict) else None!r}")
        return data

    def save(self, data: dict[str, Any]) -> None:
        body = json.dumps({"version": STATE_VERSION, **data}, sort_keys=True,
                          separators=(",", ":")).encode()
        atomic_write_bytes(self.path, body)
