"""The evaluator: runs the rules on each flush's rollups, keeps the alert state, queues
notifications. It runs on the pipeline's thread, as a rollup observer and a flush hook:

* ``observe(rows)`` (job.observers): the rules on sample data see the rows of windows that
  were just closed and made durable;
* ``on_flush(job)`` (job.flush_hooks, after every flush, with or without rows): node staleness
  and pipeline health (processing time), then grouping/routing, then the state is saved.

Exactly-once evaluation across crashes: the state file records, per partition, the last
rollup file (checkpoint ``seq``) whose rows the rules have seen. A pipeline that dies after
writing a checkpoint but before the alert state was saved leaves files the rules have not
seen; at the next start ``attach()`` reads them back from the store and evaluates them before
the pipeline resumes. Everything else the rules need (open instances, the MFU windows, the
last minute of each GPU, what each receiver was told) is in the same state file, so a restart
neither re-fires nor loses a resolve.

One pipeline process per store evaluates alerts: the state directory is locked.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections import Counter
from pathlib import Path

import polars as pl

from fleetlens.alerts.config import AlertsConfig, ConfigError
from fleetlens.alerts.notify import Notifier
from fleetlens.alerts.rules import (
    ALERTNAMES,
    Context,
    Health,
    IdleRule,
    LowMfuRule,
    PipelineRule,
    StaleRule,
    ThrottleRule,
    XidRule,
)
from fleetlens.alerts.state import AlertBook, StateFile

log = logging.getLogger(__name__)


class Evaluator:
    def __init__(self, cfg: AlertsConfig, state_dir: str | Path, enqueue, metrics=None,
                 clock=time.time):
        self.cfg = cfg
        self.state_dir = Path(state_dir)
        self.metrics = metrics
        self.clock = clock
        self.book = AlertBook()
        self.ctx = Context(self.book, cfg)
        self.idle, self.throttle, self.xid = IdleRule(), ThrottleRule(), XidRule()
        self.low_mfu, self.stale, self.pipeline = LowMfuRule(), StaleRule(), PipelineRule()
        self.notifier = Notifier(cfg, enqueue)
        self.state_file = StateFile(self.state_dir)
        self.seen_seq: dict[str, int] = {}
        self._seen_mono: dict[str, float] = {}
        self.watch_start = clock()
        self.had_state = self._load()
        self._time_in_rules = 0.0
        self._end_orphans()

    # -- state ---------------------------------------------------------------------------------
    def _load(self) -> bool:
        data = self.state_file.load()
        if data is None:
            return False
        self.seen_seq = {k: int(v) for k, v in data.get("seen_seq", {}).items()}
        self.book.load_state(data.get("book", {}))
        self.notifier.load_state(data.get("groups", {}))
        rules = data.get("rules", {})
        self.low_mfu.load_state(rules.get("low_mfu", {}))
        self.stale.load_state(rules.get("stale", {}))
        return True

    def save(self) -> None:
        self.state_file.save({
            "seen_seq": self.seen_seq, "book": self.book.to_state(),
            "groups": self.notifier.to_state(),
            "rules": {"low_mfu": self.low_mfu.to_state(), "stale": self.stale.to_state()},
            "saved_at": self.clock(),
        })

    def _end_orphans(self) -> None:
        """Instances of rules switched off (or alertnames no longer produced) since the
        state was saved are resolved now, so their receivers hear about it."""
        now = self.clock()
        for inst in list(self.book.instances.values()):
            rc = self.cfg.rules.get(inst.rule)
            if rc is None or not rc.enabled or inst.alertname not in ALERTNAMES[inst.rule]:
                self.book.end(inst, max(now, inst.last_at))

    # -- evaluation ----------------------------------------------------------------------------
    def observe(self, rows: pl.DataFrame) -> None:
        """Rules on sample data, for rows of closed windows (job observer)."""
        if rows.height == 0:
            return
        t0 = time.monotonic()
        rows = rows.sort(["minute", "node", "gpu"])
        self.idle.observe(rows, self.ctx)
        self.throttle.observe(rows, self.ctx)
        self.xid.observe(rows, self.ctx)
        self.low_mfu.observe(rows, self.ctx)
        self.stale.observe(rows, self.ctx, self.clock())
        self._time_in_rules += time.monotonic() - t0

    def tick(self, health: Health | None = None,
             arrivals: dict[str, float] | None = None) -> list[dict]:
        """Processing-time rules, then routing/grouping, then save. Returns the
        notifications queued."""
        t0 = time.monotonic()
        now = self.clock()
        self.stale.tick(self.ctx, now, self.watch_start, arrivals or {})
        if health is not None:
            self.pipeline.tick(self.ctx, health)
        queued = self.notifier.dispatch(self.book, now)
        self.save()
        if self.metrics is not None:
            counts = Counter((i.alertname, i.state) for i in self.book.instances.values())
            self.metrics.evaluated(self._time_in_rules + time.monotonic() - t0, counts)
        self._time_in_rules = 0.0
        return queued

    def final(self) -> list[dict]:
        """At shutdown: queue what group_interval still holds back, then save."""
        queued = self.notifier.dispatch(self.book, self.clock(), force=True)
        self.save()
        return queued

    def process(self, rows: pl.DataFrame | None = None, health: Health | None = None,
                arrivals: dict[str, float] | None = None) -> list[dict]:
        """observe + tick: what one pipeline flush does (handy outside the pipeline)."""
        if rows is not None:
            self.observe(rows)
        return self.tick(health, arrivals)

    # -- the pipeline --------------------------------------------------------------------------
    def attach(self, job) -> None:
        """Catch up on rollups the rules have not seen, then hook into the job."""
        self.topic = job.topic
        self.catch_up(job.store, job.topic)
        job.observers.append(self.observe)
        job.flush_hooks.append(self.on_flush)

    def catch_up(self, store, topic: str) -> int:
        """Evaluate rollup files written after the state was last saved. Returns rows read."""
        from fleetlens.pipeline.store import _safe

        cp_dir = store.root / "checkpoints" / _safe(topic)
        parts = sorted(int(p.stem[1:]) for p in cp_dir.glob("p*.json")) \
            if cp_dir.is_dir() else []
        todo: list[Path] = []
        for p in parts:
            seq = store.read_checkpoint(topic, p).seq
            key = f"{topic}/{p}"
            if not self.had_state:
                self.seen_seq[key] = seq  # first start: history is not alerted on
                continue
            d = store.rollup_dir() / _safe(topic) / f"p{p:04d}"
            todo += [d / f"{s:012d}.parquet" for s in range(self.seen_seq.get(key, 0) + 1,
                                                             seq + 1)]
            self.seen_seq[key] = seq
        frames = [pl.read_parquet(f) for f in todo if f.exists()]
        if frames:
            rows = pl.concat(frames, how="vertical_relaxed")
            log.info("alerts: catching up on %d rollup rows from %d files", rows.height,
                     len(frames))
            self.observe(rows)
        self.tick()
        return sum(f.height for f in frames)

    def on_flush(self, job) -> None:
        """Flush hook: record what the rules have seen, then processing-time rules."""
        for p, part in job.parts.items():
            self.seen_seq[f"{job.topic}/{p}"] = part.checkpoint.seq
        now, mono = self.clock(), time.monotonic()
        arrivals: dict[str, float] = {}
        for part in job.parts.values():
            for node, seen in part.last_seen.items():
                # last_seen is monotonic time of the node's newest accepted sample; only a
                # change is news (the windows forget a node once it was closed for silence).
                if self._seen_mono.get(node) == seen:
                    continue
                self._seen_mono[node] = seen
                t = now - (mono - seen)
                arrivals[node] = max(arrivals.get(node, t), t)
        self.tick(Health(now=now, samples_total=job.stats.samples,
                         dead_letters_total=sum(job.stats.dead_letters.values()),
                         lag=_lag(job), topic=job.topic, group=job.group_id), arrivals)


def _lag(job) -> int | None:
    """Messages between each partition's read position and its high watermark (as of the
    consumer's last fetch; no network call). None when not known."""
    consumer = getattr(job, "consumer", None)
    if consumer is None or not job.parts:
        return None
    from kafka import TopicPartition

    total, known = 0, False
    for p, part in job.parts.items():
        try:
            hw = consumer.highwater(TopicPartition(job.topic, p))
        except Exception:  # noqa: BLE001 - revoked meanwhile, or not fetched yet
            hw = None
        if hw is None or part.next_offset is None:
            continue
        total += max(0, hw - part.next_offset)
        known = True
    return total if known else None


class StateLock:
    """An exclusive lock on the state directory (one evaluating pipeline per store)."""

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ConfigError(f"alert state {state_dir} is in use by another process (one "
                              "pipeline per store evaluates alerts)") from None

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
