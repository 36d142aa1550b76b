"""The weekly report as HTML (one self-contained file, inline SVG), Markdown, CSV (one file
per table) and JSON (every number). All four are built from the dict of weekly.weekly_report,
through the same table definitions, so they carry the same numbers."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from html import escape
from pathlib import Path

from fleetlens.pipeline import charts
from fleetlens.pipeline.weekly import COVERAGE_THRESHOLD, HEADLINE

FORMATS = ("html", "md", "csv", "json")
FLAG = "⚠"
FLAG_TITLE = f"built on less than {COVERAGE_THRESHOLD:.0%} data coverage"

LABELS = {
    "gpu_hours_available": "GPU-hours available", "gpu_hours_allocated": "GPU-hours allocated",
    "gpu_hours_busy": "GPU-hours busy", "gpu_hours_idle": "GPU-hours idle",
    "gpu_hours_idle_held": "GPU-hours idle-held",
    "gpu_hours_low_efficiency": "GPU-hours low-efficiency",
    "gpu_hours_unavailable": "GPU-hours unavailable",
    "gpu_hours_unallocated": "GPU-hours unallocated",
    "gpu_hours_observed": "GPU-hours observed", "mfu_fleet": "Fleet MFU estimate",
    "mfu_fleet_busy": "Fleet MFU estimate (busy)", "energy_kwh": "Energy (kWh)",
    "avg_power_kw": "Average power (kW)", "avg_power_w_per_gpu": "Average power per GPU (W)",
}


# -- value formatting ---------------------------------------------------------------------------
def num(v) -> str:
    return "-" if v is None else f"{v:,.1f}"


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def share(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def money(v) -> str:
    return "-" if v is None else f"{v:,.2f}"


def plain(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def headline_value(key: str, v) -> str:
    if key.startswith("mfu"):
        return pct(v)
    return "-" if v is None else f"{v:,.2f}" if key == "avg_power_kw" else num(v)


Col = tuple[str, str, Callable]  # header, key, formatter


# -- tables: (name, title, columns, rows) -------------------------------------------------------
def tables(r: dict) -> list[tuple[str, str, list[Col], list[dict]]]:
    out = []
    cur = r["money"]["currency"]
    if r["fleet"] is not None:
        f = r["fleet"]
        rows = [{"metric": k, "label": LABELS[k], "value": f["headline"][k],
                 "previous": f["previous_week"][k],
                 "delta": f["week_over_week"][k]["delta"],
                 "change": f["week_over_week"][k]["change"]} for k in HEADLINE]
        out.append(("headline", "Fleet headline figures", [
            ("figure", "label", plain), ("this week", "value", None),
            ("previous week", "previous", None), ("change", "delta", None),
            ("change %", "change", pct)], rows))
        model_cols: list[Col] = [
            ("GPUs", "gpus", plain), ("available h", "gpu_hours_available", num),
            ("observed h", "gpu_hours_observed", num),
            ("allocated (observed) h", "gpu_hours_allocated_observed", num),
            ("busy h", "gpu_hours_busy", num), ("idle h", "gpu_hours_idle", num),
            ("MFU", "mfu", pct), ("MFU busy", "mfu_busy", pct),
            ("energy kWh", "energy_kwh", num)]
        out.append(("by_model", "Fleet by GPU model", [("model", "model", plain),
                                                       ("in catalog", "known_model", plain),
                                                       *model_cols], f["by_model"]))
        out.append(("by_cluster", "Fleet by cluster", [("cluster", "cluster", plain),
                                                       *model_cols], f["by_cluster"]))
    if r["daily"] is not None:
        out.append(("daily", "GPU-hours per day and state", [
            ("day", "day", plain), ("busy", "busy", num), ("idle", "idle", num),
            ("idle-held", "idle_held", num), ("unavailable", "unavailable", num),
            ("unallocated", "unallocated", num)], r["daily"]))
    m = r["money"]
    money_rows = [dict(x) for x in m["tenants"]]
    out.append(("money", f"Money per tenant ({cur})", [
        ("tenant", "tenant", plain), ("billed (allocated)", "billed", money),
        ("used (busy)", "used", money), ("cost of idle", "idle_cost", money)], money_rows))
    out.append(("prices", f"Prices per GPU-hour ({cur})", [
        ("model", "model_key", plain), ("price", "per_gpu_hour", money)],
        [*m["prices"], {"model_key": "(default)", "per_gpu_hour": m["default_per_gpu_hour"]}]))
    out.append(("tenants", "Tenants", [
        ("tenant", "tenant", plain), ("allocated h", "gpu_hours_allocated", num),
        ("busy h", "gpu_hours_busy", num), ("idle h", "gpu_hours_idle", num),
        ("idle-held h", "gpu_hours_idle_held", num),
        ("low-eff h", "gpu_hours_low_efficiency", num),
        ("unavailable h", "gpu_hours_unavailable", num),
        ("MFU allocated", "mfu_allocated", pct), ("MFU busy", "mfu_busy", pct),
        ("MFU reported", "mfu_reported", pct), ("energy kWh", "energy_kwh", num),
        ("coverage", "coverage", pct), ("low coverage", "low_coverage", plain)],
        r["tenants"]))
    out.append(("top_idle", "Top idle allocations", [
        ("tenant", "tenant", plain), ("node", "node", plain), ("GPU", "gpu", plain),
        ("MIG", "mig_instance", plain), ("idle h", "gpu_hours_idle", num),
        ("idle-held h", "gpu_hours_idle_held", num), ("idle-held", "idle_held", plain),
        ("idle share", "idle_share", share)],
        [{"tenant": t["tenant"], **x} for t in r["tenants"] for x in t["top_idle"]]))
    out.append(("hints", "Right-sizing hints", [
        ("tenant", "tenant", plain), ("kind", "kind", plain), ("node", "node", plain),
        ("GPU", "gpu", plain), ("hint", "text", plain)],
        [{"tenant": t["tenant"], **x} for t in r["tenants"] for x in t["hints"]]))
    out.append(("mfu_histogram", "Busy GPU-hours by MFU estimate", [
        ("tenant", "tenant", plain), ("MFU from", "mfu_from", plain),
        ("MFU to", "mfu_to", plain), ("busy GPU-h", "gpu_hours", num)],
        [{"tenant": t["tenant"], "mfu_from": round(i / 10, 1), "mfu_to": round((i + 1) / 10, 1),
          "gpu_hours": v} for t in r["tenants"] for i, v in enumerate(t["mfu_histogram"])]))
    if r["concentration"] is not None:
        c = r["concentration"]
        out.append(("concentration", "Share of allocated GPU-hours", [
            ("tenant", "tenant", plain), ("allocated h", "gpu_hours_allocated", num),
            ("share", "share", share)], c["shares"]))
    dq = r["data_quality"]
    out.append(("coverage", "Data coverage per tenant (ledger tenants)", [
        ("tenant", "tenant", plain), ("ledger GPU-h", "ledger_gpu_hours", num),
        ("observed GPU-h", "observed_gpu_hours", num), ("coverage", "coverage", pct)],
        dq["tenants"]))
    if dq["unknown_models"] is not None:
        out.append(("unknown_models", "GPU models not in the catalog (no MFU)", [
            ("model", "model", plain), ("GPUs", "gpus", plain),
            ("observed GPU-h", "gpu_hours_observed", num)], dq["unknown_models"]))
    return out


def _cell(col: Col, row: dict, key_for_headline: str | None = None) -> str:
    _, key, fmt = col
    v = row.get(key)
    if fmt is None:  # headline value columns: the metric decides
        return headline_value(row["metric"], v)
    return fmt(v)


# -- CSV / JSON ---------------------------------------------------------------------------------
def render_csv(r: dict) -> dict[str, str]:
    """{table name: CSV text}; raw numbers, one file per table."""
    files = {}
    for name, _, cols, rows in tables(r):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        keys = [k for _, k, _ in cols if k != "label"]
        if name == "headline":
            keys = ["metric", "value", "previous", "delta", "change"]
        w.writerow(keys)
        for row in rows:
            w.writerow(["" if row.get(k) is None else row.get(k) for k in keys])
        files[name] = buf.getvalue()
    return files


def render_json(r: dict) -> str:
    return json.dumps(r, indent=2) + "\n"


# -- Markdown -----------------------------------------------------------------------------------
def render_md(r: dict) -> str:
    out = [f"# GPU utilization, week {r['week']}" +
           (f" — tenant {r['tenant_filter']}" if r["tenant_filter"] else ""), "",
           f"{r['from']} .. {r['to']} (UTC). {FLAG} = {FLAG_TITLE}.", ""]
    out += _summary_lines(r, md=True)
    for _, title, cols, rows in tables(r):
        out += [f"## {title}", ""]
        if not rows:
            out += ["(none)", ""]
            continue
        out.append("| " + " | ".join(h for h, _, _ in cols) + " |")
        out.append("|" + "|".join("---" for _ in cols) + "|")
        for row in rows:
            cells = [_cell(c, row) for c in cols]
            if row.get("low_coverage"):
                cells[0] += f" {FLAG}"
            out.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        out.append("")
    dq = r["data_quality"]
    out += [f"Late / dead-lettered samples: {dq['dead_letter_note']}.", ""]
    return "\n".join(out)


def _summary_lines(r: dict, md: bool) -> list[str]:
    lines = []
    if r["fleet"] is not None:
        h = r["fleet"]["headline"]
        flag = f" {FLAG}" if r["fleet"]["low_coverage"] else ""
        lines.append(f"Fleet: {num(h['gpu_hours_allocated'])} of "
                     f"{num(h['gpu_hours_available'])} GPU-hours allocated, "
                     f"{num(h['gpu_hours_busy'])} busy, {num(h['gpu_hours_idle'])} idle, "
                     f"fleet MFU estimate {pct(h['mfu_fleet'])}, "
                     f"{num(h['energy_kwh'])} kWh{flag}.")
    dq = r["data_quality"]
    if dq["coverage"] is not None:
        lines.append(f"Data coverage {pct(dq['coverage'])} ({num(dq['observed_gpu_hours'])} of "
                     f"{num(dq['expected_gpu_hours'])} expected GPU-hours).")
    c = r["concentration"]
    if c is not None and c["top1_share"] is not None:
        lines.append(f"Concentration: top tenant {c['top1_tenant']} holds "
                     f"{share(c['top1_share'])} of allocated GPU-hours, top two "
                     f"{share(c['top2_share'])}, HHI {c['hhi']:,.0f}.")
    return [*lines, ""] if md else lines


# -- HTML ---------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#212529;max-width:1100px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #dee2e6}
h3{font-size:15px}table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #dee2e6;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f1f3f5}
.flag{color:#c92a2a;font-weight:bold}.kpis{display:flex;flex-wrap:wrap;gap:10px}
.kpi{border:1px solid #dee2e6;border-radius:6px;padding:8px 12px;min-width:150px}
.kpi .v{font-size:20px;font-weight:bold}.kpi .d{font-size:12px;color:#495057}
.note{color:#495057;font-size:13px}svg.chart{display:block;margin:8px 0}
"""


def _html_table(cols: list[Col], rows: list[dict], flag_key: str | None = "low_coverage",
                ) -> str:
    if not rows:
        return '<p class="note">(none)</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h, _, _ in cols)
    body = []
    for row in rows:
        cells = [escape(_cell(c, row)) for c in cols]
        if flag_key and row.get(flag_key):
            cells[0] += f' <span class="flag" title="{escape(FLAG_TITLE)}">{FLAG}</span>'
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(r: dict) -> str:
    t = {name: (title, cols, rows) for name, title, cols, rows in tables(r)}
    cur = r["money"]["currency"]
    who = f" — tenant {escape(r['tenant_filter'])}" if r["tenant_filter"] else ""
    p = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>GPU "
         f"utilization, week {escape(r['week'])}{who}</title><style>{CSS}</style></head><body>",
         f"<h1>GPU utilization, week {escape(r['week'])}{who}</h1>",
         f'<p class="note">{escape(r["from"])} .. {escape(r["to"])} (UTC). '
         f'<span class="flag">{FLAG}</span> = {escape(FLAG_TITLE)}.</p>']
    p += [f"<p>{escape(line)}</p>" for line in _summary_lines(r, md=False)]

    if r["fleet"] is not None:
        f = r["fleet"]
        flag = (f' <span class="flag" title="{escape(FLAG_TITLE)}">{FLAG}</span>'
                if f["low_coverage"] else "")
        p.append('<h2 id="fleet">Fleet</h2><div class="kpis">')
        for k in ("gpu_hours_available", "gpu_hours_allocated", "gpu_hours_busy",
                  "gpu_hours_idle", "gpu_hours_idle_held", "gpu_hours_low_efficiency",
                  "gpu_hours_unavailable", "gpu_hours_unallocated", "mfu_fleet", "energy_kwh",
                  "avg_power_kw"):
            ch = f["week_over_week"][k]["change"]
            d = "new" if ch is None else f"{'+' if ch >= 0 else ''}{100 * ch:.1f}% w/w"
            p.append(f'<div class="kpi" data-metric="{k}"><div class="d">{escape(LABELS[k])}'
                     f'</div><div class="v">{escape(headline_value(k, f["headline"][k]))}'
                     f'{flag}</div><div class="d">{escape(d)}</div></div>')
        p.append("</div>")
        days = r["daily"]
        p.append(charts.stacked_bars(
            [d["day"][5:] for d in days],
            [(s, [d[s] for d in days]) for s in ("busy", "idle", "idle_held", "unavailable",
                                                  "unallocated")],
            "GPU-hours per day by state"))
        for name in ("headline", "by_model", "by_cluster", "daily"):
            title, cols, rows = t[name]
            p.append(f"<h3>{escape(title)}</h3>{_html_table(cols, rows)}")

    p.append(f'<h2 id="money">Money ({escape(cur)})</h2>')
    m = r["money"]
    line = (f"Billed {money(m['billed_total'])}, used {money(m['used_total'])}, cost of idle "
            f"{money(m['idle_cost_total'])} {cur}")
    if m["unallocated_cost"] is not None:
        line += f"; the operator's cost of unallocated capacity {money(m['unallocated_cost'])}"
    p.append(f"<p>{escape(line)}.</p>")
    idle = sorted(m["tenants"], key=lambda x: -x["idle_cost"])[:10]
    by_name = {x["tenant"]: x for x in r["tenants"]}
    p.append(charts.hbars(
        [(x["tenant"], by_name[x["tenant"]]["gpu_hours_idle"],
          f"{num(by_name[x['tenant']]['gpu_hours_idle'])} GPU-h, {money(x['idle_cost'])} {cur}")
         for x in idle], "Top idle tenants (idle GPU-hours, cost of idle)", name="idle"))
    for name in ("money", "prices"):
        title, cols, rows = t[name]
        p.append(f"<h3>{escape(title)}</h3>{_html_table(cols, rows)}")

    p.append('<h2 id="tenants">Tenants</h2>')
    title, cols, rows = t["tenants"]
    p.append(_html_table(cols, rows))
    p.append(charts.histograms([(x["tenant"], x["mfu_histogram"]) for x in r["tenants"]],
                               "MFU estimate distribution per tenant (busy GPU-hours)"))
    money_by = {x["tenant"]: x for x in m["tenants"]}
    for x in r["tenants"]:
        flag = (f' <span class="flag" title="{escape(FLAG_TITLE)}">{FLAG}</span>'
                if x["low_coverage"] else "")
        mm = money_by[x["tenant"]]
        p.append(f'<section class="tenant" id="tenant-{escape(x["tenant"])}">'
                 f"<h3>{escape(x['tenant'])}{flag}</h3>")
        p.append(f"<p>{num(x['gpu_hours_allocated'])} GPU-hours allocated, "
                 f"{num(x['gpu_hours_busy'])} busy, {num(x['gpu_hours_idle'])} idle "
                 f"({num(x['gpu_hours_idle_held'])} idle-held), "
                 f"{num(x['gpu_hours_unavailable'])} unavailable. MFU estimate "
                 f"{pct(x['mfu_allocated'])} allocated, {pct(x['mfu_busy'])} busy; "
                 f"workload-reported {pct(x['mfu_reported'])}. Billed "
                 f"{money(mm['billed'])} {escape(cur)}, used {money(mm['used'])}, idle "
                 f"{money(mm['idle_cost'])}. Coverage {pct(x['coverage'])}.</p>")
        ti = [{"tenant": x["tenant"], **y} for y in x["top_idle"]]
        p.append("<h4>Top idle allocations</h4>" + _html_table(t["top_idle"][1], ti))
        p.append("<h4>Right-sizing hints</h4>")
        p.append("<ul>" + "".join(f"<li>{escape(h['text'])}</li>" for h in x["hints"])
                 + "</ul>" if x["hints"] else '<p class="note">none</p>')
        p.append("</section>")

    if r["concentration"] is not None:
        c = r["concentration"]
        p.append('<h2 id="concentration">Concentration</h2>')
        if c["top1_share"] is not None:
            p.append(f"<p>Top tenant {escape(c['top1_tenant'])}: {share(c['top1_share'])}; "
                     f"top two: {share(c['top2_share'])}; Herfindahl–Hirschman index "
                     f"{c['hhi']:,.0f} (of 10,000).</p>")
        title, cols, rows = t["concentration"]
        p.append(_html_table(cols, rows))

    dq = r["data_quality"]
    p.append('<h2 id="data-quality">Data quality</h2>')
    if dq["coverage"] is not None:
        flag = f' <span class="flag">{FLAG}</span>' if dq["low_coverage"] else ""
        p.append(f"<p>Coverage {pct(dq['coverage'])}{flag}: {num(dq['observed_gpu_hours'])} "
                 f"GPU-hours observed of {num(dq['expected_gpu_hours'])} expected "
                 f"({dq['gpus_seen']} GPUs seen × the week).</p>")
    p.append(f"<p class=\"note\">Late / dead-lettered samples: {escape(dq['dead_letter_note'])}."
             "</p>")
    for name in ("coverage", "unknown_models"):
        if name in t:
            title, cols, rows = t[name]
            p.append(f"<h3>{escape(title)}</h3>{_html_table(cols, rows, flag_key=None)}")
    p.append("</body></html>\n")
    return "\n".join(p)


def write_outputs(report: dict, formats: list[str], out_dir: str | Path) -> list[Path]:
    """Write the report in each format under out_dir; the paths written (CSV: the folder)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tenant = report["tenant_filter"]
    stem = f"weekly-{report['week']}" + (f"-{re.sub(r'[^A-Za-z0-9._-]', '_', tenant)}"
                                         if tenant else "")
    paths = []
    for fmt in formats:
        if fmt == "html":
            path = out / f"{stem}.html"
            path.write_text(render_html(report))
        elif fmt == "md":
            path = out / f"{stem}.md"
            path.write_text(render_md(report))
        elif fmt == "json":
            path = out / f"{stem}.json"
            path.write_text(render_json(report))
        elif fmt == "csv":
            path = out / f"{stem}-csv"
            path.mkdir(exist_ok=True)
            for name, text in render_csv(report).items():
                (path / f"{name}.csv").write_text(text)
        else:
            raise ValueError(f"unknown format {fmt!r}")
        paths.append(path)
    return paths
