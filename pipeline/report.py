"""`fleetlens report range`: per-tenant and fleet figures for a time range, from sql/.

The JSON shape is a contract other tools build on:

    {"from": ..., "to": ..., "fleet": {"gpu_hours_observed", "gpu_hours_unallocated",
     "unknown_models": [...]}, "tenants": [{"tenant", "gpu_hours_allocated", "gpu_hours_busy",
     "gpu_hours_idle", "gpu_hours_idle_held", "mfu_allocated", "mfu_busy", "energy_kwh"}, ...]}
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from fleetlens.pipeline.query import connect, query, range_params

from fleetlens.times import rfc3339

TENANT_COLUMNS = ["tenant", "gpu_hours_allocated", "gpu_hours_busy", "gpu_hours_idle",
                  "gpu_hours_idle_held", "gpu_hours_unavailable", "gpu_hours_low_efficiency",
                  "mfu_allocated", "mfu_busy", "mfu_reported", "energy_kwh"]


class ReportError(ValueError):
    pass


def parse_when(text: str, what: str) -> datetime:
    """RFC 3339 time or a YYYY-MM-DD date (midnight UTC) -> aware UTC datetime."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"--{what} {text!r} is not an RFC 3339 time or a YYYY-MM-DD date") \
            from None
    if dt.tzinfo is None:
        if len(text.strip()) > 10:
            raise ReportError(f"--{what} {text!r} has no UTC offset (append 'Z' for UTC)")
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def range_report(store_dir: str, start: datetime, end: datetime, tenant: str | None = None,
                 gpus_per_node: int = 8) -> dict:
    if end <= start:
        raise ReportError("--to must be after --from")
    if end - start > timedelta(days=3660):
        raise ReportError("the range is longer than ten years")
    figures = range_figures(connect(store_dir), start, end, tenant, gpus_per_node)
    return {"from": rfc3339(start), "to": rfc3339(end), **figures}


def range_figures(con, start: datetime, end: datetime, tenant: str | None = None,
                  gpus_per_node: int = 8) -> dict:
    """{"fleet": ..., "tenants": [...]} for [start, end) on an open store connection: the
    one place that turns the report SQL into the report's figures (CLI, weekly report)."""
    params = {**range_params(start, end), "tenant": tenant, "gpus_per_node": gpus_per_node}
    fleet = query(con, "report_range_fleet", params)[0]
    # The fleet's unknown models, also in a one-tenant report (they are a fleet figure).
    fleet["unknown_models"] = query(con, "report_range_unknown_models",
                                    {**params, "tenant": None})
    return {"fleet": fleet, "tenants": query(con, "report_range_tenants", params)}


def workloads_report(store_dir: str, start: datetime, end: datetime,
                     tenant: str | None = None) -> dict:
    if end <= start:
        raise ReportError("--to must be after --from")
    con = connect(store_dir)
    params = {"t_from": start.replace(tzinfo=None), "t_to": end.replace(tzinfo=None),
              "tenant": tenant}
    return {"from": rfc3339(start), "to": rfc3339(end),
            "workloads": query(con, "report_workloads", params)}


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def render(report: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, default=str) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        cols = ["scope", *TENANT_COLUMNS, "gpu_hours_observed", "gpu_hours_unallocated"]
        cols.remove("gpu_hours_unavailable")
        cols.append("gpu_hours_unavailable")
        w = csv.DictWriter(out, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for row in report["tenants"]:
            w.writerow({"scope": "tenant", **row})
        fleet = report["fleet"]
        w.writerow({"scope": "fleet", "gpu_hours_observed": fleet["gpu_hours_observed"],
                    "gpu_hours_unallocated": fleet["gpu_hours_unallocated"],
                    "gpu_hours_unavailable": fleet["gpu_hours_unavailable"]})
        return out.getvalue()
    if fmt == "table":
        return render_table(report)
    raise ReportError(f"unknown format {fmt!r} (table, json, csv)")


def render_table(report: dict) -> str:
    headers = ["tenant", "alloc h", "busy h", "idle h", "idle-held h", "unavail h",
               "low-eff h", "MFU alloc", "MFU busy", "MFU reported", "energy kWh"]
    rows = [[r["tenant"]] + [_fmt(r[c]) for c in TENANT_COLUMNS[1:7]]
            + [_pct(r["mfu_allocated"]), _pct(r["mfu_busy"]), _pct(r["mfu_reported"]),
               _fmt(r["energy_kwh"])]
            for r in report["tenants"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                            strict=True)))
    fleet = report["fleet"]
    out = [f"GPU utilization by tenant, {report['from']} .. {report['to']}", "",
           line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows] or ["(no tenant data in this range)"]
    out += ["", f"fleet: {_fmt(fleet['gpu_hours_observed'])} GPU-hours observed, "
                f"{_fmt(fleet['gpu_hours_unallocated'])} unallocated, "
                f"{_fmt(fleet['gpu_hours_unavailable'])} unavailable"]
    for m in fleet.get("unknown_models", []):
        out.append(f"unknown GPU model (no MFU): {m['model']!r}, {m['gpus']} GPUs, "
                   f"{_fmt(m['gpu_hours_observed'])} GPU-hours")
    return "\n".join(out) + "\n"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"
