"""The node agent: sample a source on a fixed schedule and publish schema-v1 messages.

Live mode ticks on a drift-free schedule (``Schedule``): tick k is due at anchor + k * interval
on the monotonic clock, so a slow tick delays only itself, and its sample time is the wall-clock
interval grid point that tick stands for. Ticks whose slot passed more than half an interval
ago are skipped and counted, never run in a burst. Backfill mode walks simulated time as fast as
the publisher takes it (a week of a 32-node fleet in well under a minute).

Clocks and the wait are injectable, so the schedule is tested without real time.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from typing import IO

from fleetlens.collectors.agent_metrics import AgentMetrics
from fleetlens.collectors.publish import Publisher
from fleetlens.collectors.sim import FleetSim
from fleetlens.collectors.source import Source

from fleetlens.schema import encode_message

log = logging.getLogger(__name__)


def publish_tick(source: Source, publisher: Publisher, t: float, interval_s: float,
                 tick_log: IO[str] | None = None) -> int:
    """Publish one message per node for sample time t; returns the number of samples."""
    n = 0
    for node, samples in source.collect(t, interval_s):
        if samples:
            publisher.publish(node, encode_message(samples))
            n += len(samples)
            if tick_log is not None:
                tick_log.write(json.dumps({"node": node, "ts": t, "samples": len(samples)})
                               + "\n")
    if tick_log is not None:
        tick_log.flush()
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


class Schedule:
    """When each tick is due (monotonic clock) and which sample time it stands for (wall clock).

    At start the wall-clock grid point at or before now, ``grid0``, is mapped to the monotonic
    instant it happened, ``anchor``: tick k is due at ``anchor + k * interval`` and stands for
    ``grid0 + k * interval``. Tick 0 is due at once; later ticks fire just after their grid
    point. Sample times come from the schedule, not from reading the clock at each tick, so
    firing jitter never moves them off the grid or makes two ticks share one.

    If the wall clock steps (NTP, an operator) by more than ``max(1 s, interval / 2)`` against
    the monotonic clock, the sample time of the current tick is re-read from the wall clock
    (rounded to the grid) and later ticks follow from there; the monotonic timing is unchanged.
    A backward step therefore repeats sample times; smaller drift stays within half an interval.
    """

    def __init__(self, interval_s: float, mono: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        if interval_s <= 0:
            raise ValueError("interval must be > 0")
        self.interval = float(interval_s)
        now, w = mono(), wall()
        self.grid0 = math.floor(w / self.interval) * self.interval
        self.anchor = now - (w - self.grid0)
        self.k = 0
        self.step_tolerance = max(1.0, self.interval / 2)

    def due(self) -> float:
        return self.anchor + self.k * self.interval

    def ts(self) -> float:
        return self.grid0 + self.k * self.interval

    def check_wall(self, now: float, w: float) -> float:
        """Follow a wall-clock step; returns the step seen (0.0 when within tolerance)."""
        step = w - (self.grid0 + (now - self.anchor))
        if abs(step) <= self.step_tolerance:
            return 0.0
        at_due = w - (now - self.due())  # wall-clock reading at the instant tick k was due
        self.grid0 = round(at_due / self.interval) * self.interval - self.k * self.interval
        return step

    def advance(self, now: float) -> int:
        """Move to the next tick after one finished at ``now``; returns the ticks skipped
        (those whose slot passed more than half an interval ago)."""
        self.k += 1
        behind = (now - self.interval / 2 - self.due()) / self.interval
        skipped = max(0, math.ceil(behind)) if behind > 0 else 0
        self.k += skipped
        return skipped


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())


def run_live(source: Source, publisher: Publisher, interval_s: float, once: bool = False,
             stop: threading.Event | None = None, metrics: AgentMetrics | None = None,
             mono: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
             wait: Callable[[float], object] | None = None,
             tick_log: IO[str] | None = None) -> int:
    """Tick until ``stop`` is set (SIGTERM/SIGINT set it), or once. Returns samples taken.

    A source that raises is logged and counted (``tick_errors``); the next tick runs as usual.
    """
    if stop is None:
        stop = threading.Event()
        install_stop_signals(stop)
    metrics = metrics if metrics is not None else AgentMetrics()
    wait = wait or stop.wait
    sched = Schedule(interval_s, mono, wall)
    total = 0
    while not stop.is_set():
        now = mono()
        delay = sched.due() - now
        if delay > 0:
            wait(delay)
            continue
        step = sched.check_wall(now, wall())
        if step:
            log.warning("wall clock stepped by %+.1fs; sample times follow it", step)
        t = sched.ts()
        try:
            n = publish_tick(source, publisher, t, sched.interval, tick_log)
        except BrokenPipeError:  # --stdout into a closed pipe: the CLI ends quietly
            raise
        except Exception:  # noqa: BLE001 - a faulty source must not stop the agent
            metrics.tick_errors += 1
            log.exception("tick at %.0f failed", t)
            n = 0
        metrics.ticks += 1
        metrics.samples += n
        total += n
        if once:
            break
        skipped = sched.advance(mono())
        if skipped:
            metrics.ticks_skipped += skipped
            log.warning("tick at %.0f overran; skipped %d tick(s)", t, skipped)
    return total
