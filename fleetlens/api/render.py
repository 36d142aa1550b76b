"""Turning a query result into JSON (an array of flat objects, for Grafana Infinity's backend
parser), CSV (header row + one line per object) or a small HTML table (for people).

Timestamps are RFC 3339 strings in UTC ('2026-11-16T00:00:00Z'); numbers that are not finite
become null, so the JSON is always valid.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from datetime import datetime
from typing import Any

from starlette.responses import HTMLResponse, Response

from fleetlens.api.data import Table
from fleetlens.times import rfc3339


def iso(dt: datetime) -> str:
    """A naive UTC (or aware) datetime as RFC 3339 with 'Z'."""
    return rfc3339(dt)


def _value(v: Any) -> Any:
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def to_records(table: Table) -> list[dict[str, Any]]:
    return [{c: _value(v) for c, v in zip(table.columns, row, strict=True)} for row in table.rows]


def to_csv(table: Table) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(table.columns)
    for row in table.rows:
        w.writerow(["" if v is None else _value(v) for v in row])
    return out.getvalue()


def _cell(v: Any) -> str:
    v = _value(v)
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return html.escape(str(v))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; white-space: nowrap; }}
th {{ background: #f0f0f0; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
code {{ background: #f4f4f4; padding: 0 0.2em; }}
</style></head>
<body>
{body}
</body></html>
"""


def html_table(table: Table, table_id: str = "data") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    lines = []
    for row in table.rows:
        cells = "".join(
            f'<td class="num">{_cell(v)}</td>' if isinstance(v, int | float)
            and not isinstance(v, bool) else f"<td>{_cell(v)}</td>" for v in row)
        lines.append(f"<tr>{cells}</tr>")
    if not lines:
        lines.append(f'<tr><td colspan="{len(table.columns)}">(no data in this range)</td></tr>')
    return (f'<table id="{html.escape(table_id)}"><thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(lines) + "\n</tbody></table>")


def page(title: str, body: str) -> str:
    return PAGE.format(title=html.escape(title), body=body)


def respond(table: Table, fmt: str, title: str, subtitle: str = "") -> Response:
    if fmt == "csv":
        return Response(to_csv(table), media_type="text/csv; charset=utf-8")
    if fmt == "html":
        body = (f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(subtitle)}</p>\n"
                + html_table(table))
        return HTMLResponse(page(f"fleetlens - {title}", body))
    return Response(json.dumps(to_records(table), allow_nan=False, separators=(",", ":")),
                    media_type="application/json")
