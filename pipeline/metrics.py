"""Live Prometheus metrics of the stream job: per-GPU state of the newest window, and health.

Wiring (see `fleetlens pipeline --metrics-port`): `observe_rollups` is one of the job's
`observers` (called with the rollup rows of each flush once they are durable) and
`update_health` one of its `flush_hooks` (called with the job after every flush). Everything
lives in this object's own CollectorRegistry, so tests and several jobs in one process never
share state, and nothing is registered in prometheus_client's global registry.

Per GPU (or MIG instance), from the newest closed minute seen for it - labels `tenant`,
`model`, `node`, `gpu`, `uuid`, `mig_instance` (`""` where not a MIG instance; `tenant=""`
means unallocated):

    fleetlens_gpu_utilization_ratio       time-weighted mean gpu_util of the minute, 0-1
    fleetlens_gpu_sm_active_ratio         time-weighted mean sm_active, 0-1
    fleetlens_gpu_tensor_active_ratio     time-weighted mean tensor_active, 0-1
    fleetlens_gpu_mfu_ratio               MFU estimate of the minute (idle counts as 0)
    fleetlens_gpu_power_watts             mean power draw
    fleetlens_gpu_memory_used_bytes       largest framebuffer use in the minute
    fleetlens_gpu_window_timestamp_seconds  start of that minute (event time)
    fleetlens_gpu_state{state}            one-hot: 1 for the GPU's state, 0 for the others

A measurement the minute does not have (no tensor_active, a model the catalog does not
know) is left out - never exported as 0.

States (mutually exclusive, like kube-state-metrics' `kube_pod_status_phase`):
`busy`, `idle` (idle without memory held), `idle_held` (idle with memory held) - whichever
has the most GPU-seconds in the minute (ties: busy, then idle_held, then idle) - and
`unavailable`: no closed minute for `stale_after_s`, either in event time (the GPU's newest
minute is that far behind the newest minute of the fleet) or in wall-clock time (nothing new
for it since that long ago). A GPU silent for `forget_after_s` is dropped.

Per tenant: `fleetlens_tenant_gpus{tenant, state}` - number of GPUs in each state, 0 included.

Pipeline health (`fleetlens_pipeline_*`):

    consumer_lag_records{topic,partition}       end offset - consumer position, per partition
    uncommitted_records{topic,partition}        end offset - checkpointed resume offset
    assigned_partitions                         partitions this consumer owns
    open_window_rows                            raw rows waiting in open windows
    flush_duration_seconds (histogram)          rollup + Parquet + checkpoint + commit time
    stage_seconds_total{stage}                  fetch, decode, window, rollup, write, compact
    stage_cpu_seconds_total{stage}              process CPU time (all threads) in those stages
    messages_total, samples_total               Kafka records / valid samples consumed
    rollup_rows_total, files_written_total, flushes_total
    compaction_errors_total                     hourly-tier compactions that failed (retried)
    dead_letters_total{reason}                  by reason class ("late", "missing required
                                                field", ...)
    late_samples_total                          samples for windows already closed
    replayed_samples_skipped_total              samples of windows written before a restart
    unknown_model_rollup_rows_total{model}      rows without MFU (model not in the catalog)
    last_flush_timestamp_seconds                wall clock of the last flush

Rates (rows/s) are PromQL: `rate(fleetlens_pipeline_samples_total[1m])`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import polars as pl
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

STATES = ("busy", "idle", "idle_held", "unavailable")
GPU_LABELS = ("tenant", "model", "node", "gpu", "uuid", "mig_instance")
STAGES = ("fetch", "decode", "window", "rollup", "write", "compact")
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Per-GPU gauges: (metric name, help, value column of the per-GPU frame).
GPU_GAUGES = (
    ("fleetlens_gpu_utilization_ratio",
     "GPU utilization (gpu_util / 100) of the GPU's newest closed minute", "util"),
    ("fleetlens_gpu_sm_active_ratio",
     "SM activity of the GPU's newest closed minute", "sm_active"),
    ("fleetlens_gpu_tensor_active_ratio",
     "Tensor-pipe activity of the GPU's newest closed minute", "tensor_active"),
    ("fleetlens_gpu_mfu_ratio",
     "MFU estimate of the GPU's newest closed minute (tensor_active x clock / spec clock; "
     "idle time counts as 0)", "mfu"),
    ("fleetlens_gpu_power_watts", "Mean power draw in the GPU's newest closed minute", "power"),
    ("fleetlens_gpu_memory_used_bytes",
     "Largest framebuffer use in the GPU's newest closed minute", "fb_bytes"),
    ("fleetlens_gpu_window_timestamp_seconds",
     "Start of the GPU's newest closed minute (event time, Unix seconds)", "minute_s"),
    ("fleetlens_gpu_throttled_ratio",
     "Share of the GPU's newest closed minute with a clock-event (throttle) reason",
     "throttled"),
)

_KEY = ("node", "gpu", "uuid", "mig_instance")


@dataclass
class GpuWindow:
    """What the metrics know of one GPU: its newest closed minute."""

    labels: dict[str, str]
    minute_s: float
    state: str
    values: dict[str, float | None]
    seen_at: float  # wall clock of the flush that brought it
    xid: tuple[int, float] | None = None  # (last XID code, minute it was seen), kept


def latest_windows(rows: pl.DataFrame) -> pl.DataFrame:
    """Rollup rows -> one row per GPU: the newest minute, its rows combined.

    A minute can hold several rows of one GPU (the ledger changed tenant within it); they are
    combined seconds-weighted, and the tenant with the most seconds names the GPU.
    """
    key = list(_KEY)
    newest = rows.group_by(key).agg(pl.col("minute").max().alias("_newest"))
    r = rows.join(newest, on=key, nulls_equal=True) \
        .filter(pl.col("minute") == pl.col("_newest"))
    sec = pl.col("observed_s")

    def weighted(col: str) -> pl.Expr:
        known = pl.col(col).is_not_null()
        basis = sec.filter(known).sum()
        return pl.when(basis > 0).then((pl.col(col) * sec).filter(known).sum() / basis)

    return r.group_by(key).agg(
        pl.col("minute").first(),
        pl.col("tenant").sort_by(["observed_s", "tenant"], descending=[True, False],
                                 nulls_last=True).first(),
        pl.col("model").first(),
        sec.sum().alias("observed_s"),
        pl.col("busy_s").sum(), pl.col("idle_s").sum(), pl.col("idle_held_s").sum(),
        (weighted("gpu_util_mean") / 100.0).alias("util"),
        weighted("sm_active_mean").alias("sm_active"),
        weighted("tensor_active_mean").alias("tensor_active"),
        weighted("power_w_mean").alias("power"),
        (pl.col("fb_used_max_mib").max() * 1024.0 * 1024.0).alias("fb_bytes"),
        pl.when(pl.col("mfu_basis_s").sum() > 0)
        .then(pl.col("mfu_s").sum() / pl.col("mfu_basis_s").sum()).alias("mfu"),
        pl.when(sec.sum() > 0).then(pl.col("throttled_s").sum() / sec.sum()).alias("throttled"),
        pl.col("xid_last").filter(pl.col("xid_count") > 0).last().alias("xid"),
    ).sort(key)


def window_state(busy_s: float, idle_s: float, idle_held_s: float) -> str:
    """The state with the most seconds in the window (ties: busy, idle_held, idle)."""
    idle_free = max(idle_s - idle_held_s, 0.0)
    best = max((busy_s, 2, "busy"), (idle_held_s, 1, "idle_held"), (idle_free, 0, "idle"))
    return best[2]


class _GpuCollector(Collector):
    """Builds the per-GPU and per-tenant families from the current state at scrape time, so a
    GPU whose tenant or model changed leaves no stale series behind."""

    def __init__(self, owner: PipelineMetrics):
        self.owner = owner

    def describe(self):
        return list(self._families({}))

    def collect(self):
        with self.owner.lock:
            gpus = dict(self.owner.gpus)
            states = self.owner.current_states()
        return list(self._families(gpus, states))

    @staticmethod
    def _families(gpus: dict, states: dict | None = None) -> Iterable:
        states = states or {}
        families = {name: GaugeMetricFamily(name, help_, labels=GPU_LABELS)
                    for name, help_, _ in GPU_GAUGES}
        state_f = GaugeMetricFamily(
            "fleetlens_gpu_state",
            "1 for the state of the GPU's newest closed minute (busy, idle, idle_held, "
            "unavailable), 0 for the others", labels=[*GPU_LABELS, "state"])
        tenant_f = GaugeMetricFamily(
            "fleetlens_tenant_gpus", "Number of GPUs of the tenant in each state "
            "(tenant=\"\": unallocated)", labels=["tenant", "state"])
        xid_f = GaugeMetricFamily(
            "fleetlens_gpu_xid_last_seen_timestamp_seconds", "Minute (event time) in which "
            "the GPU last reported an XID, by code", labels=[*GPU_LABELS, "xid"])
        node_f = GaugeMetricFamily(
            "fleetlens_node_window_timestamp_seconds", "Start of the newest closed minute of "
            "any GPU of the node (event time, Unix seconds)", labels=["node"])
        node_newest: dict[str, float] = {}
        per_tenant: dict[str, dict[str, int]] = {}
        for key in sorted(gpus):
            w: GpuWindow = gpus[key]
            labels = [w.labels[k] for k in GPU_LABELS]
            for name, _, col in GPU_GAUGES:
                v = w.minute_s if col == "minute_s" else w.values.get(col)
                if v is not None:
                    families[name].add_metric(labels, float(v))
            if w.xid is not None:
                xid_f.add_metric([*labels, str(w.xid[0])], w.xid[1])
            node = w.labels["node"]
            node_newest[node] = max(node_newest.get(node, w.minute_s), w.minute_s)
            state = states.get(key, w.state)
            for s in STATES:
                state_f.add_metric([*labels, s], 1.0 if s == state else 0.0)
            counts = per_tenant.setdefault(w.labels["tenant"], dict.fromkeys(STATES, 0))
            counts[state] += 1
        for tenant in sorted(per_tenant):
            for s in STATES:
                tenant_f.add_metric([tenant, s], float(per_tenant[tenant][s]))
        for node in sorted(node_newest):
            node_f.add_metric([node], node_newest[node])
        yield from families.values()
        yield state_f
        yield tenant_f
        yield xid_f
        yield node_f


class PipelineMetrics:
    def __init__(self, stale_after_s: float = 300.0, forget_after_s: float = 86400.0,
                 registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time):
        self.registry = registry or CollectorRegistry()
        self.stale_after_s = stale_after_s
        self.forget_after_s = forget_after_s
        self.clock = clock
        self.lock = threading.Lock()
        self.gpus: dict[tuple, GpuWindow] = {}
        self.newest_minute_s: float | None = None
        self._seen: dict[str, float] = {}  # cumulative job.stats values already exported
        r = self.registry
        p = "fleetlens_pipeline_"
        self.lag = Gauge(p + "consumer_lag_records", "Records in the partition after the "
                         "consumer's position (end offset - position)",
                         ["topic", "partition"], registry=r)
        self.uncommitted = Gauge(p + "uncommitted_records", "Records after the offset the "
                                 "partition resumes from on restart (end offset - checkpoint)",
                                 ["topic", "partition"], registry=r)
        self.assigned = Gauge(p + "assigned_partitions", "Partitions assigned to this consumer",
                              registry=r)
        self.open_rows = Gauge(p + "open_window_rows", "Raw sample rows waiting in open "
                               "windows", registry=r)
        self.flush_seconds = Histogram(p + "flush_duration_seconds", "Time a flush spent in "
                                       "rollup, Parquet write, checkpoint and commit",
                                       buckets=FLUSH_BUCKETS, registry=r)
        self.stage_seconds = Counter(p + "stage_seconds", "Seconds spent per stage "
                                     "(fetch, decode, window, rollup, write, compact)",
                                     ["stage"], registry=r)
        self.stage_cpu = Counter(p + "stage_cpu_seconds", "Process CPU seconds (all threads) "
                                 "spent per stage", ["stage"], registry=r)
        self.messages = Counter(p + "messages", "Kafka records consumed", registry=r)
        self.samples = Counter(p + "samples", "Valid samples decoded", registry=r)
        self.rollup_rows = Counter(p + "rollup_rows", "Per-GPU-minute rollup rows written",
                                   registry=r)
        self.files = Counter(p + "files_written", "Rollup Parquet files written", registry=r)
        self.flushes = Counter(p + "flushes", "Flushes (close windows, write, commit)",
                               registry=r)
        self.compaction_errors = Counter(p + "compaction_errors", "Hourly-tier compactions "
                                         "that failed (retried at a later flush)", registry=r)
        self.dead = Counter(p + "dead_letters", "Lines sent to the dead-letter topic, by "
                            "reason class", ["reason"], registry=r)
        self.late = Counter(p + "late_samples", "Samples that arrived for a window already "
                            "closed (merged into the store at the next flush)", registry=r)
        self.skipped = Counter(p + "replayed_samples_skipped", "Samples of windows already "
                               "written before a restart, skipped on replay", registry=r)
        self.unknown = Counter(p + "unknown_model_rollup_rows", "Rollup rows of GPU models "
                               "the catalog does not know (no MFU)", ["model"], registry=r)
        self.last_flush = Gauge(p + "last_flush_timestamp_seconds", "Wall clock of the last "
                                "flush (Unix seconds)", registry=r)
        for stage in STAGES:
            self.stage_seconds.labels(stage)  # export 0 before the first flush
            self.stage_cpu.labels(stage)
        self.registry.register(_GpuCollector(self))

    # -- per-GPU ------------------------------------------------------------------------------
    def observe_rollups(self, rows: pl.DataFrame) -> None:
        """A job observer: keep each GPU's newest closed minute."""
        if rows.height == 0:
            return
        now = self.clock()
        per_gpu = latest_windows(rows)
        with self.lock:
            for r in per_gpu.iter_rows(named=True):
                key = tuple(r[k] for k in _KEY)
                minute_s = _naive_utc_seconds(r["minute"])  # rollup minutes: naive UTC
                old = self.gpus.get(key)
                if old is not None and old.minute_s > minute_s:
                    continue  # an older window (e.g. a replay) never replaces a newer one
                labels = {
                    "tenant": r["tenant"] or "", "model": r["model"] or "",
                    "node": r["node"], "gpu": str(r["gpu"]), "uuid": r["uuid"],
                    "mig_instance": "" if r["mig_instance"] is None else str(r["mig_instance"]),
                }
                xid = (r["xid"], minute_s) if r["xid"] is not None else \
                    (old.xid if old is not None else None)
                self.gpus[key] = GpuWindow(
                    labels=labels, minute_s=minute_s,
                    state=window_state(r["busy_s"], r["idle_s"], r["idle_held_s"]),
                    values={c: r[c] for c in ("util", "sm_active", "tensor_active", "mfu",
                                              "power", "fb_bytes", "throttled")},
                    seen_at=now, xid=xid)
                if self.newest_minute_s is None or minute_s > self.newest_minute_s:
                    self.newest_minute_s = minute_s
            self._forget(now)

    def current_states(self) -> dict[tuple, str]:
        """Each GPU's state now: its window's state, or unavailable when stale (hold lock)."""
        now = self.clock()
        out = {}
        for key, w in self.gpus.items():
            stale = (now - w.seen_at > self.stale_after_s
                     or (self.newest_minute_s is not None
                         and self.newest_minute_s - w.minute_s > self.stale_after_s))
            out[key] = "unavailable" if stale else w.state
        return out

    def _forget(self, now: float) -> None:
        for key in [k for k, w in self.gpus.items() if now - w.seen_at > self.forget_after_s]:
            del self.gpus[key]

    # -- pipeline health ----------------------------------------------------------------------
    def update_health(self, job) -> None:
        """A job flush hook: export job.stats deltas, offsets and lag."""
        st = job.stats
        self._count(self.messages, "messages", st.messages)
        self._count(self.samples, "samples", st.samples)
        self._count(self.rollup_rows, "rollup_rows", st.rollup_rows)
        self._count(self.files, "files_written", st.files_written)
        self._count(self.flushes, "flushes", st.flushes)
        self._count(self.compaction_errors, "compaction_errors", st.compaction_errors)
        self._count(self.late, "late", st.late)
        self._count(self.skipped, "replayed_skipped", st.replayed_skipped)
        for reason, n in st.dead_letters.items():
            self._count(self.dead.labels(reason), f"dead:{reason}", n)
        for model, n in st.unknown_models.items():
            self._count(self.unknown.labels(model), f"unknown:{model}", n)
        flush_s = 0.0
        for stage, secs in st.seconds.items():
            delta = self._count(self.stage_seconds.labels(stage), f"stage:{stage}", secs)
            if stage in ("rollup", "write"):
                flush_s += delta
        for stage, secs in st.cpu_seconds.items():
            self._count(self.stage_cpu.labels(stage), f"cpu:{stage}", secs)
        self.flush_seconds.observe(flush_s)
        if st.last_flush_at is not None:
            self.last_flush.set(st.last_flush_at)
        self._offsets(job)
        with self.lock:
            self._forget(self.clock())

    def _count(self, counter, key: str, total: float) -> float:
        """Advance `counter` to the cumulative `total`; returns the increase."""
        delta = total - self._seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._seen[key] = max(total, self._seen.get(key, 0))
        return max(delta, 0)

    def _offsets(self, job) -> None:
        consumer = job.consumer
        self.open_rows.set(sum(p.pending_rows for p in job.parts.values()))
        if consumer is None:
            return
        try:
            # The samples topic's partitions (the workload topic's are few and not windowed).
            assigned = sorted((tp for tp in consumer.assignment() or ()
                               if tp.topic == job.topic), key=lambda tp: tp.partition)
        except Exception:  # noqa: BLE001 - a consumer mid-rebalance
            assigned = []
        self.assigned.set(len(assigned))
        self.lag.clear()
        self.uncommitted.clear()
        if not assigned:
            return
        ends = {tp: consumer.highwater(tp) for tp in assigned}
        missing = [tp for tp, end in ends.items() if end is None]
        if missing:  # no fetch response yet for these: ask the broker
            try:
                ends.update(consumer.end_offsets(missing, timeout_ms=2000))
            except Exception as exc:  # noqa: BLE001 - lag is best effort, never fatal
                log.debug("end_offsets failed: %s", exc)
        for tp in assigned:
            end = ends.get(tp)
            if end is None:
                continue
            labels = (tp.topic, str(tp.partition))
            try:
                pos = consumer.position(tp, timeout_ms=2000)
            except Exception:  # noqa: BLE001
                pos = None
            if pos is not None:
                self.lag.labels(*labels).set(max(end - pos, 0))
            part = job.parts.get(tp.partition)
            resume = part.checkpoint.commit_offset if part is not None else None
            self.uncommitted.labels(*labels).set(max(end - (resume or 0), 0))

    # -- exposition ---------------------------------------------------------------------------
    def serve(self, port: int, host: str = "127.0.0.1"):
        """Start the /metrics HTTP server in a daemon thread; returns (server, thread)."""
        from prometheus_client import start_http_server

        return start_http_server(port, addr=host, registry=self.registry)


def _naive_utc_seconds(value) -> float:
    from datetime import UTC, datetime

    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    return float(value)


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry can expose (counters as `_total`, histograms as
    `_bucket`/`_sum`/`_count`), whether or not it has samples yet."""
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                                 "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
        names.update(s.name for s in family.samples)
    return names
