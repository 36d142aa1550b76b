"""When the job flushes: on a timer, when too many rows wait, and soon after a minute closes.

The timer alone (`flush_interval_s`) lets a closed minute wait up to one interval before its
rows are written, which is most of the slack in the sample-to-report freshness target. So
when the data is live (its newest sample is at most LIVE_WITHIN_S old) and the newest
watermark makes a new minute closable, a flush follows EARLY_FLUSH_GRACE_S later - long
enough for the other nodes' next 1 Hz samples to close the same minute, so the minute still
lands in one file. A backlog being drained (old timestamps) never triggers it: there, bigger
flushes are cheaper and nobody waits for the minute.
"""

from __future__ import annotations

from dataclasses import dataclass

EARLY_FLUSH_GRACE_S = 1.0
LIVE_WITHIN_S = 10.0


@dataclass
class FlushSchedule:
    interval_s: float  # [pipeline] flush_interval_s
    lateness_s: float  # [pipeline] lateness_s
    max_pending_rows: int
    window_s: int = 60
    last_flush: float = 0.0  # monotonic
    _closable: float = float("-inf")  # newest minute start already scheduled
    _due_at: float | None = None

    def observe(self, newest_ts: float | None, now: float, wall: float) -> None:
        """Note the newest sample timestamp seen so far (epoch s) after a poll."""
        if newest_ts is None or wall - newest_ts > LIVE_WITHIN_S:
            return
        closable = (newest_ts - self.window_s - self.lateness_s) // self.window_s * self.window_s
        if closable > self._closable:
            self._closable = closable
            if self._due_at is None:
                self._due_at = now + EARLY_FLUSH_GRACE_S

    def due(self, now: float, pending_rows: int) -> bool:
        return (now - self.last_flush >= self.interval_s
                or pending_rows >= self.max_pending_rows
                or (self._due_at is not None and now >= self._due_at))

    def flushed(self, now: float) -> None:
        self.last_flush = now
        self._due_at = None
