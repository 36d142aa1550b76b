"""`fleetlens report weekly`: the numbers of the weekly utilization report (one ISO week, UTC).

The per-tenant core figures come from `report range` itself (sql/report_range_*.sql), so the
weekly report, `report range` and the API agree by construction; everything else is in
sql/weekly_*.sql. Rendering is in pipeline/weekly_render.py, charts in pipeline/charts.py.
Definitions (coverage, hints, HHI, pricing): docs/weekly-report.md.
"""

from __future__ import annotations

import math
import re
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from fleetlens.pipeline.catalog import load_catalog
from fleetlens.pipeline.query import connect, query
from fleetlens.pipeline.report import ReportError, range_figures

from fleetlens.config import PricingConfig
from fleetlens.times import rfc3339

VERSION = "fleetlens.weekly.v1"
COVERAGE_THRESHOLD = 0.95
# Right-sizing hints (docs/weekly-report.md).
HINT_MIN_HOURS = 24.0          # an allocation is judged only after a day of samples
HINT_IDLE_SHARE = 0.5          # idle for at least half of its observed allocated time
HINT_SM_ACTIVE_MAX = 0.30      # mean SM activity below this ...
HINT_FB_SHARE_MAX = 0.5        # ... and peak memory at most half of the GPU's
TOP_IDLE = 5
STEPS = 5  # progress steps of weekly_report()
HEADLINE = ["gpu_hours_available", "gpu_hours_allocated", "gpu_hours_busy", "gpu_hours_idle",
            "gpu_hours_idle_held", "gpu_hours_low_efficiency", "gpu_hours_unavailable",
            "gpu_hours_unallocated", "gpu_hours_observed", "mfu_fleet", "mfu_fleet_busy",
            "energy_kwh", "avg_power_kw", "avg_power_w_per_gpu"]
DEAD_LETTER_NOTE = ("late and dead-lettered samples are not stored in the store (they go to "
                    "the Kafka dead-letter topic); count them there")


class Progress:
    """A one-line progress bar on a terminal; silent when stderr is not a TTY."""

    def __init__(self, total: int, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.done = total, 0

    def step(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            n = round(30 * self.done / self.total)
            self.stream.write(f"\r[{'#' * n}{'.' * (30 - n)}] {self.done}/{self.total} "
                              f"{label:<28}")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()


def parse_week(text: str, now: datetime | None = None) -> tuple[str, datetime, datetime]:
    """'2026-W47' or 'last' -> (label, Monday 00:00 UTC, next Monday 00:00 UTC)."""
    text = text.strip()
    if text == "last":
        now = now or datetime.now(UTC)
        y, w, _ = (now.date() - timedelta(days=7)).isocalendar()
    else:
        m = re.fullmatch(r"(\d{4})-W(\d{2})", text)
        if not m:
            raise ReportError(f"--week {text!r} is not an ISO week like 2026-W47, or 'last'")
        y, w = int(m.group(1)), int(m.group(2))
    try:
        monday = date.fromisocalendar(y, w, 1)
    except ValueError:
        raise ReportError(f"--week {text!r}: {y} has no ISO week {w}") from None
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    return f"{y}-W{w:02d}", start, start + timedelta(days=7)


def price_of(pricing: PricingConfig, model_key: str | None) -> float:
    if model_key is not None and model_key in pricing.models:
        return pricing.models[model_key]
    return pricing.default_usd_per_gpu_hour


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


def _connect(store_dir: str):
    con = connect(store_dir)
    # DuckDB draws its own progress bar on long queries, TTY or not: this report draws one.
    con.execute("SET enable_progress_bar = false")
    return con


def _range(con, start: datetime, end: datetime, gpus_per_node: int) -> dict:
    """Exactly what report.range_report computes (same function, same SQL files)."""
    return range_figures(con, start, end, None, gpus_per_node)


def _totals(gpus: list[dict]) -> dict:
    """The fleet totals of weekly_totals.sql, from weekly_gpus.sql rows."""
    return {"gpus": len({(g["uuid"], g["mig_instance"]) for g in gpus}),
            **{k: sum(g[k] for g in gpus) for k in ("observed_s", "energy_j", "mfu_s",
                                                    "mfu_basis_s", "mfu_busy_basis_s")}}


def _week(store_dir: str, start: datetime, end: datetime, gpus_per_node: int,
          per_gpu: bool) -> tuple[dict, dict, list[dict] | None]:
    """(headline figures, the range report, per-GPU rows or None) of one week."""
    con = _connect(store_dir)
    try:
        rng = _range(con, start, end, gpus_per_node)
        p = {"t_from": _naive(start), "t_to": _naive(end)}
        if per_gpu:
            gpus = query(con, "weekly_gpus", p)
            totals = _totals(gpus)
        else:
            gpus, totals = None, query(con, "weekly_totals", p)[0]
    finally:
        con.close()
    return _headline(rng, totals, (end - start).total_seconds() / 3600), rng, gpus


def _headline(rng: dict, tot: dict, week_h: float) -> dict:
    t = rng["tenants"]
    return {
        # GPUs (and MIG instances) that sent at least one sample in the week x its length.
        "gpu_hours_available": tot["gpus"] * week_h,
        "gpu_hours_allocated": sum(r["gpu_hours_allocated"] for r in t),
        "gpu_hours_busy": sum(r["gpu_hours_busy"] for r in t),
        "gpu_hours_idle": sum(r["gpu_hours_idle"] for r in t),
        "gpu_hours_idle_held": sum(r["gpu_hours_idle_held"] for r in t),
        "gpu_hours_low_efficiency": sum(r["gpu_hours_low_efficiency"] for r in t),
        "gpu_hours_unavailable": rng["fleet"]["gpu_hours_unavailable"],
        "gpu_hours_unallocated": rng["fleet"]["gpu_hours_unallocated"],
        "gpu_hours_observed": rng["fleet"]["gpu_hours_observed"],
        "mfu_fleet": _ratio(tot["mfu_s"], tot["mfu_basis_s"]),
        "mfu_fleet_busy": _ratio(tot["mfu_s"], tot["mfu_busy_basis_s"]),
        "energy_kwh": tot["energy_j"] / 3.6e6,
        "avg_power_kw": tot["energy_j"] / 3.6e6 / week_h,
        "avg_power_w_per_gpu": _ratio(tot["energy_j"], tot["observed_s"]),
    }


def _week_over_week(cur: dict, prev: dict) -> dict:
    out = {}
    for k in HEADLINE:
        a, b = cur[k], prev[k]
        if a is None or b is None:
            out[k] = {"delta": None, "change": None}
        else:
            out[k] = {"delta": a - b, "change": (a - b) / b if b else None}
    return out


def _group(gpus: list[dict], key: str, week_h: float) -> list[dict]:
    """Fleet figures by GPU model (model_key; unknown models by name) or by cluster."""
    acc: dict = defaultdict(lambda: defaultdict(float))
    members: dict = defaultdict(set)
    for g in gpus:
        k = (g["model_key"] or g["model"]) if key == "model" else g["cluster"]
        a = acc[k]
        for c in ("observed_s", "busy_s", "idle_s", "energy_j", "mfu_s", "mfu_basis_s",
                  "mfu_busy_basis_s"):
            a[c] += g[c] or 0.0
        if g["tenant"] is not None:
            a["allocated_s"] += g["observed_s"]
        members[k].add((g["uuid"], g["mig_instance"]))
        a["_known"] = a["_known"] or (g["model_key"] is not None)
    rows = []
    for k in sorted(acc, key=lambda v: (v is None, v or "")):
        a = acc[k]
        row = {key if key == "cluster" else "model": k}
        if key == "model":
            row["known_model"] = bool(a["_known"])
        row.update({
            "gpus": len(members[k]),
            "gpu_hours_available": len(members[k]) * week_h,
            "gpu_hours_observed": a["observed_s"] / 3600,
            "gpu_hours_allocated_observed": a["allocated_s"] / 3600,
            "gpu_hours_busy": a["busy_s"] / 3600,
            "gpu_hours_idle": a["idle_s"] / 3600,
            "mfu": _ratio(a["mfu_s"], a["mfu_basis_s"]),
            "mfu_busy": _ratio(a["mfu_s"], a["mfu_busy_basis_s"]),
            "energy_kwh": a["energy_j"] / 3.6e6,
        })
        rows.append(row)
    return rows


def _per_allocation(gpus: list[dict], tenant: str) -> list[dict]:
    """A tenant's GPUs (node, gpu, MIG instance) with their week's figures."""
    acc: dict = {}
    for g in gpus:
        if g["tenant"] != tenant:
            continue
        k = (g["node"], g["gpu"], g["mig_instance"])
        a = acc.setdefault(k, {"node": g["node"], "gpu": g["gpu"],
                               "mig_instance": g["mig_instance"], "model_key": g["model_key"],
                               "observed_s": 0.0, "idle_s": 0.0, "idle_held_s": 0.0,
                               "_sm_x": 0.0, "_sm_s": 0.0, "fb_used_max_mib": None})
        a["observed_s"] += g["observed_s"]
        a["idle_s"] += g["idle_s"]
        a["idle_held_s"] += g["idle_held_s"]
        a["model_key"] = a["model_key"] or g["model_key"]
        if g["sm_active_mean"] is not None:
            a["_sm_x"] += g["sm_active_mean"] * g["observed_s"]
            a["_sm_s"] += g["observed_s"]
        if g["fb_used_max_mib"] is not None:
            a["fb_used_max_mib"] = max(a["fb_used_max_mib"] or 0.0, g["fb_used_max_mib"])
    for a in acc.values():
        a["sm_active_mean"] = _ratio(a.pop("_sm_x"), a.pop("_sm_s"))
    return sorted(acc.values(), key=lambda a: (a["node"], a["gpu"], a["mig_instance"] or -1))


def _top_idle(allocs: list[dict]) -> list[dict]:
    rows = [{"node": a["node"], "gpu": a["gpu"], "mig_instance": a["mig_instance"],
             "gpu_hours_idle": a["idle_s"] / 3600,
             "gpu_hours_idle_held": a["idle_held_s"] / 3600,
             "idle_held": a["idle_held_s"] * 2 >= a["idle_s"],
             "idle_share": a["idle_s"] / a["observed_s"]}
            for a in allocs if a["idle_s"] > 0]
    rows.sort(key=lambda r: (-r["gpu_hours_idle"], r["node"], r["gpu"]))
    return rows[:TOP_IDLE]


def _hints(allocs: list[dict]) -> list[dict]:
    catalog = load_catalog()
    hints = []
    for a in allocs:
        hours = a["observed_s"] / 3600
        if hours < HINT_MIN_HOURS:
            continue
        where = {"node": a["node"], "gpu": a["gpu"], "mig_instance": a["mig_instance"]}
        share = a["idle_s"] / a["observed_s"]
        if share >= HINT_IDLE_SHARE:
            hints.append({"kind": "idle_most_of_week", **where, "idle_share": share,
                          "gpu_hours_idle": a["idle_s"] / 3600,
                          "text": f"{a['node']} GPU {a['gpu']} was idle {100 * share:.0f}% "
                                  f"of the {hours:.0f} h it was held: release it or share it"})
        spec = catalog.get(a["model_key"]) if a["model_key"] else None
        sm, fb = a["sm_active_mean"], a["fb_used_max_mib"]
        if (spec is None or spec.mem_gb is None or a["mig_instance"] is not None or sm is None
                or fb is None):
            continue
        mem_mib = spec.mem_gb * 1024
        if sm < HINT_SM_ACTIVE_MAX and fb <= HINT_FB_SHARE_MAX * mem_mib:
            sevenths = max(1, math.ceil(fb / (mem_mib / 7)))
            if sevenths <= 3:
                suggestion = (f"a {sevenths}/7 MIG slice (~{spec.mem_gb * sevenths / 7:.0f} GB)")
            else:
                suggestion = f"a GPU with half the memory (~{spec.mem_gb / 2:.0f} GB)"
                sevenths = None
            hints.append({"kind": "fits_smaller", **where, "model_key": a["model_key"],
                          "sm_active_mean": sm, "fb_used_max_gib": fb / 1024,
                          "gpu_memory_gb": spec.mem_gb, "mig_sevenths": sevenths,
                          "text": f"{a['node']} GPU {a['gpu']} ({a['model_key']}): SM active "
                                  f"{100 * sm:.0f}% on average and at most {fb / 1024:.1f} GiB "
                                  f"of {spec.mem_gb:g} GB used: fits {suggestion}"})
    return hints


def _concentration(tenants: list[dict]) -> dict:
    total = sum(t["gpu_hours_allocated"] for t in tenants)
    shares = sorted(({"tenant": t["tenant"], "gpu_hours_allocated": t["gpu_hours_allocated"],
                      "share": t["gpu_hours_allocated"] / total if total else None}
                     for t in tenants), key=lambda r: (-r["gpu_hours_allocated"], r["tenant"]))
    s = [r["share"] for r in shares if r["share"] is not None]
    return {"shares": shares,
            "top1_tenant": shares[0]["tenant"] if s else None,
            "top1_share": s[0] if s else None,
            "top2_share": sum(s[:2]) if s else None,
            # Herfindahl-Hirschman index on the usual 0..10,000 scale (shares in percent).
            "hhi": sum((100 * x) ** 2 for x in s) if s else None}


def weekly_report(store_dir: str, week: str = "last", tenant: str | None = None,
                  pricing: PricingConfig | None = None, gpus_per_node: int = 8,
                  progress: Progress | None = None, now: datetime | None = None) -> dict:
    pricing = pricing or PricingConfig()
    progress = progress or Progress(STEPS, enabled=False)
    label, start, end = parse_week(week, now)
    week_h = (end - start).total_seconds() / 3600
    # One week after the other: DuckDB already uses every core for each query, and two
    # connections running at once were slower (measured with benchmarks/weekly_bench.py).
    head, rng, gpus = _week(store_dir, start, end, gpus_per_node, True)
    seen = _totals(gpus)["gpus"]
    progress.step("this week")
    prev = _week(store_dir, start - timedelta(days=7), start, gpus_per_node, False)[0]
    progress.step("previous week")
    con = _connect(store_dir)
    p = {"t_from": _naive(start), "t_to": _naive(end)}
    daily = query(con, "weekly_daily", p)
    for d in daily:
        d["day"] = d["day"].isoformat()
    hist_rows = query(con, "weekly_mfu_hist", {**p, "tenant": tenant})
    ledger = {r["tenant"]: r for r in query(con, "weekly_ledger_coverage",
                                            {**p, "tenant": tenant,
                                             "gpus_per_node": gpus_per_node})}
    progress.step("daily, MFU, coverage")

    hist: dict = defaultdict(lambda: [0.0] * 10)
    for r in hist_rows:
        hist[r["tenant"]][r["bucket"]] += r["gpu_hours"]

    coverage = _ratio(head["gpu_hours_observed"], head["gpu_hours_available"])
    fleet_low = coverage is not None and coverage < COVERAGE_THRESHOLD
    by_tenant: dict = defaultdict(list)
    for g in gpus:
        by_tenant[g["tenant"]].append(g)
    money_rows, tenant_rows, cov_rows = [], [], []
    for t in rng["tenants"]:
        if tenant is not None and t["tenant"] != tenant:
            continue
        name = t["tenant"]
        mine = by_tenant[name]
        observed_h = sum(g["observed_s"] for g in mine) / 3600
        unseen_h = max(0.0, t["gpu_hours_allocated"] - observed_h)
        billed = sum(g["observed_s"] / 3600 * price_of(pricing, g["model_key"]) for g in mine) \
            + unseen_h * pricing.default_usd_per_gpu_hour
        money_rows.append({
            "tenant": name, "billed": billed,
            "used": sum(g["busy_s"] / 3600 * price_of(pricing, g["model_key"]) for g in mine),
            "idle_cost": sum(g["idle_s"] / 3600 * price_of(pricing, g["model_key"])
                             for g in mine)})
        lr = ledger.get(name)
        cov = _ratio(lr["observed_s"], lr["ledger_s"]) if lr else None
        cov_rows.append({"tenant": name,
                         "ledger_gpu_hours": lr["ledger_s"] / 3600 if lr else None,
                         "observed_gpu_hours": lr["observed_s"] / 3600 if lr else None,
                         "coverage": cov})
        allocs = _per_allocation(mine, name)
        tenant_rows.append({**t, "coverage": cov,
                            "low_coverage": cov is not None and cov < COVERAGE_THRESHOLD,
                            "mfu_histogram": hist[name], "top_idle": _top_idle(allocs),
                            "hints": _hints(allocs)})
    progress.step("tenants")

    prices = sorted({g["model_key"] for g in gpus if g["model_key"]})
    money = {
        "currency": pricing.currency,
        "default_per_gpu_hour": pricing.default_usd_per_gpu_hour,
        "prices": [{"model_key": k, "per_gpu_hour": price_of(pricing, k)} for k in prices],
        "tenants": money_rows,
        "billed_total": sum(r["billed"] for r in money_rows),
        "used_total": sum(r["used"] for r in money_rows),
        "idle_cost_total": sum(r["idle_cost"] for r in money_rows),
        "unallocated_cost": sum(g["observed_s"] / 3600 * price_of(pricing, g["model_key"])
                                for g in gpus if g["tenant"] is None),
    }
    report = {
        "report": VERSION, "week": label,
        "from": rfc3339(start), "to": rfc3339(end),
        "tenant_filter": tenant,
        "fleet": {"headline": head, "previous_week": prev,
                  "week_over_week": _week_over_week(head, prev), "low_coverage": fleet_low,
                  "by_model": _group(gpus, "model", week_h),
                  "by_cluster": _group(gpus, "cluster", week_h)},
        "daily": daily,
        "money": money,
        "tenants": tenant_rows,
        "concentration": _concentration(rng["tenants"]),
        "data_quality": {
            "coverage_threshold": COVERAGE_THRESHOLD,
            "gpus_seen": seen,
            "expected_gpu_hours": head["gpu_hours_available"],
            "observed_gpu_hours": head["gpu_hours_observed"],
            "coverage": coverage, "low_coverage": fleet_low,
            "tenants": cov_rows,
            "late_samples": None, "dead_lettered_samples": None,
            "dead_letter_note": DEAD_LETTER_NOTE,
            "unknown_models": rng["fleet"]["unknown_models"]},
    }
    if tenant is not None:
        # A tenant's report shows nothing about other tenants or the operator's fleet.
        report["fleet"] = report["daily"] = report["concentration"] = None
        report["money"]["unallocated_cost"] = None
        dq = report["data_quality"]
        for k in ("gpus_seen", "expected_gpu_hours", "observed_gpu_hours", "coverage",
                  "low_coverage", "unknown_models"):
            dq[k] = None
        report["money"]["prices"] = [r for r in money["prices"]
                                     if any(g["model_key"] == r["model_key"] and
                                            g["tenant"] == tenant for g in gpus)]
    progress.step("assembled")
    return report
