"""Small inline-SVG charts for the weekly report (no JavaScript, no network, no fonts).

Every chart is an <svg> element with explicit width/height, class "chart" and a data-chart
name, so a report is one self-contained HTML file and a test can find and measure each chart.
"""

from __future__ import annotations

from html import escape

PALETTE = {"busy": "#2b8a3e", "idle": "#f59f00", "idle_held": "#e8590c",
           "unavailable": "#c92a2a", "unallocated": "#adb5bd"}
FONT = 'font-family="sans-serif" font-size="11"'


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    step = 10 ** len(str(int(v))) / 10
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * step:
            return m * step
    return v


def _open(name: str, w: int, h: int, title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{name}" '
            f'width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{escape(title)}">', f"<title>{escape(title)}</title>",
            f'<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>']


def stacked_bars(labels: list[str], series: list[tuple[str, list[float]]], title: str,
                 name: str = "daily", width: int = 720, height: int = 300,
                 unit: str = "GPU-h") -> str:
    """Vertical bars, one per label, stacked by series (name, values)."""
    left, right, top, bottom = 56, 130, 24, 36
    pw, ph = width - left - right, height - top - bottom
    totals = [sum(s[1][i] for s in series) for i in range(len(labels))]
    ymax = _nice_max(max(totals, default=0.0))
    out = _open(name, width, height, title)
    out.append(f'<text x="{left}" y="15" {FONT} font-weight="bold">{escape(title)}</text>')
    for k in range(5):
        v = ymax * k / 4
        y = top + ph - ph * k / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" '
                   f'stroke="#dee2e6"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" {FONT} text-anchor="end">'
                   f'{v:,.0f}</text>')
    n = max(len(labels), 1)
    slot = pw / n
    bw = slot * 0.7
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bw) / 2
        y = top + ph
        for sname, values in series:
            hpx = ph * values[i] / ymax
            if hpx > 0:
                y -= hpx
                out.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" '
                           f'height="{hpx:.1f}" fill="{PALETTE.get(sname, "#495057")}">'
                           f"<title>{escape(label)} {escape(sname)}: {values[i]:,.1f} {unit}"
                           f"</title></rect>")
        out.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph + 14}" {FONT} '
                   f'text-anchor="middle">{escape(label)}</text>')
    for j, (sname, _) in enumerate(series):
        y = top + 10 + j * 16
        out.append(f'<rect x="{left + pw + 12}" y="{y - 9}" width="10" height="10" '
                   f'fill="{PALETTE.get(sname, "#495057")}"/>')
        out.append(f'<text x="{left + pw + 26}" y="{y}" {FONT}>'
                   f'{escape(sname.replace("_", "-"))}</text>')
    out.append(f'<text x="12" y="{top + ph / 2:.0f}" {FONT} transform="rotate(-90 12 '
               f'{top + ph / 2:.0f})" text-anchor="middle">{unit}</text>')
    out.append("</svg>")
    return "\n".join(out)


def histograms(panels: list[tuple[str, list[float]]], title: str, name: str = "mfu",
               per_row: int = 3, panel_w: int = 240, panel_h: int = 130) -> str:
    """Small multiples: one 10-bucket histogram (MFU 0-0.1 ... 0.9-1.0) per panel."""
    rows = max(1, -(-len(panels) // per_row))
    width, height = per_row * panel_w, rows * panel_h + 24
    out = _open(name, width, height, title)
    out.append(f'<text x="8" y="15" {FONT} font-weight="bold">{escape(title)}</text>')
    for p, (label, values) in enumerate(panels):
        ox = (p % per_row) * panel_w
        oy = 24 + (p // per_row) * panel_h
        left, top, pw, ph = ox + 10, oy + 16, panel_w - 20, panel_h - 40
        out.append(f'<text x="{left}" y="{oy + 11}" {FONT}>{escape(label)}</text>')
        out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" '
                   f'stroke="#868e96"/>')
        vmax = max(values, default=0.0) or 1.0
        bw = pw / len(values) if values else pw
        for i, v in enumerate(values):
            hpx = ph * v / vmax
            if hpx > 0:
                out.append(f'<rect class="bar" x="{left + i * bw + 1:.1f}" '
                           f'y="{top + ph - hpx:.1f}" width="{bw - 2:.1f}" height="{hpx:.1f}" '
                           f'fill="#1c7ed6"><title>{escape(label)} MFU {i / 10:.1f}-'
                           f'{(i + 1) / 10:.1f}: {v:,.1f} busy GPU-h</title></rect>')
        out.append(f'<text x="{left}" y="{top + ph + 13}" {FONT}>0</text>')
        out.append(f'<text x="{left + pw}" y="{top + ph + 13}" {FONT} '
                   f'text-anchor="end">1.0</text>')
        if not any(values):
            out.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" {FONT} '
                       f'text-anchor="middle" fill="#868e96">no MFU estimate</text>')
    out.append("</svg>")
    return "\n".join(out)


def hbars(items: list[tuple[str, float, str]], title: str, name: str = "idle",
          width: int = 720, bar_h: int = 22, color: str = "#e8590c") -> str:
    """Horizontal bars: (label, value, annotation) sorted as given."""
    left, top = 140, 24
    height = top + max(len(items), 1) * bar_h + 10
    pw = width - left - 170
    vmax = max((v for _, v, _ in items), default=0.0) or 1.0
    out = _open(name, width, height, title)
    out.append(f'<text x="8" y="15" {FONT} font-weight="bold">{escape(title)}</text>')
    if not items:
        out.append(f'<text x="{left}" y="{top + 14}" {FONT} fill="#868e96">none</text>')
    for i, (label, v, note) in enumerate(items):
        y = top + i * bar_h
        w = pw * v / vmax
        out.append(f'<text x="{left - 6}" y="{y + 15}" {FONT} text-anchor="end">'
                   f'{escape(label)}</text>')
        if w > 0:
            out.append(f'<rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" '
                       f'height="{bar_h - 6}" fill="{color}"><title>{escape(label)}: '
                       f'{escape(note)}</title></rect>')
        out.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}" {FONT}>{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out)
