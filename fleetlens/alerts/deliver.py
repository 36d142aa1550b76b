"""Delivery: one background thread per receiver sends its outbox, oldest first.

Nothing here runs on the pipeline's thread: the evaluator only writes outbox files, so a dead,
slow or hanging receiver can delay its own notifications but never the pipeline.

Per attempt: POST the rendered body with the receiver's timeout. Outcomes:

* 2xx: delivered, the file is deleted;
* network error, timeout, 5xx, 429 or 408: retried after exponential backoff with jitter
  (`retry_initial` doubling up to `retry_max`, each delay drawn from [d/2, d]; a 429's
  Retry-After is honoured up to retry_max); later notifications of that receiver wait, so a
  resolve never overtakes its firing;
* any other status (a 4xx: the receiver rejects the payload; retrying will not help): dropped;
* older than `max_age` before it could be delivered: dropped.

Headers: Content-Type application/json, User-Agent, X-Fleetlens-Delivery (the notification id,
stable across retries: receivers can deduplicate on it), Authorization: Bearer <token> when a
bearer token is configured, and with an hmac_secret:

    X-Fleetlens-Timestamp: <unix seconds>
    X-Fleetlens-Signature-256: sha256=<hex(HMAC_SHA256(secret, timestamp + "." + body))>
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from fleetlens.alerts.config import AlertsConfig, Receiver
from fleetlens.alerts.formats import render
from fleetlens.alerts.outbox import Outbox

log = logging.getLogger(__name__)

USER_AGENT = "fleetlens-alerts/1"
SIGNATURE_HEADER = "X-Fleetlens-Signature-256"
TIMESTAMP_HEADER = "X-Fleetlens-Timestamp"
DELIVERY_HEADER = "X-Fleetlens-Delivery"
RETRY_STATUSES = {408, 429}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass
class Attempt:
    ok: bool
    retryable: bool
    status: int | None = None
    reason: str = ""       # metrics label: network, timeout, http_5xx, http_429, http_4xx, other
    error: str = ""
    retry_after: float | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        if self.ok:
            return f"ok, HTTP {self.status} in {self.seconds:.2f}s"
        return f"failed ({self.reason}): {self.error}"


def _opener() -> urllib.request.OpenerDirector:
    # Redirects are not followed: a webhook that answers 3xx is misconfigured.
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    return urllib.request.build_opener(NoRedirect)


def send(receiver: Receiver, notification: dict, external_url: str,
         now: float | None = None) -> Attempt:
    """One HTTP attempt to deliver `notification` to `receiver`."""
    body = render(notification, receiver, external_url)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               DELIVERY_HEADER: notification["id"], **receiver.headers}
    if receiver.bearer_token:
        headers["Authorization"] = f"Bearer {receiver.bearer_token}"
    if receiver.hmac_secret:
        ts = str(int(time.time() if now is None else now))
        headers[TIMESTAMP_HEADER] = ts
        headers[SIGNATURE_HEADER] = sign(receiver.hmac_secret, ts, body)
    req = urllib.request.Request(receiver.url, data=body, headers=headers, method="POST")
    t0 = time.monotonic()
    try:
        with _opener().open(req, timeout=receiver.timeout) as resp:
            resp.read(65536)
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        detail = exc.read(300).decode("utf-8", "replace").strip() if exc.fp else ""
        exc.close()
        retry_after = None
        if status == 429:
            try:
                retry_after = float(exc.headers.get("Retry-After", ""))
            except ValueError:
                retry_after = None
        retryable = status >= 500 or status in RETRY_STATUSES
        reason = ("http_5xx" if status >= 500 else "http_429" if status == 429
                  else "http_4xx")
        return Attempt(False, retryable, status, reason,
                       f"HTTP {status} {exc.reason}" + (f": {detail}" if detail else ""),
                       retry_after, time.monotonic() - t0)
    except TimeoutError as exc:
        return Attempt(False, True, None, "timeout", f"timed out after {receiver.timeout:g}s "
                       f"({exc})", seconds=time.monotonic() - t0)
    except urllib.error.URLError as exc:
        timeout = isinstance(exc.reason, TimeoutError)
        return Attempt(False, True, None, "timeout" if timeout else "network",
                       f"{exc.reason}", seconds=time.monotonic() - t0)
    except (OSError, ValueError) as exc:  # connection reset mid-response, bad URL ...
        return Attempt(False, True, None, "network", f"{type(exc).__name__}: {exc}",
                       seconds=time.monotonic() - t0)
    seconds = time.monotonic() - t0
    if 200 <= status < 300:
        return Attempt(True, False, status, seconds=seconds)
    return Attempt(False, False, status, "other", f"HTTP {status}", seconds=seconds)


def backoff(receiver: Receiver, attempt: int, rng: random.Random) -> float:
    """Delay before retry number `attempt` (1, 2, ...): doubling, capped, jittered."""
    d = min(receiver.retry_max, receiver.retry_initial * 2 ** (attempt - 1))
    return d / 2 + rng.uniform(0, d / 2)


class Worker(threading.Thread):
    """Sends one receiver's outbox in order until stopped."""

    def __init__(self, receiver: Receiver, outbox: Outbox, external_url: str, metrics,
                 stop: threading.Event):
        super().__init__(name=f"alerts-{receiver.name}", daemon=True)
        self.receiver = receiver
        self.outbox = outbox
        self.external_url = external_url
        self.metrics = metrics
        self.stop_event = stop
        self.wake = outbox.wake_event(receiver.name)
        self.rng = random.Random()
        self.attempts: dict[str, tuple[int, float]] = {}  # name -> (failures, next try at)
        self.in_flight = False

    def _wait(self, seconds: float) -> None:
        self.wake.wait(max(0.0, min(seconds, 1.0)))
        self.wake.clear()

    def run(self) -> None:
        r = self.receiver
        while not self.stop_event.is_set():
            head = self.outbox.head(r.name)
            if head is None:
                self._wait(1.0)
                continue
            name, n = head
            now = time.time()
            if now - n["created_at"] > r.max_age:
                log.error("alert notification %s for %s older than %ss: dropped", n["id"],
                          r.name, r.max_age)
                self.outbox.remove(r.name, name)
                self.attempts.pop(name, None)
                self.metrics.dropped(r.name, "expired")
                continue
            failures, next_at = self.attempts.get(name, (0, 0.0))
            if now < next_at:
                self._wait(next_at - now)
                continue
            self.in_flight = True
            try:
                result = send(r, n, self.external_url)
            finally:
                self.in_flight = False
            if result.ok:
                self.outbox.remove(r.name, name)
                self.attempts.pop(name, None)
                self.metrics.delivered(r.name, time.time())
                continue
            self.metrics.failure(r.name, result.reason)
            if not result.retryable:
                log.error("alert receiver %s rejected notification %s: %s (dropped)", r.name,
                          n["id"], result.error)
                self.outbox.remove(r.name, name)
                self.attempts.pop(name, None)
                self.metrics.dropped(r.name, "rejected")
                continue
            failures += 1
            delay = backoff(r, failures, self.rng)
            if result.retry_after is not None:
                delay = min(max(delay, result.retry_after), r.retry_max)
            log.warning("alert receiver %s: %s; retry %d in %.1fs", r.name, result.error,
                        failures, delay)
            self.attempts[name] = (failures, time.time() + delay)


class Deliverer:
    """The delivery threads of all configured receivers."""

    def __init__(self, cfg: AlertsConfig, outbox: Outbox, metrics):
        self.cfg = cfg
        self.outbox = outbox
        self.metrics = metrics
        self.stop_event = threading.Event()
        self.workers: list[Worker] = []

    def start(self) -> None:
        configured = {r.name for r in self.cfg.receivers}
        for name in self.outbox.receivers():
            if name not in configured and self.outbox.size(name):
                log.warning("alert outbox %s holds %d notifications for a receiver that is no "
                            "longer configured; they stay there", name, self.outbox.size(name))
        for r in self.cfg.receivers:
            w = Worker(r, self.outbox, self.cfg.external_url, self.metrics, self.stop_event)
            w.start()
            self.workers.append(w)

    def pending(self) -> int:
        configured = {r.name for r in self.cfg.receivers}
        return sum(n for r, n in self.outbox.sizes().items() if r in configured)

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every configured receiver's outbox to empty."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, drain_s: float = 0.0) -> None:
        """Give receivers up to `drain_s` to take what is queued, then stop. What is left
        stays in the outbox for the next start; a thread stuck in a request (daemon) is not
        waited for beyond a moment."""
        if self.workers and drain_s > 0:
            self.drain(drain_s)
        self.stop_event.set()
        for w in self.workers:
            w.wake.set()
        for w in self.workers:
            w.join(timeout=0.5)
        self.workers = []
