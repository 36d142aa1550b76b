"""What a person sees: the API's index page and the per-tenant report rendered by headless
Chromium (Debian's `chromium`, installed by `make browser` when missing), read back as the DOM
after rendering, plus a screenshot that must be a real picture."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from tests.test_api_support import (
    ADMIN_TOKEN,
    FROM,
    TO,
    TOKENS,
    LiveServer,
    write_fixture_store,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed and `make browser` could not "
                             "install it (Debian package `chromium`)")


def chromium(tmp_path, url: str, *args: str) -> str:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args, url],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class Page(HTMLParser):
    """The title and each table's rows (cell texts), by table id."""

    def __init__(self, dom: str):
        super().__init__()
        self.title, self.tables, self.h1 = "", {}, []
        self._tag, self._table, self._row = None, None, None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "table":
            self._table = dict(attrs).get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
            self.tables[self._table].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        self._tag = None

    def handle_data(self, data):
        if self._tag == "title":
            self.title += data
        elif self._tag == "h1":
            self.h1.append(data.strip())
        elif self._tag in ("td", "th") and self._row is not None:
            self._row[-1] += data.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser") / "store"
    write_fixture_store(root)
    with LiveServer(root) as s:
        yield s


def with_token(server, token: str) -> str:
    """The server URL with the token as HTTP Basic password, as a browser user would log in."""
    return server.url.replace("http://", f"http://viewer:{token}@")


def test_index_page_in_chromium(server, tmp_path):
    page = Page(chromium(tmp_path, server.url + "/", "--dump-dom"))
    assert page.title == "fleetlens API" and page.h1 == ["fleetlens API"]
    header, status = page.tables["status"]
    assert header[:3] == ["store", "rollup files", "newest minute"]
    assert status[1:3] == ["3", "2026-11-16T01:59:00Z"]
    routes = [r[0] for r in page.tables["routes"][1:]]
    assert "/v1/summary" in routes and "/v1/series/gpu" in routes

    shot = tmp_path / "index.png"
    chromium(tmp_path, server.url + "/", f"--screenshot={shot}", "--window-size=1200,900")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # text, tables: not blank


def test_tenant_report_in_chromium(server, tmp_path):
    report = f"/v1/summary?from={FROM}&to={TO}&format=html"
    page = Page(chromium(tmp_path, with_token(server, ADMIN_TOKEN) + report, "--dump-dom"))
    assert page.title == "fleetlens - GPU utilization by tenant"
    header, *rows = page.tables["data"]
    assert header[:3] == ["tenant", "gpu_hours_allocated", "gpu_hours_busy"]
    cols = ["tenant", "gpu_hours_allocated", "gpu_hours_busy", "gpu_hours_idle",
            "gpu_hours_idle_held", "mfu_allocated", "mfu_busy", "energy_kwh"]
    assert [[dict(zip(header, r, strict=True))[c] for c in cols] for r in rows] == [
        ["alpha", "2.000", "1.500", "0.500", "0.500", "0.375", "0.500", "0.800"],
        ["beta", "1.000", "0.000", "1.000", "0.000", "0.000", "-", "0.080"],
        ["gamma", "2.000", "1.000", "1.000", "0.000", "-", "-", "0.360"],
    ]
    # A tenant logged in with its own token sees its own row and nothing else.
    page = Page(chromium(tmp_path, with_token(server, TOKENS["beta"]) + report, "--dump-dom"))
    assert [r[0] for r in page.tables["data"][1:]] == ["beta"]
    # Without a token, or with a wrong one, the browser gets a 401 and a login challenge
    # (headless: nothing rendered, or the JSON error) - never the table.
    for base in (server.url, with_token(server, "wrong-token-0123456789")):
        dom = chromium(tmp_path, base + report, "--dump-dom")
        assert dom.strip() == "" or "missing or invalid token" in dom, dom[:500]
        assert "alpha" not in dom and "<table" not in dom
