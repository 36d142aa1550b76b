"""The stream job: consume samples, keep windows, write rollups, commit, dead-letter.

One loop, one thread:

    poll -> decode (bad lines -> dead-letter topic) -> windows.accept (late -> dead-letter)
         -> every flush_interval_s: close windows -> rollup -> write Parquet -> checkpoint
         -> commit offsets to Kafka

The store's checkpoints, not Kafka's committed offsets, say where a partition resumes: on
assignment each partition seeks to its checkpoint's offset. Kafka's commits still follow
(after the durable write), so consumer lag stays visible to the usual Kafka tooling.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
from fleetlens.pipeline.compact import compact_partition
from fleetlens.pipeline.decode import DeadLetter, decode
from fleetlens.pipeline.flush_schedule import FlushSchedule
from fleetlens.pipeline.gaps import gap_rows
from fleetlens.pipeline.gaps import state_to_rows as gap_state_to_rows
from fleetlens.pipeline.rollup import aggregate, correction, prepare
from fleetlens.pipeline.store import Checkpoint, Store
from fleetlens.pipeline.tenancy import changed_spans
from fleetlens.pipeline.windows import PartitionWindows, energy_state_to_rows
from fleetlens.pipeline.workload import InvalidReport, parse_report, report_row, rows_frame
from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.structs import OffsetAndMetadata

from fleetlens.config import Config
from fleetlens.kafka_client import ensure_topics, make_consumer, make_producer

log = logging.getLogger(__name__)

# Raw rows held in open windows before a flush is forced regardless of the timer.
MAX_PENDING_ROWS = 1_000_000
# How long a workload report may wait for the first samples of its GPUs.
WORKLOAD_WAIT_S = 600.0


@dataclass
class JobStats:
    messages: int = 0
    samples: int = 0
    dead_letters: Counter = field(default_factory=Counter)  # by reason class
    late: int = 0  # samples for windows already closed: merged as corrections
    late_duplicates: int = 0  # ... of which already in the store (dropped as duplicates)
    ledger_corrections: int = 0  # correction rows written after a ledger change
    replayed_skipped: int = 0
    rollup_rows: int = 0
    files_written: int = 0
    compaction_errors: int = 0  # hourly-tier compactions that failed (retried next flush)
    unknown_models: Counter = field(default_factory=Counter)  # model -> rollup rows
    # Where the time goes (seconds, cumulative): fetch = inside poll(), decode = bytes ->
    # frame, window = accept + close, rollup = rollup(), write = Parquet + checkpoint + commit,
    # compact = the hourly tier (pipeline/compact.py).
    seconds: Counter = field(default_factory=Counter)
    # The process's CPU time in the same spans (all threads: Polars and DuckDB work in
    # parallel, so a stage can use more CPU-seconds than seconds). Start-up, group joins and
    # idle polls are in neither: this is what the work itself costs per sample.
    cpu_seconds: Counter = field(default_factory=Counter)
    flushes: int = 0
    last_flush_at: float | None = None  # wall clock

    def summary(self) -> dict:
        return {
            "messages": self.messages, "samples": self.samples,
            "dead_letters": sum(self.dead_letters.values()),
            "dead_letter_reasons": dict(self.dead_letters), "late": self.late,
            "late_duplicates": self.late_duplicates,
            "ledger_corrections": self.ledger_corrections,
            "replayed_skipped": self.replayed_skipped, "rollup_rows": self.rollup_rows,
            "files_written": self.files_written, "unknown_models": dict(self.unknown_models),
            "compaction_errors": self.compaction_errors,
            "stage_seconds": {k: round(v, 3) for k, v in sorted(self.seconds.items())},
            "stage_cpu_seconds": {k: round(v, 3) for k, v in sorted(self.cpu_seconds.items())},
        }

    def clock(self) -> StageClock:
        return StageClock(self)


class StageClock:
    """Charges the wall and CPU time since its last mark to a stage of a JobStats.

    The job's steps run one after another, so each step ends where the next begins:
    `clock.charge("decode")` after decoding, `clock.charge("window")` after the windows, ...
    """

    def __init__(self, stats: JobStats):
        self.stats = stats
        self.wall = time.monotonic()
        self.cpu = time.process_time()

    def charge(self, stage: str) -> float:
        """Add the time since the last mark to `stage`; returns the wall clock (monotonic)."""
        wall, cpu = time.monotonic(), time.process_time()
        self.stats.seconds[stage] += wall - self.wall
        self.stats.cpu_seconds[stage] += cpu - self.cpu
        self.wall, self.cpu = wall, cpu
        return wall


def _reason_class(reason: str) -> str:
    return reason.split(":")[0].split("'")[0].strip()


@dataclass
class WorkloadPartition:
    """Workload reports of one partition since the last flush (no windows: each report is
    final on arrival; its row is written at the next flush)."""

    checkpoint: Checkpoint
    # (offset, report, first seen (monotonic), raw value) of reports not yet written
    pending: list[tuple] = field(default_factory=list)
    next_offset: int | None = None


def known_gpu_models(store_dir: str) -> dict[str, str]:
    """uuid -> model of every GPU the store has rollups for, so that workload reports that
    arrive before a GPU's first sample of this run still resolve."""
    from fleetlens.pipeline.query import connect

    try:
        rows = connect(store_dir).execute(
            "SELECT DISTINCT uuid, model FROM rollups WHERE model IS NOT NULL").fetchall()
    except Exception:  # noqa: BLE001 - an unreadable store is reported by the first write
        return {}
    return dict(rows)


class PipelineJob(ConsumerRebalanceListener):
    def __init__(self, cfg: Config, store_dir: str, group_id: str | None = None):
        self.cfg = cfg
        self.topic = cfg.kafka.samples_topic
        self.store = Store(store_dir)
        self.group_id = group_id or cfg.kafka.group_id
        self.stats = JobStats()
        self.parts: dict[int, PartitionWindows] = {}
        self.stop_event = threading.Event()
        self.ledger_version, self.ledger = self.store.read_ledger()
        self.consumer = None
        self.dlq = None
        self.workload_topic = cfg.kafka.workload_topic
        self.workload: dict[int, WorkloadPartition] = {}
        self.locks: dict = {}  # TopicPartition -> PartitionLock held while assigned
        self.waiting: set = set()  # assigned, but the previous owner still holds the lock
        self.uuid_models = known_gpu_models(store_dir)
        # Called with the rollup rows of each flush, after they are durable (alerts, live
        # metrics). An observer must not raise; one that does is logged and kept.
        self.observers: list[Callable[[pl.DataFrame], None]] = []
        # Called with the job after every flush, with or without new rows (health metrics,
        # alert rules that fire on the absence of data).
        self.flush_hooks: list[Callable[[PipelineJob], None]] = []
        # Partition -> highest rollup file in the hourly tier (pipeline/compact.py).
        self._tier_covered: dict[int, int] = {}
        self._taken_at = 0.0  # when a partition was last taken (restarts the idle clock)

    # -- rebalance ----------------------------------------------------------------------------
    def on_partitions_revoked(self, revoked) -> None:
        # Drop, don't flush: the next owner resumes from our last checkpoint, and writing now
        # could race with it. Then let the next owner have the partition's lock.
        for tp in revoked:
            if tp.topic == self.topic:
                self.parts.pop(tp.partition, None)
                self._tier_covered.pop(tp.partition, None)
            else:
                self.workload.pop(tp.partition, None)
            self.waiting.discard(tp)
            lock = self.locks.pop(tp, None)
            if lock is not None:
                lock.release()

    def on_partitions_assigned(self, assigned) -> None:
        for tp in assigned:
            lock = self.store.partition_lock(tp.topic, tp.partition)
            self.locks[tp] = lock
            if lock.try_acquire():
                self._take(tp)
            else:
                # The previous owner has not let go yet: wait, without reading, until it has.
                self.waiting.add(tp)
                self.consumer.pause(tp)
        log.info("assigned partitions %s", sorted((tp.topic, tp.partition) for tp in assigned))

    def _take(self, tp) -> None:
        """Start owning a partition: resume from its checkpoint in the store."""
        cp = self.store.read_checkpoint(tp.topic, tp.partition)
        if tp.topic == self.topic:
            self.parts[tp.partition] = PartitionWindows(tp.partition, cp)
        else:
            self.workload[tp.partition] = WorkloadPartition(cp)
        if cp.commit_offset is None:
            self.consumer.seek_to_beginning(tp)
        else:
            self.consumer.seek(tp, cp.commit_offset)
        self._taken_at = time.monotonic()

    def _retry_waiting(self) -> None:
        for tp in list(self.waiting):
            if self.locks[tp].try_acquire():
                self.waiting.discard(tp)
                self._take(tp)
                self.consumer.resume(tp)

    # -- main loop ----------------------------------------------------------------------------
    def run(self, until_idle_s: float | None = None, assign_timeout_s: float = 120.0) -> JobStats:
        k = self.cfg.kafka
        ensure_topics(k, [k.samples_topic, k.deadletter_topic, k.workload_topic])
        self.consumer = make_consumer(k, self.group_id)
        self.dlq = make_producer(k)
        self.consumer.subscribe([self.topic, self.workload_topic], listener=self)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_event.set())
        started = time.monotonic()
        last_data = None
        schedule = FlushSchedule(self.cfg.pipeline.flush_interval_s, self.cfg.pipeline.lateness_s,
                                 MAX_PENDING_ROWS, last_flush=time.monotonic())
        try:
            while not self.stop_event.is_set():
                if self.waiting:
                    self._retry_waiting()
                clock = self.stats.clock()
                polled = self.consumer.poll(timeout_ms=500)
                now = time.monotonic()
                if polled:
                    clock.charge("fetch")  # an empty poll is waiting, not work
                    self._process(polled, clock)
                    last_data = now
                assigned = bool(self.parts or self.workload or self.waiting)
                if not polled and assigned and last_data is None:
                    last_data = now  # assigned; start the idle clock
                if last_data is not None and (self.waiting or self._taken_at > last_data):
                    # A partition just taken (its first fetch from the checkpoint is still
                    # on its way) or one still locked by its previous owner is not idleness:
                    # --until-idle must not exit before reading it.
                    last_data = now
                if not assigned and last_data is None and now - started > assign_timeout_s:
                    raise TimeoutError(f"no partition assigned within {assign_timeout_s:.0f}s")
                pending = sum(p.pending_rows for p in self.parts.values())
                schedule.observe(max((p.newest_ts for p in self.parts.values()
                                      if p.newest_ts is not None), default=None),
                                 now, time.time())
                if schedule.due(now, pending):
                    self.flush()
                    schedule.flushed(now)
                if until_idle_s is not None and last_data is not None \
                        and now - last_data >= until_idle_s:
                    log.info("no message for %.1fs: flushing every open window", until_idle_s)
                    self.flush(flush_all=True)
                    break
            else:
                self.flush()  # stopped by a signal: write what is closed, keep the rest open
        finally:
            self.dlq.flush()
            self.dlq.close()
            self.consumer.close()
            for lock in self.locks.values():
                lock.release()
        return self.stats

    def _process(self, polled: dict, clock: StageClock) -> None:
        for tp in [tp for tp in polled if tp.topic == self.workload_topic]:
            self._process_workload(tp.partition, polled.pop(tp))
        # kafka-python's records carry partition, offset, key and value, all decode() reads:
        # no per-record copy into Record (one Python object per message adds up).
        order = sorted(polled, key=lambda t: t.partition)
        records = [r for tp in order for r in polled[tp]]
        self.stats.messages += len(records)
        frame, dead = decode(records)
        clock.charge("decode")
        self.stats.samples += frame.height
        if frame.height:
            for uuid, model in frame.select("uuid", "model").unique().iter_rows():
                self.uuid_models[uuid] = model
        for d in dead:
            part = self.parts.get(d.partition)
            if part is not None and part.is_replay(d.offset):
                continue  # dead-lettered before the restart
            self._dead_letter(d)
        for tp in order:
            if tp.partition in self.parts and polled[tp]:
                self.parts[tp.partition].consumed(max(r.offset for r in polled[tp]))
        for p, rows in frame.partition_by("_partition", as_dict=True).items():
            part = self.parts.get(p[0])
            if part is None:
                continue  # revoked mid-poll; the next owner replays it
            late, skipped = part.accept(rows)
            self.stats.replayed_skipped += skipped
            if late.height:
                # Merged into the store as a correction at the next flush, never dropped.
                self.stats.late += late.height
                part.late.append(late)
        clock.charge("window")

    def _process_workload(self, partition: int, records: list) -> None:
        part = self.workload.get(partition)
        if part is None:
            return
        cp = part.checkpoint
        for r in records:
            part.next_offset = r.offset + 1
            if r.offset <= cp.consumed_offset and r.offset not in cp.pending:
                continue  # written or dead-lettered before the restart
            try:
                part.pending.append((r.offset, parse_report(r.value or b""), time.monotonic(),
                                     r.value or b""))
            except InvalidReport as exc:
                self._workload_dead_letter(partition, r.offset, r.value or b"", exc)

    def _workload_dead_letter(self, partition: int, offset: int, value: bytes,
                              exc: InvalidReport) -> None:
        self._dead_letter(DeadLetter(partition, offset, None, value.decode(errors="replace"),
                                     f"workload: {exc}"), topic=self.workload_topic)

    def _flush_workload(self, flush_all: bool) -> dict:
        """Resolve waiting reports (their GPUs' models come from the samples), write them."""
        commits = {}
        now = time.monotonic()
        for p, part in self.workload.items():
            rows, waiting = [], []
            for offset, report, seen, value in part.pending:
                try:
                    rows.append(report_row(report, self.uuid_models))
                except InvalidReport as exc:
                    if exc.retryable and not flush_all and now - seen < WORKLOAD_WAIT_S:
                        waiting.append((offset, report, seen, value))
                    else:
                        self._workload_dead_letter(p, offset, value, exc)
            part.pending = waiting
            cp = part.checkpoint
            seq = cp.seq + 1 if rows else cp.seq
            if rows:
                self.store.write_workload(self.workload_topic, p, seq, rows_frame(rows))
            if part.next_offset is None:
                continue
            commit = min([o for o, *_ in waiting], default=part.next_offset)
            new_cp = Checkpoint(seq=seq, commit_offset=commit,
                                consumed_offset=part.next_offset - 1,
                                pending=sorted(o for o, *_ in waiting))
            if new_cp != cp:
                self.dlq.flush()
                self.store.write_checkpoint(self.workload_topic, p, new_cp)
                part.checkpoint = new_cp
                commits[TopicPartition(self.workload_topic, p)] = \
                    OffsetAndMetadata(commit, "", -1)
        return commits

    def _dead_letter(self, d: DeadLetter, topic: str | None = None) -> None:
        self.stats.dead_letters[_reason_class(d.reason)] += 1
        value = json.dumps({"reason": d.reason, "topic": topic or self.topic,
                            "partition": d.partition,
                            "offset": d.offset, "key": d.key, "line": d.line,
                            "dead_lettered_at": time.time()}).encode()
        self.dlq.send(self.cfg.kafka.deadletter_topic,
                      key=d.key.encode() if d.key else None, value=value)

    def _reload_ledger_if_changed(self) -> None:
        versions = self.store.ledger_versions()
        if versions and versions[-1].name != self.ledger_version:
            self.ledger_version, self.ledger = self.store.read_ledger()
            log.info("using allocation ledger %s", self.ledger_version)

    @property
    def ledger_num(self) -> int:
        return self.store.ledger_version(self.ledger_version)

    def _ledger_corrections(self, p: int, part: PartitionWindows) -> pl.DataFrame | None:
        """Correction rows that move the partition's written windows from the ledger version
        they were attributed with to the current one. Only node-minutes around allocations
        that differ between the two versions are recomputed, from the raw archive."""
        old = self.store.read_ledger_version(part.ledger_version)
        spans = changed_spans(old, self.ledger)
        if spans.height == 0:
            return None
        raw = self.store.read_raw(self.topic, p, part.checkpoint.seq,
                                  spans["node"].unique().to_list(),
                                  spans["start_ts"].min() - 3600, spans["end_ts"].max() + 60)
        if raw is None or raw.height == 0:
            return None
        # Samples whose interval can reach into a changed span of their node.
        hits = raw.with_row_index("_r").join(spans, on="node").filter(
            (pl.col("ts") + pl.col("interval_s") > pl.col("start_ts") - 60)
            & (pl.col("ts") < pl.col("end_ts") + 60))
        affected = raw.with_row_index("_r").filter(
            pl.col("_r").is_in(hits["_r"].unique().implode())).drop("_r")
        new = aggregate(affected, self.ledger, self.cfg.definitions, self.cfg.tenancy)
        was = aggregate(affected, old, self.cfg.definitions, self.cfg.tenancy)
        rows = correction(new, was)
        self.stats.ledger_corrections += rows.height
        return rows

    def _merge_late(self, p: int, part: PartitionWindows) -> pl.DataFrame:
        """Late samples not already in the archive, prepared for aggregation. Their energy is
        power x time: counter deltas need the neighbouring samples in order."""
        late = pl.concat(part.late, how="vertical_relaxed").drop("_partition", "_offset")
        part.late = []
        late = late.unique(subset=["uuid", "mig_instance", "ts"], keep="first",
                           maintain_order=True)
        archived = self.store.read_raw(self.topic, p, part.checkpoint.seq,
                                       late["node"].unique().to_list(),
                                       late["ts"].min(), late["ts"].max() + 1)
        if archived is not None and archived.height:
            before = late.height
            late = late.join(archived.select("uuid", "mig_instance", "ts"),
                             on=["uuid", "mig_instance", "ts"], how="anti", nulls_equal=True)
            self.stats.late_duplicates += before - late.height
        return late.with_columns((pl.col("power_w") * pl.col("interval_s")).alias("_energy"))

    def flush(self, flush_all: bool = False) -> None:
        """Close due windows, write their rollups, checkpoint, then commit to Kafka."""
        self._reload_ledger_if_changed()
        p_cfg = self.cfg.pipeline
        self.dlq.flush()  # dead letters up to here must be durable before the checkpoint
        commits = {}
        written: list[pl.DataFrame] = []
        for p, part in list(self.parts.items()):
            if self.store.read_checkpoint(self.topic, p) != part.checkpoint:
                # Another process wrote this partition since we took it: it is not ours any
                # more (the lock makes this unlikely; this keeps a stale owner from writing).
                log.error("partition %d was written by another process; dropping it", p)
                del self.parts[p]
                continue
            clock = self.stats.clock()
            closed = part.take_closed(p_cfg.lateness_s, p_cfg.idle_close_s, flush_all)
            clock.charge("window")
            cp = part.checkpoint
            seq = cp.seq
            defs, tenancy = self.cfg.definitions, self.cfg.tenancy
            raw_parts: list[pl.DataFrame] = []
            row_parts: list[pl.DataFrame] = []
            if part.ledger_version != self.ledger_num:
                corrections = self._ledger_corrections(p, part)
                if corrections is not None and corrections.height:
                    row_parts.append(corrections)
                part.ledger_version = self.ledger_num
            if closed.height:
                prepared, part.energy_state = prepare(closed.drop("_partition", "_offset"),
                                                      part.energy_state)
                raw_parts.append(prepared)
                row_parts.append(aggregate(prepared, self.ledger, defs, tenancy))
                gaps, part.gap_state = gap_rows(prepared, part.gap_state, self.ledger, defs,
                                                tenancy)
                if gaps.height:
                    row_parts.append(gaps)
            if part.late:
                merged = self._merge_late(p, part)
                if merged.height:
                    raw_parts.append(merged)
                    row_parts.append(aggregate(merged, self.ledger, defs, tenancy))
            rows = pl.concat(row_parts) if row_parts else None
            clock.charge("rollup")
            if rows is not None:
                seq += 1
                if raw_parts:
                    self.store.write_raw(self.topic, p, seq,
                                         pl.concat(raw_parts, how="vertical_relaxed"))
                self.store.write_rollups(self.topic, p, seq, rows)
                written.append(rows)
                self.stats.rollup_rows += rows.height
                self.stats.files_written += 1
                unknown = rows.filter(pl.col("model_key").is_null() & (pl.col("observed_s") > 0))
                for model, n in unknown.group_by("model").len().iter_rows():
                    self.stats.unknown_models[model] += n
            commit = part.commit_offset()
            consumed = (part.next_offset - 1) if part.next_offset is not None else -1
            new_cp = Checkpoint(seq=seq, commit_offset=commit,
                                consumed_offset=max(consumed, cp.consumed_offset),
                                closed=dict(part.closed),
                                energy=energy_state_to_rows(part.energy_state),
                                gaps=gap_state_to_rows(part.gap_state),
                                ledger_version=part.ledger_version)
            if new_cp != cp:
                self.store.write_checkpoint(self.topic, p, new_cp)
                part.checkpoint = new_cp
            if commit is not None:
                commits[TopicPartition(self.topic, p)] = OffsetAndMetadata(commit, "", -1)
            clock.charge("write")
            # Only durable files (<= the checkpoint's seq) go into the tier; an error there
            # never stops ingestion: readers use the minute files until a later try succeeds.
            covered = self._tier_covered.get(p)  # None: not read from the store yet
            behind = part.checkpoint.seq - (covered or 0)
            try:
                if (covered is None or behind >= p_cfg.compact_min_files
                        or (flush_all and behind > 0)):
                    self._tier_covered[p] = compact_partition(
                        self.store, self.topic, p, part.checkpoint.seq,
                        1 if flush_all else p_cfg.compact_min_files)
            except Exception:  # noqa: BLE001
                self.stats.compaction_errors += 1
                log.exception("hourly-tier compaction of partition %d failed", p)
            clock.charge("compact")
        clock = self.stats.clock()
        commits.update(self._flush_workload(flush_all))
        if commits:
            self.consumer.commit(commits)
        clock.charge("write")
        self.stats.flushes += 1
        self.stats.last_flush_at = time.time()
        if written:
            frame = pl.concat(written)
            for observe in self.observers:
                try:
                    observe(frame)
                except Exception:  # noqa: BLE001 - an observer must never stop ingestion
                    log.exception("rollup observer %r failed", observe)
        for hook in self.flush_hooks:
            try:
                hook(self)
            except Exception:  # noqa: BLE001 - same rule as observers
                log.exception("flush hook %r failed", hook)
