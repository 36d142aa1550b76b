"""The live agent's drift-free schedule, driven by fake clocks (no real time passes)."""

from __future__ import annotations

import threading
import time

import pytest
from fleetlens.collectors.agent import Schedule, run_live
from fleetlens.collectors.agent_metrics import AgentMetrics


class FakeClock:
    """Monotonic time `mono`; the wall clock reads mono + offset. wait() advances time."""

    def __init__(self, mono: float = 5000.0, wall_offset: float = 1_800_000_000.37 - 5000.0):
        self.t = mono
        self.offset = wall_offset

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.t + self.offset

    def wait(self, seconds: float) -> None:
        assert seconds > 0
        self.t += seconds


class ScriptedSource:
    """Records (mono time, wall time, ts) of each collect; each tick takes `cost(k)` seconds."""

    def __init__(self, clock: FakeClock, stop: threading.Event, ticks: int, cost=lambda k: 0.01,
                 fail_at=()):
        self.clock, self.stop, self.ticks, self.cost, self.fail_at = (clock, stop, ticks, cost,
                                                                     set(fail_at))
        self.calls: list[tuple[float, float, float]] = []

    def collect(self, t: float, interval_s: float):
        k = len(self.calls)
        self.calls.append((self.clock.mono(), self.clock.wall(), t))
        self.clock.t += self.cost(k)
        if len(self.calls) >= self.ticks:
            self.stop.set()
        if k in self.fail_at:
            raise RuntimeError("GPU fell off the bus")
        return [("node-a", [{"ts": t}])]

    def close(self) -> None:
        pass


class ListPublisher:
    def __init__(self):
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, node: str, value: bytes) -> None:
        self.messages.append((node, value))

    def close(self) -> None:
        pass


def run(clock: FakeClock, interval: float, ticks: int, **kw):
    stop = threading.Event()
    src = ScriptedSource(clock, stop, ticks, **kw)
    metrics = AgentMetrics()
    pub = ListPublisher()
    run_live(src, pub, interval, stop=stop, metrics=metrics, mono=clock.mono, wall=clock.wall,
             wait=clock.wait)
    return src, metrics, pub


def test_ticks_stay_on_the_grid_without_drift_over_many_ticks():
    clock = FakeClock()
    start = clock.t
    src, metrics, pub = run(clock, 1.0, 2000, cost=lambda k: 0.3 + 0.2 * (k % 3 == 0))
    ts = [c[2] for c in src.calls]
    # Sample times: consecutive grid points, the first one at or before the start.
    assert ts[0] == 1_800_000_000.0
    assert ts == [ts[0] + k for k in range(2000)]
    # Tick 0 runs at once; tick k fires at (start grid point) + k on the monotonic clock,
    # although every tick took 0.3-0.5 s: no accumulated drift after 2000 ticks.
    anchor = start - 0.37
    assert src.calls[0][0] == start
    for k in range(1, 2000):
        assert src.calls[k][0] == pytest.approx(anchor + k, abs=1e-6)
    # ... and each fires on its wall-clock grid point.
    assert all(abs(wall - t) < 1e-6 for _, wall, t in src.calls[1:])
    assert metrics.ticks == 2000 and metrics.ticks_skipped == 0
    assert metrics.samples == 2000 and len(pub.messages) == 2000


def test_a_slow_tick_delays_only_itself_and_missed_ticks_are_skipped_and_counted():
    clock = FakeClock(wall_offset=1_800_000_000.0 - 5000.0)  # start exactly on the grid
    interval = 10.0
    # Tick 3 takes 33 s: the slots of ticks 4, 5 and 6 pass (6 is only 3 s late: it runs at
    # once), tick 7 is on time again. Tick 10 (the 9th call) takes 53 s: 11-14 are skipped,
    # 15 runs 3 s late, 16 is on time.
    cost = {3: 33.0, 8: 53.0}
    src, metrics, _ = run(clock, interval, 12, cost=lambda k: cost.get(k, 0.5))
    ks = [round((t - 1_800_000_000.0) / interval) for _, _, t in src.calls]
    assert ks == [0, 1, 2, 3, 6, 7, 8, 9, 10, 15, 16, 17]
    fired = [m - 5000.0 for m, _, _ in src.calls]
    assert fired[4] == pytest.approx(33 + 30)  # tick 6, run late right after the slow tick
    assert fired[5] == pytest.approx(70.0)  # tick 7: back on its slot, not shifted
    assert fired[9] == pytest.approx(100 + 53)  # tick 15
    assert fired[10] == pytest.approx(160.0)
    assert metrics.ticks_skipped == 2 + 4
    assert metrics.ticks == 12


def test_schedule_advance_counts_exactly_the_slots_more_than_half_an_interval_ago():
    clock = FakeClock(wall_offset=-5000.0)  # wall 0.0 at start
    s = Schedule(2.0, clock.mono, clock.wall)
    assert s.ts() == 0.0 and s.due() == clock.t
    assert s.advance(clock.t + 1.0) == 0 and s.ts() == 2.0  # on time
    assert s.advance(clock.t + 2.0 + 2.9) == 0 and s.ts() == 4.0  # tick 2: 0.9 s late: runs
    assert s.advance(clock.t + 4.0 + 3.1) == 1 and s.ts() == 8.0  # tick 3 1.1 s late: skip
    # finished at 108 (tick 4 was due at 8): slots 10 .. 106 are > 1 s ago, 108 is due now
    assert s.advance(clock.t + 8.0 + 100.0) == 49 and s.ts() == 108.0


def test_sample_time_follows_a_wall_clock_step_but_not_jitter():
    clock = FakeClock(wall_offset=1_800_000_000.0 - 5000.0)
    stop = threading.Event()
    steps = {5: 3600.0, 9: -0.4}  # at tick 5 NTP jumps one hour ahead; later a 0.4 s slew

    class Stepping(ScriptedSource):
        def collect(self, t, interval_s):
            out = super().collect(t, interval_s)
            clock.offset += steps.get(len(self.calls), 0.0)
            return out

    src = Stepping(clock, stop, 14)
    run_live(src, ListPublisher(), 1.0, stop=stop, mono=clock.mono, wall=clock.wall,
             wait=clock.wait)
    ts = [t - 1_800_000_000.0 for _, _, t in src.calls]
    assert ts == [0, 1, 2, 3, 4, 3605, 3606, 3607, 3608, 3609, 3610, 3611, 3612, 3613]
    fired = [m - 5000.0 for m, _, _ in src.calls]
    assert fired == pytest.approx([float(k) for k in range(14)])  # monotonic timing unmoved


def test_a_failing_source_is_counted_and_the_agent_keeps_ticking():
    clock = FakeClock()
    src, metrics, pub = run(clock, 1.0, 6, fail_at={1, 2})
    assert metrics.ticks == 6 and metrics.tick_errors == 2
    assert len(pub.messages) == 4


def test_once_takes_one_sample_on_the_grid():
    clock = FakeClock()
    stop = threading.Event()
    src = ScriptedSource(clock, stop, 100)
    run_live(src, ListPublisher(), 60.0, once=True, stop=stop, mono=clock.mono,
             wall=clock.wall, wait=clock.wait)
    assert len(src.calls) == 1 and src.calls[0][2] % 60.0 == 0.0


def test_real_clock_slow_tick_is_skipped_and_later_ticks_keep_their_slots():
    """The same with the real clocks and Event.wait: generous bounds, no fixed sleeps."""
    interval = 0.1
    stop = threading.Event()
    fired: list[float] = []

    class Slow:
        def collect(self, t, interval_s):
            fired.append(time.monotonic())
            if len(fired) == 3:
                time.sleep(0.35)  # the slots of the next 3 ticks pass by more than 0.05 s
            if len(fired) >= 12:
                stop.set()
            return []

        def close(self):
            pass

    metrics = AgentMetrics()
    run_live(Slow(), ListPublisher(), interval, stop=stop, metrics=metrics)
    assert metrics.ticks_skipped == 3
    # After the slow tick, ticks fire on the original grid (multiples of the interval apart
    # from tick 1), not shifted by the 0.35 s overrun (which would be half an interval off).
    base = fired[1]
    for f in fired[4:]:
        k = (f - base) / interval
        assert abs(k - round(k)) < 0.3, (k, fired)
