"""The outbox: notifications waiting for their receiver, on disk, bounded, surviving restarts.

    <state_dir>/outbox/<receiver>/<seq>-<notification id>.json

One file per notification, written atomically (temp file, fsync, rename). Each receiver's
files are delivered in `seq` order by that receiver's delivery thread, which deletes a file
once the receiver has accepted it (or it was rejected for good, or grew older than the
receiver's max_age). When a receiver's outbox holds `outbox_max` files, the oldest is dropped
to make room (counted in fleetlens_alerts_notifications_dropped_total{reason="outbox_full"}).

Enqueueing a notification whose id is already queued does nothing: after a crash between
queueing and saving the alert state, the re-evaluation produces the same ids.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import deque
from pathlib import Path
from typing import Any

from fleetlens.pipeline.store import atomic_write_bytes

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{12})-([0-9a-f]+)\.json$")


class Outbox:
    def __init__(self, root: str | Path, max_entries: int, metrics=None):
        self.root = Path(root)
        self.max_entries = max_entries
        self.metrics = metrics
        self._lock = threading.Lock()
        self._files: dict[str, deque[str]] = {}
        self._next: dict[str, int] = {}
        self._wake: dict[str, threading.Event] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
            self._scan(d.name)

    def _scan(self, receiver: str) -> deque[str]:
        d = self.root / receiver
        names = sorted(p.name for p in d.glob("*.json") if _NAME.match(p.name)) \
            if d.is_dir() else []
        self._files[receiver] = deque(names)
        self._next[receiver] = int(names[-1][:12]) + 1 if names else 1
        return self._files[receiver]

    def _queue(self, receiver: str) -> deque[str]:
        q = self._files.get(receiver)
        return q if q is not None else self._scan(receiver)

    def wake_event(self, receiver: str) -> threading.Event:
        with self._lock:
            return self._wake.setdefault(receiver, threading.Event())

    def receivers(self) -> list[str]:
        with self._lock:
            return sorted(self._files)

    def enqueue(self, receiver: str, notification: dict[str, Any]) -> bool:
        """Store a notification for `receiver`; False if that id is already queued."""
        ident = notification["id"]
        with self._lock:
            q = self._queue(receiver)
            if any(name.endswith(f"-{ident}.json") for name in q):
                return False
            while len(q) >= self.max_entries:
                oldest = q.popleft()
                (self.root / receiver / oldest).unlink(missing_ok=True)
                log.warning("alert outbox of %s full (%d): dropped %s", receiver,
                            self.max_entries, oldest)
                if self.metrics:
                    self.metrics.dropped(receiver, "outbox_full")
            seq = self._next[receiver]
            self._next[receiver] = seq + 1
            name = f"{seq:012d}-{ident}.json"
            atomic_write_bytes(self.root / receiver / name,
                               json.dumps(notification, sort_keys=True).encode())
            q.append(name)
            event = self._wake.setdefault(receiver, threading.Event())
        event.set()
        if self.metrics:
            self.metrics.enqueued(receiver, notification["status"])
        return True

    def head(self, receiver: str) -> tuple[str, dict[str, Any]] | None:
        """The oldest notification of `receiver` (name, notification), or None."""
        while True:
            with self._lock:
                q = self._queue(receiver)
                if not q:
                    return None
                name = q[0]
                try:
                    return name, json.loads((self.root / receiver / name).read_text())
                except (FileNotFoundError, json.JSONDecodeError) as exc:
                    log.error("alert outbox %s/%s unreadable (%s): skipped", receiver, name,
                              exc)
                    q.popleft()
                    (self.root / receiver / name).unlink(missing_ok=True)

    def remove(self, receiver: str, name: str) -> None:
        with self._lock:
            q = self._queue(receiver)
            if name in q:
                q.remove(name)
            (self.root / receiver / name).unlink(missing_ok=True)

    def size(self, receiver: str) -> int:
        with self._lock:
            return len(self._queue(receiver))

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {r: len(q) for r, q in self._files.items()}

    def total(self) -> int:
        return sum(self.sizes().values())
