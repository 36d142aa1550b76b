"""The node agent: sample a source on a fixed schedule and publish schema-v1 messages.

Live mode ticks on a drift-free schedule: tick k fires at start + k * interval on the
monotonic clock, so a slow tick delays only itself. Backfill mode walks simulated time as fast
as the publisher takes it (a week of a 32-node fleet in well under a minute).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from fleetlens.collectors.publish import Publisher
from fleetlens.collectors.sim import FleetSim
from fleetlens.collectors.source import Source

from fleetlens.schema import encode_message

log = logging.getLogger(__name__)


def publish_tick(source: Source, publisher: Publisher, t: float, interval_s: float) -> int:
    """Publish one message per node for sample time t; returns the number of samples."""
    n = 0
    for node, samples in source.collect(t, interval_s):
        if samples:
            publisher.publish(node, encode_message(samples))
            n += len(samples)
    return n


def backfill(sim: FleetSim, publisher: Publisher, start: float, end: float, interval_s: float,
             progress: Callable[[float, int], None] | None = None) -> int:
    total = 0
    last_report = time.monotonic()
    for t in sim.ticks(start, end, interval_s):
        total += publish_tick(sim, publisher, t, interval_s)
        if progress and time.monotonic() - last_report > 5:
            progress(t, total)
            last_report = time.monotonic()
    return total


def run_live(source: Source, publisher: Publisher, interval_s: float, once: bool = False,
             stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    start = time.monotonic()
    k = 0
    total = 0
    while not stop.is_set():
        # Sample times are wall-clock seconds aligned to the interval grid.
        t = (time.time() // interval_s) * interval_s
        total += publish_tick(source, publisher, t, interval_s)
        if once:
            break
        k += 1
        delay = start + k * interval_s - time.monotonic()
        if delay < 0:  # we fell behind: skip the missed ticks rather than bunching them
            skipped = int(-delay // interval_s) + 1
            log.warning("agent fell behind by %.1fs, skipping %d tick(s)", -delay, skipped)
            k += skipped
            delay = start + k * interval_s - time.monotonic()
        stop.wait(max(delay, 0))
    return total
