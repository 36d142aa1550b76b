"""Routing and grouping: which receiver gets which alerts, in which notification, when.

Per receiver, alerts that match its route (tenants / severities / alertnames) are grouped by
the receiver's `group_by` labels (Alertmanager semantics; `...` = every label, which is what
pagerduty receivers use: one event per alert). For each (receiver, group):

* the first notification goes out at the first evaluation that sees a firing alert;
* a change (an alert starts firing, or a notified alert resolves) is sent at most every
  `group_interval`; changes within it are batched into the next notification;
* when the pipeline stops, changes still held back by group_interval are sent (a batch run
  such as `--until-idle` tells everything it found);
* an alert that fired and resolved before the receiver was told (within one batch of rollups,
  e.g. during a backfill, or within group_interval) is still told: as firing, then resolved;
* with nothing changed, the firing alerts are re-sent every `repeat_interval`.

A resolve is only sent for an alert the receiver was told was firing. Group state (what was
sent, when, the sequence number) is part of the persisted alert state, so a restart neither
repeats a firing notification nor forgets a resolve still owed.

A notification is a plain dict (stored in the outbox, rendered per format at delivery):

    {"id", "receiver", "group_key", "group_labels", "status", "seq", "created_at",
     "alerts": [{"status", "labels", "annotations", "starts_at", "ends_at", "fingerprint",
                 "value"}]}
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from fleetlens.alerts.config import AlertsConfig, Receiver
from fleetlens.alerts.state import AlertBook, Instance


def alert_dict(inst: Instance) -> dict[str, Any]:
    return {"status": "resolved" if inst.resolved_at is not None else "firing",
            "labels": dict(inst.labels), "annotations": dict(inst.annotations),
            "starts_at": inst.active_since, "ends_at": inst.resolved_at,
            "fingerprint": inst.fingerprint, "value": inst.value}


def group_labels(labels: dict[str, str], group_by: list[str]) -> dict[str, str]:
    if "..." in group_by:
        return dict(labels)
    return {k: labels[k] for k in group_by if k in labels}


def group_key(glabels: dict[str, str]) -> str:
    """Alertmanager's format: route matchers, then the group labels."""
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(glabels.items()))
    return "{}:{" + inner + "}"


@dataclass
class Group:
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    created: float
    seq: int = 0
    last_sent: float | None = None
    sent: list[str] = field(default_factory=list)  # fingerprints last notified as firing
    pending_resolved: list[dict] = field(default_factory=list)  # resolves owed
    unsent: list[dict] = field(default_factory=list)  # fired and resolved, never told


class Notifier:
    def __init__(self, cfg: AlertsConfig, enqueue) -> None:
        """`enqueue(receiver_name, notification)` puts a notification in the outbox."""
        self.cfg = cfg
        self.enqueue = enqueue
        self.groups: dict[str, Group] = {}

    def to_state(self) -> dict:
        return {k: asdict(g) for k, g in self.groups.items()}

    def load_state(self, data: dict) -> None:
        self.groups = {k: Group(**g) for k, g in data.items()}

    def _group_by(self, r: Receiver) -> list[str]:
        if r.format == "pagerduty":
            return ["..."]
        return r.group_by or self.cfg.group_by

    def dispatch(self, book: AlertBook, now: float, force: bool = False) -> list[dict]:
        """Queue every notification that is due now (with `force`, every change held back
        by group_interval too); returns them."""
        firing = book.firing()
        resolved = book.take_resolved()
        out = []
        for r in self.cfg.receivers:
            gb = self._group_by(r)
            current: dict[str, list[Instance]] = {}
            for inst in firing:
                if r.matches(inst.labels):
                    gl = group_labels(inst.labels, gb)
                    g = self._get(r, gl, now)
                    current.setdefault(g.group_key, []).append(inst)
            for inst in resolved:
                if not r.matches(inst.labels):
                    continue
                g = self._get(r, group_labels(inst.labels, gb), now)
                if inst.fingerprint in g.sent:
                    g.pending_resolved.append(alert_dict(inst))
                    g.sent.remove(inst.fingerprint)
                else:
                    # Fired and resolved before this receiver heard of it (both within one
                    # batch of rollups, or within group_interval): it is still told, once
                    # as firing and then as resolved.
                    g.unsent.append(alert_dict(inst))
            for g in sorted((g for g in self.groups.values() if g.receiver == r.name),
                            key=lambda g: g.group_key):
                n = self._group(r, g, current.get(g.group_key, []), now, force)
                if n is not None:
                    out.append(n)
        # Groups of receivers no longer configured are dropped.
        names = {r.name for r in self.cfg.receivers}
        for k in [k for k, g in self.groups.items() if g.receiver not in names]:
            del self.groups[k]
        return out

    def _get(self, r: Receiver, glabels: dict[str, str], now: float) -> Group:
        gk = group_key(glabels)
        key = f"{r.name}\x00{gk}"
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = Group(r.name, gk, glabels, created=now)
        return g

    def _group(self, r: Receiver, g: Group, alerts: list[Instance], now: float,
               force: bool = False) -> dict | None:
        fps = sorted(i.fingerprint for i in alerts)
        # A notified alert that is neither firing nor resolved any more (re-routed by a
        # config change) is simply forgotten.
        g.sent = [fp for fp in g.sent if fp in fps]
        changed = bool(set(fps) - set(g.sent)) or bool(g.pending_resolved) or bool(g.unsent)
        interval_ok = (force or g.last_sent is None
                       or now - g.last_sent >= self.cfg.group_interval)
        repeat_due = (bool(fps) and not changed and g.last_sent is not None
                      and now - g.last_sent >= self.cfg.repeat_interval)
        notification = None
        if (changed and interval_ok) or repeat_due:
            body = sorted((alert_dict(i) for i in alerts), key=lambda a: a["fingerprint"])
            body += [{**a, "status": "firing", "ends_at": None} for a in g.unsent]
            if r.send_resolved:
                body += g.pending_resolved
            if body:
                g.seq += 1
                ident = hashlib.sha256(
                    f"{r.name}\x00{g.group_key}\x00{g.created}\x00{g.seq}".encode()
                ).hexdigest()[:32]
                notification = {
                    "id": ident, "receiver": r.name, "group_key": g.group_key,
                    "group_labels": g.group_labels,
                    "status": "firing" if alerts or g.unsent else "resolved", "seq": g.seq,
                    "created_at": now, "alerts": body,
                }
                self.enqueue(r.name, notification)
            g.last_sent = now
            g.sent = fps
            g.pending_resolved, g.unsent = g.unsent, []
        if not fps and not g.pending_resolved and not g.unsent:
            del self.groups[f"{r.name}\x00{g.group_key}"]
        return notification
