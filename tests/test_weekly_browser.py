"""The weekly HTML report as a person sees it: rendered by headless Chromium (Debian's
`chromium`), measured after layout (each chart's size and painted bars), and screenshotted
(a real picture, with the chart's colours in it)."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.fixtures.weekly.build import build_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian package `chromium`; "
                             "`make browser` installs it where it exists)")

# Runs after layout; writes what the browser actually drew into <pre id="measure">.
MEASURE = """<script>
window.addEventListener('load', () => {
  const charts = [...document.querySelectorAll('svg.chart')].map(s => {
    const r = s.getBoundingClientRect();
    const bars = [...s.querySelectorAll('rect.bar')].filter(b => {
      const q = b.getBoundingClientRect(); return q.width > 0 && q.height > 0; }).length;
    return {name: s.dataset.chart, width: r.width, height: r.height, bars: bars,
            attr_w: +s.getAttribute('width'), attr_h: +s.getAttribute('height')};
  });
  const pre = document.createElement('pre'); pre.id = 'measure';
  pre.textContent = JSON.stringify({charts: charts, text: document.body.innerText});
  document.body.appendChild(pre);
});
</script></body>"""


def chromium(tmp_path: Path, url: str, *args: str) -> str:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args, url],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB/RGBA PNG, no imaging library."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, color, _, _, interlace = ihdr
    assert depth == 8 and color in (2, 6) and interlace == 0, ihdr
    bpp = 3 if color == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp)
    for y in range(h):
        row = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        f, line = row[0], bytearray(row[1:])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, rows


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("weekly-html")
    store = build_store(tmp / "store")
    out = run_cli("report", "weekly", "--store", str(store), "--week", "2026-W47", "--format",
                  "html", "--out", str(tmp / "out")).stdout.split()
    return Path(out[0])


def test_charts_render_at_their_size_with_bars_and_figures(html, tmp_path):
    page = html.read_text()
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") \
        and "https://" not in page  # self-contained: nothing to fetch
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", MEASURE, 1))
    dom = chromium(tmp_path, probe.as_uri(), "--window-size=1200,900",
                   "--virtual-time-budget=5000", "--dump-dom")
    m = re.search(r'<pre id="measure">(.*?)</pre>', dom, re.S)
    assert m, dom[-2000:]
    measured = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<")
                          .replace("&gt;", ">").replace("&amp;", "&"))
    charts = {c["name"]: c for c in measured["charts"]}
    assert sorted(charts) == ["daily", "idle", "mfu"]
    for c in charts.values():  # laid out at exactly the size the SVG asks for
        assert c["width"] == c["attr_w"] > 300 and c["height"] == c["attr_h"] > 50, c
    # Painted bars, counted by hand from the fixture: daily non-zero state segments per day
    # 1+1+2+3+3+4+3; idle tenants with idle hours: beta, alpha; MFU buckets: alpha 2, beta 1.
    assert charts["daily"]["bars"] == 17
    assert charts["idle"]["bars"] == 2
    assert charts["mfu"]["bars"] == 3
    text = measured["text"]
    for figure in ("672.0", "600.0", "408.0", "144.0", "13.8%", "170.2",
                   "HHI 3,408", "top two 72.0%", "Coverage 96.4%"):
        assert figure in text, figure
    assert re.search(r"beta\s*⚠", text)  # beta's figures rest on 75 % coverage


def test_screenshot_is_a_real_picture_with_the_charts_colours(html, tmp_path):
    shot = tmp_path / "weekly.png"
    chromium(tmp_path, html.as_uri(), f"--screenshot={shot}", "--window-size=1200,900",
             "--hide-scrollbars")
    assert shot.stat().st_size > 20_000
    w, h, rows = png_pixels(shot)
    assert (w, h) == (1200, 900)
    bpp = len(rows[0]) // w
    colours = {rows[y][x * bpp:x * bpp + 3] for y in range(0, h, 2) for x in range(0, w, 2)}
    busy_green, unallocated_grey = bytes.fromhex("2b8a3e"), bytes.fromhex("adb5bd")
    assert busy_green in colours and unallocated_grey in colours  # the daily chart painted
    assert len(colours) > 50  # text, tables and charts, not a blank page
