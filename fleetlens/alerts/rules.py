"""The built-in rules. Each turns rollup rows (or pipeline health figures) into conditions on
alert instances; the AlertBook (state.py) applies the pending/firing/resolved state machine.

| rule       | alertname(s)                                        | subject | clock           |
|------------|-----------------------------------------------------|---------|-----------------|
| gpu_idle   | GpuIdleWhileAllocated, GpuIdleHeldWhileAllocated     | GPU     | event time      |
| low_mfu    | TenantLowMfu                                        | tenant  | event time      |
| xid        | GpuXidError                                         | GPU+XID | event time      |
| throttle   | GpuThrottled                                        | GPU     | event time      |
| stale      | GpuStale (event time), NodeStale (processing time)  | GPU/node| both            |
| pipeline   | PipelineConsumerLag, PipelineDeadLetterRate         | pipeline| processing time |

Rows are evaluated as *runs*: consecutive minutes of one GPU with the same condition and
tenant collapse to one observation (first minute .. last minute), so a week of backfill costs
a few Python calls per GPU state change, not one per row.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from fleetlens.alerts.config import AlertsConfig, RuleConfig, format_duration
from fleetlens.alerts.state import FIRING, AlertBook, Instance
from fleetlens.alerts.xid import CRITICAL_CODES, meaning

IDLE = "GpuIdleWhileAllocated"
IDLE_HELD = "GpuIdleHeldWhileAllocated"
LOW_MFU = "TenantLowMfu"
XID = "GpuXidError"
THROTTLED = "GpuThrottled"
GPU_STALE = "GpuStale"
NODE_STALE = "NodeStale"
LAG = "PipelineConsumerLag"
DEAD_LETTERS = "PipelineDeadLetterRate"

ALERTNAMES = {
    "gpu_idle": (IDLE, IDLE_HELD), "low_mfu": (LOW_MFU,), "xid": (XID,),
    "throttle": (THROTTLED,), "stale": (GPU_STALE, NODE_STALE),
    "pipeline": (LAG, DEAD_LETTERS),
}


def hhmm(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _gpu_subject() -> pl.Expr:
    return pl.concat_str([pl.col("node"), pl.col("gpu").cast(pl.String), pl.col("uuid"),
                          pl.col("mig_instance").cast(pl.String).fill_null("-")],
                         separator="/").alias("_subj")


def gpu_labels(row: dict[str, Any]) -> dict[str, str]:
    labels = {"node": row["node"], "gpu": str(row["gpu"]), "uuid": row["uuid"],
              "model": row["model"] or ""}
    if row.get("tenant"):
        labels["tenant"] = row["tenant"]
    if row.get("mig_instance") is not None:
        labels["mig_instance"] = str(row["mig_instance"])
    if row.get("cluster"):
        labels["cluster"] = row["cluster"]
    return labels


def gpu_name(labels: dict[str, str]) -> str:
    mig = f" MIG {labels['mig_instance']}" if "mig_instance" in labels else ""
    return f"GPU {labels['gpu']}{mig} on {labels['node']}"


def _per_tenant(rc: RuleConfig, key: str, dtype=pl.Float64) -> pl.Expr:
    """A column with the rule's `key` for each row's tenant (overrides, else the default)."""
    overrides = {t: v[key] for t, v in rc.tenants.items() if key in v}
    default = rc.values[key]
    if not overrides:
        return pl.lit(default, dtype=dtype)
    return pl.col("tenant").replace_strict(overrides, default=default, return_dtype=dtype)


def _runs(frame: pl.DataFrame, kind: pl.Expr, figures: list[pl.Expr]) -> pl.DataFrame:
    """Collapse each GPU's minutes into runs of equal (kind, tenant)."""
    f = frame.with_columns(_gpu_subject(), kind.alias("_kind"),
                           pl.col("minute").dt.epoch("s").alias("_m"))
    f = f.sort(["_subj", "_m", "tenant"], nulls_last=False)
    change = ((pl.col("_kind") != pl.col("_kind").shift(1)).fill_null(True)
              | pl.col("tenant").ne_missing(pl.col("tenant").shift(1)))
    f = f.with_columns(change.cum_sum().over("_subj").alias("_run"))
    return (f.group_by(["_subj", "_run"], maintain_order=True)
            .agg(pl.col("_kind").first(), pl.col("_m").first().alias("_start"),
                 pl.col("_m").last().alias("_end"), pl.len().alias("_minutes"),
                 pl.col("node", "gpu", "uuid", "model", "tenant", "mig_instance", "cluster")
                 .last(), *figures))


def _relevant(runs: pl.DataFrame, book: AlertBook, alertnames: tuple[str, ...]) -> pl.DataFrame:
    """Runs that can change something: a true condition, or a false one that may end an
    instance (it follows a true run, or its GPU has an open instance)."""
    open_subjects = [i.key.split("|", 1)[1] for i in book.instances.values()
                     if i.alertname in alertnames]
    after_true = (pl.col("_kind").shift(1).over("_subj") != 0).fill_null(False)
    return runs.filter((pl.col("_kind") != 0) | after_true
                       | pl.col("_subj").is_in(open_subjects))


@dataclass
class Context:
    book: AlertBook
    cfg: AlertsConfig


# -- gpu_idle ----------------------------------------------------------------------------------
class IdleRule:
    name = "gpu_idle"

    def observe(self, rows: pl.DataFrame, ctx: Context) -> None:
        rc = ctx.cfg.rules[self.name]
        if not rc.enabled:
            return
        allocated = pl.col("tenant").is_not_null() & _per_tenant(rc, "enabled", pl.Boolean)
        idle = (pl.col("observed_s") > 0) & (
            pl.col("idle_s") >= _per_tenant(rc, "min_idle_ratio") * pl.col("observed_s"))
        held = pl.col("idle_held_s") >= 0.5 * pl.col("idle_s")
        kind = (pl.when(allocated & idle & held).then(pl.lit(2))
                .when(allocated & idle).then(pl.lit(1)).otherwise(pl.lit(0)))
        runs = _runs(rows, kind, [
            pl.col("fb_used_max_mib").last(), pl.col("power_w_mean").last(),
            pl.col("gpu_util_mean").last(), pl.col("idle_s").sum(), pl.col("observed_s").sum()])
        book = ctx.book
        runs = _relevant(runs, book, (IDLE, IDLE_HELD))
        for r in runs.iter_rows(named=True):
            subj, start, end = r["_subj"], float(r["_start"]), float(r["_end"]) + 60
            kind = r["_kind"]
            if kind != 2:
                book.inactive(IDLE_HELD, subj, start)
            if kind != 1:
                book.inactive(IDLE, subj, start)
            if kind == 0:
                continue
            tenant = r["tenant"]
            alertname = IDLE_HELD if kind == 2 else IDLE
            sev = rc.get("held_severity" if kind == 2 else "severity", tenant)
            labels = {"severity": sev, **gpu_labels(r)}
            for_s = rc.get("for", tenant)
            inst = book.active(self.name, alertname, subj, labels, start, end, for_s)
            if inst is None or inst.state != FIRING:
                continue  # annotations are only ever sent for firing alerts
            idle_for = end - inst.active_since
            inst.value = idle_for
            what = "idle with memory held" if kind == 2 else "idle"
            mem = (f"; {r['fb_used_max_mib'] / 1024:.1f} GiB of memory held"
                   if kind == 2 and r["fb_used_max_mib"] is not None else "")
            power = (f"; power {r['power_w_mean']:.0f} W" if r["power_w_mean"] is not None
                     else "")
            inst.annotations = {
                "summary": f"{gpu_name(labels)} {what} for {format_duration(idle_for)} "
                           f"(tenant {tenant})",
                "description": (
                    f"{labels['model']} {labels['uuid']} allocated to {tenant} has done no "
                    f"compute since {hhmm(inst.active_since)} ({format_duration(idle_for)}, "
                    f"threshold {format_duration(for_s)}){mem}{power}."),
            }


# -- throttle ----------------------------------------------------------------------------------
class ThrottleRule:
    name = "throttle"

    def observe(self, rows: pl.DataFrame, ctx: Context) -> None:
        rc = ctx.cfg.rules[self.name]
        if not rc.enabled:
            return
        ratio = _per_tenant(rc, "min_ratio")
        # Throttled while busy: NVML sets the GpuIdle reason bit on idle GPUs, so throttled
        # seconds of an idle minute say nothing about heat or power.
        cond = (_per_tenant(rc, "enabled", pl.Boolean)
                & (pl.col("observed_s") > 0)
                & (pl.col("throttled_s") >= ratio * pl.col("observed_s"))
                & (pl.col("busy_s") >= ratio * pl.col("observed_s")))
        runs = _runs(rows, cond.cast(pl.Int32), [
            pl.col("throttled_s").sum(), pl.col("observed_s").sum(),
            pl.col("temp_max_c").max(), pl.col("power_w_mean").mean()])
        book = ctx.book
        runs = _relevant(runs, book, (THROTTLED,))
        for r in runs.iter_rows(named=True):
            subj, start, end = r["_subj"], float(r["_start"]), float(r["_end"]) + 60
            if not r["_kind"]:
                book.inactive(THROTTLED, subj, start)
                continue
            tenant = r["tenant"]
            labels = {"severity": rc.get("severity", tenant), **gpu_labels(r)}
            for_s = rc.get("for", tenant)
            inst = book.active(self.name, THROTTLED, subj, labels, start, end, for_s)
            if inst is None or inst.state != FIRING:
                continue
            share = r["throttled_s"] / r["observed_s"] if r["observed_s"] else None
            inst.value = share
            temp = f", max temperature {r['temp_max_c']:.0f} °C" if r["temp_max_c"] else ""
            power = f", mean power {r['power_w_mean']:.0f} W" if r["power_w_mean"] else ""
            inst.annotations = {
                "summary": f"{gpu_name(labels)} throttled for "
                           f"{format_duration(end - inst.active_since)}",
                "description": (
                    f"Clocks held down (thermal or power) for {pct(share)} of the last "
                    f"{r['_minutes']} busy minute(s) since {hhmm(inst.active_since)}{temp}"
                    f"{power}; threshold {pct(rc.get('min_ratio', tenant))} of each minute "
                    f"for {format_duration(for_s)}."),
            }


# -- xid ---------------------------------------------------------------------------------------
class XidRule:
    name = "xid"

    def observe(self, rows: pl.DataFrame, ctx: Context) -> None:
        rc = ctx.cfg.rules[self.name]
        book = ctx.book
        f = rows.with_columns(_gpu_subject(), pl.col("minute").dt.epoch("s").alias("_m"))
        # Latest minute seen per GPU: XIDs not repeated for clear_after are resolved.
        latest = dict(f.group_by("_subj").agg(pl.col("_m").max()).iter_rows())
        hits = f.filter(pl.col("xid_count") > 0).sort(["_subj", "_m"])
        for r in hits.iter_rows(named=True):
            tenant, code = r["tenant"], int(r["xid_last"]) if r["xid_last"] is not None else -1
            self._clear(book, rc, r["_subj"], float(r["_m"]))
            if not rc.get("enabled", tenant) or code in rc.get("ignore_codes", tenant):
                continue
            critical = rc.get("critical_codes", tenant)
            critical = CRITICAL_CODES if critical is None else critical
            labels = {"severity": "critical" if code in critical else rc.get("severity", tenant),
                      **gpu_labels(r), "xid": str(code)}
            subj = f"{r['_subj']}#xid{code}"
            start = float(r["_m"])
            inst = book.active(self.name, XID, subj, labels, start, start + 60, 0.0)
            if inst is None:
                continue
            inst.value = float(code)
            what = meaning(code)
            inst.annotations = {
                "summary": f"XID {code} on {gpu_name(labels)}: {what}",
                "description": (
                    f"{labels['model']} {labels['uuid']} reported XID {code} ({what}) "
                    f"{r['xid_count']} time(s) in the minute of {hhmm(start)}; first seen "
                    f"{hhmm(inst.active_since)}. Resolves after "
                    f"{format_duration(rc.get('clear_after', tenant))} without it."),
            }
        for inst in book.of_rule(self.name):
            gpu = inst.key.split("|", 1)[1].rsplit("#", 1)[0]
            if gpu in latest:
                self._clear(book, rc, gpu, float(latest[gpu]) + 60, inst)

    @staticmethod
    def _clear(book: AlertBook, rc: RuleConfig, gpu: str, now: float,
               only: Instance | None = None) -> None:
        for inst in [only] if only else book.of_rule("xid"):
            if inst.key.split("|", 1)[1].rsplit("#", 1)[0] != gpu:
                continue
            clear_at = inst.last_at + rc.get("clear_after", inst.labels.get("tenant"))
            if now >= clear_at:
                book.end(inst, clear_at)


# -- low_mfu -----------------------------------------------------------------------------------
@dataclass
class _TenantWindow:
    first_seen: float
    minutes: dict[int, list[float]] = field(default_factory=dict)  # minute -> [mfu, basis, busy]


class LowMfuRule:
    name = "low_mfu"

    def __init__(self) -> None:
        self.tenants: dict[str, _TenantWindow] = {}

    def to_state(self) -> dict:
        return {t: {"first_seen": w.first_seen,
                    "minutes": {str(m): v for m, v in w.minutes.items()}}
                for t, w in self.tenants.items()}

    def load_state(self, data: dict) -> None:
        self.tenants = {t: _TenantWindow(d["first_seen"],
                                         {int(m): v for m, v in d["minutes"].items()})
                        for t, d in data.items()}

    def observe(self, rows: pl.DataFrame, ctx: Context) -> None:
        rc = ctx.cfg.rules[self.name]
        if not rc.enabled:
            return
        agg = (rows.filter(pl.col("tenant").is_not_null())
               .with_columns(pl.col("minute").dt.epoch("s").alias("_m"))
               .group_by(["tenant", "_m"])
               .agg(pl.col("mfu_s").sum(), pl.col("mfu_basis_s").sum(),
                    pl.col("mfu_busy_basis_s").sum())
               .sort("_m"))
        if agg.height == 0:
            return
        for tenant, m, mfu, basis, busy in agg.iter_rows():
            w = self.tenants.setdefault(tenant, _TenantWindow(first_seen=float(m)))
            w.first_seen = min(w.first_seen, float(m))
            acc = w.minutes.setdefault(int(m), [0.0, 0.0, 0.0])
            acc[0] += mfu or 0.0
            acc[1] += basis or 0.0
            acc[2] += busy or 0.0
        window = rc.values["window"]
        touched = set(agg["tenant"].unique().to_list())
        open_ = {i.labels.get("tenant") for i in ctx.book.of_rule(self.name)}
        for end in sorted({int(m) + 60 for m in agg["_m"].unique().to_list()}):
            for tenant in sorted(touched | open_):
                if tenant in self.tenants:
                    self._evaluate(ctx.book, rc, tenant, float(end), window)
        horizon = int(agg["_m"].max()) - window
        for t, w in list(self.tenants.items()):
            w.minutes = {m: v for m, v in w.minutes.items() if m >= horizon}
            if not w.minutes and t not in open_:
                del self.tenants[t]

    def _evaluate(self, book: AlertBook, rc: RuleConfig, tenant: str, end: float,
                  window: float) -> None:
        w = self.tenants[tenant]
        if not rc.get("enabled", tenant):
            book.inactive(LOW_MFU, tenant, end)
            return
        mfu = basis_all = basis_busy = 0.0
        for m, (a, b, c) in w.minutes.items():
            if end - window <= m < end:
                mfu += a
                basis_all += b
                basis_busy += c
        basis = basis_busy if rc.get("basis", tenant) == "busy" else basis_all
        if w.first_seen > end - window or basis < rc.get("min_basis", tenant) or basis <= 0:
            book.inactive(LOW_MFU, tenant, end)  # not enough data to judge: not low
            return
        ratio = mfu / basis
        threshold = rc.get("threshold", tenant)
        if ratio >= threshold:
            book.inactive(LOW_MFU, tenant, end)
            return
        labels = {"severity": rc.get("severity", tenant), "tenant": tenant}
        inst = book.active(self.name, LOW_MFU, tenant, labels, end, end, rc.get("for", tenant))
        if inst is None:
            return
        inst.value = ratio
        inst.annotations = {
            "summary": f"Tenant {tenant} MFU {pct(ratio)} over the last "
                       f"{format_duration(window)} (threshold {pct(threshold)})",
            "description": (
                f"MFU estimate of {tenant} ({rc.get('basis', tenant)} basis) from "
                f"{hhmm(end - window)} to {hhmm(end)}: {mfu / 3600:.2f} MFU-GPU-hours over "
                f"{basis / 3600:.2f} GPU-hours = {pct(ratio)}; below {pct(threshold)} since "
                f"{hhmm(inst.active_since)}."),
        }


# -- stale -------------------------------------------------------------------------------------
class StaleRule:
    """GpuStale: a GPU missing from its node's minutes (event time, from rollups).
    NodeStale: no sample from a node for N x its interval (processing time, flush hook)."""

    name = "stale"

    def __init__(self) -> None:
        self.gpus: dict[str, dict] = {}   # subject -> {node, last, interval, labels}
        self.node_minute: dict[str, float] = {}  # node -> newest closed minute
        self.nodes: dict[str, dict] = {}  # node -> {arrival (wall), interval, labels}

    def to_state(self) -> dict:
        return {"gpus": self.gpus, "node_minute": self.node_minute, "nodes": self.nodes}

    def load_state(self, data: dict) -> None:
        self.gpus = data.get("gpus", {})
        self.node_minute = data.get("node_minute", {})
        self.nodes = data.get("nodes", {})

    def _threshold(self, rc: RuleConfig, interval: float) -> float:
        return max(rc.values["intervals"] * interval, rc.values["min_after"])

    def observe(self, rows: pl.DataFrame, ctx: Context, now: float) -> None:
        rc = ctx.cfg.rules[self.name]
        f = rows.with_columns(_gpu_subject(), pl.col("minute").dt.epoch("s").alias("_m"),
                              (pl.col("observed_s") / pl.col("samples").cast(pl.Float64))
                              .alias("_interval"))
        per_gpu = (f.sort("_m").group_by("_subj")
                   .agg(pl.col("_m").min().alias("_first"), pl.col("_m").max().alias("_last"),
                        pl.col("_interval").last(),
                        pl.col("node", "gpu", "uuid", "model", "tenant", "mig_instance",
                               "cluster").last()))
        book = ctx.book
        for r in per_gpu.iter_rows(named=True):
            subj, node = r["_subj"], r["node"]
            g = self.gpus.get(subj)
            if g is not None and r["_last"] <= g["last"]:
                continue  # an older minute: nothing new about this GPU
            self.gpus[subj] = {"node": node, "last": float(r["_last"]),
                               "interval": float(r["_interval"] or 60.0),
                               "labels": gpu_labels(r)}
            self.node_minute[node] = max(self.node_minute.get(node, 0.0), float(r["_last"]))
            inst = book.get(GPU_STALE, subj)
            if inst is not None:
                book.end(inst, float(r["_first"]))
            n = self.nodes.setdefault(node, {"arrival": now, "interval": 60.0})
            n["interval"] = float(r["_interval"] or 60.0)
            if r["cluster"]:
                n["cluster"] = r["cluster"]
        if not rc.enabled:
            return
        touched = set(per_gpu["node"].unique().to_list())
        for subj, g in list(self.gpus.items()):
            if g["node"] not in touched:
                continue
            gap = self.node_minute[g["node"]] - g["last"]
            threshold = self._threshold(rc, g["interval"])
            if gap >= rc.values["forget_after"]:
                inst = book.get(GPU_STALE, subj)
                if inst is not None:
                    book.end(inst, g["last"] + 60 + rc.values["forget_after"])
                del self.gpus[subj]
            elif gap >= threshold:
                labels = {"severity": rc.values["severity"], **g["labels"]}
                since, at = g["last"] + 60, self.node_minute[g["node"]] + 60
                inst = book.active(self.name, GPU_STALE, subj, labels, since, at, threshold)
                if inst is not None:
                    inst.value = at - since
                    inst.annotations = {
                        "summary": f"{gpu_name(labels)} sends no samples "
                                   f"({format_duration(at - since)})",
                        "description": (
                            f"{labels['model']} {labels['uuid']}: last minute with data "
                            f"{hhmm(g['last'])}; its node {g['node']} has data up to "
                            f"{hhmm(self.node_minute[g['node']])}. Stale after "
                            f"{format_duration(threshold)} (max of {rc.values['intervals']:g}"
                            f" x {format_duration(g['interval'])} interval and min_after)."),
                    }

    def tick(self, ctx: Context, now: float, watch_start: float,
             arrivals: dict[str, float]) -> None:
        """Processing-time check of every known node; `arrivals` = node -> newest sample
        arrival (wall clock) reported by the pipeline's windows."""
        rc = ctx.cfg.rules[self.name]
        book = ctx.book
        for node, t in arrivals.items():
            n = self.nodes.setdefault(node, {"arrival": t, "interval": 60.0})
            if t > n["arrival"]:
                n["arrival"] = t
                inst = book.get(NODE_STALE, node)
                if inst is not None:
                    book.end(inst, t)
        if not rc.enabled:
            for inst in book.of_rule(self.name):
                book.end(inst, now)
            return
        for node, n in list(self.nodes.items()):
            # Nothing can be called stale for longer than this process has been watching.
            gap = now - max(n["arrival"], watch_start)
            threshold = self._threshold(rc, n["interval"])
            inst = book.get(NODE_STALE, node)
            if now - n["arrival"] >= rc.values["forget_after"] and gap >= threshold:
                if inst is not None:
                    book.end(inst, now)
                del self.nodes[node]
            elif gap >= threshold:
                labels = {"severity": rc.values["severity"], "node": node}
                if n.get("cluster"):
                    labels["cluster"] = n["cluster"]
                inst = book.active(self.name, NODE_STALE, node, labels, n["arrival"], now, 0.0)
                if inst is not None:
                    silent = now - n["arrival"]
                    inst.value = silent
                    inst.annotations = {
                        "summary": f"Node {node} sends no samples "
                                   f"({format_duration(silent)})",
                        "description": (
                            f"Last sample from {node} reached the pipeline at "
                            f"{hhmm(n['arrival'])} (processing time), "
                            f"{format_duration(silent)} ago; stale after "
                            f"{format_duration(threshold)} ({rc.values['intervals']:g} x "
                            f"{format_duration(n['interval'])} interval, at least "
                            f"{format_duration(rc.values['min_after'])})."),
                    }
            elif inst is not None:
                book.end(inst, n["arrival"])


# -- pipeline health ---------------------------------------------------------------------------
@dataclass
class Health:
    """What the pipeline says about itself at one flush."""

    now: float
    samples_total: int
    dead_letters_total: int
    lag: int | None  # messages behind the high watermark; None when not known
    topic: str = ""
    group: str = ""


class PipelineRule:
    name = "pipeline"

    def __init__(self) -> None:
        self.history: deque[tuple[float, int, int]] = deque()

    def tick(self, ctx: Context, h: Health) -> None:
        rc = ctx.cfg.rules[self.name]
        book = ctx.book
        if not rc.enabled:
            for inst in book.of_rule(self.name):
                book.end(inst, h.now)
            return
        labels = {"severity": rc.values["severity"]}
        if h.topic:
            labels["topic"] = h.topic
        if h.group:
            labels["group"] = h.group
        subject = f"{h.topic}/{h.group}"
        if h.lag is not None:
            if h.lag >= rc.values["max_lag"]:
                inst = book.active(self.name, LAG, subject, labels, h.now, h.now,
                                   rc.values["lag_for"])
                if inst is not None:
                    inst.value = float(h.lag)
                    inst.annotations = {
                        "summary": f"Pipeline {h.lag:,} messages behind on {h.topic}",
                        "description": (
                            f"Consumer group {h.group} is {h.lag:,} messages behind the high "
                            f"watermark of {h.topic} (threshold {rc.values['max_lag']:,}) "
                            f"since {hhmm(inst.active_since)}."),
                    }
            else:
                book.inactive(LAG, subject, h.now)
        # Counters restart with the process: a drop means a new process, start afresh.
        if self.history and (h.samples_total < self.history[-1][1]
                             or h.dead_letters_total < self.history[-1][2]):
            self.history.clear()
        self.history.append((h.now, h.samples_total, h.dead_letters_total))
        window = rc.values["dead_letter_window"]
        while len(self.history) > 2 and self.history[1][0] <= h.now - window:
            self.history.popleft()
        if len(self.history) < 2:
            return
        t0, s0, d0 = self.history[0]
        dead, good = h.dead_letters_total - d0, h.samples_total - s0
        ratio = dead / (dead + good) if dead + good else 0.0
        if dead >= rc.values["min_dead_letters"] and ratio >= rc.values["max_dead_letter_ratio"]:
            inst = book.active(self.name, DEAD_LETTERS, subject, labels, h.now, h.now,
                               rc.values["dead_letter_for"])
            if inst is not None:
                inst.value = ratio
                inst.annotations = {
                    "summary": f"Pipeline dead-letters {pct(ratio)} of its input",
                    "description": (
                        f"{dead:,} of {dead + good:,} sample lines went to the dead-letter "
                        f"topic in the last {format_duration(h.now - t0)} (threshold "
                        f"{pct(rc.values['max_dead_letter_ratio'])}, at least "
                        f"{rc.values['min_dead_letters']} lines)."),
                }
        else:
            book.inactive(DEAD_LETTERS, subject, h.now)
