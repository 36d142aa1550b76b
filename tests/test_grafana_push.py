"""`fleetlens grafana push` against a stand-in for Grafana's HTTP API on 127.0.0.1.

The stand-in answers the endpoints grafana-client calls the way Grafana does (404 for an
unknown datasource or folder uid) and records every request; the test checks paths, methods,
the Bearer token and the bodies against the repository's provisioning files and dashboards.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
DASH = ROOT / "dashboards"
ENV = {"PROMETHEUS_URL": "http://prom.test:9090", "REPORTS_API_URL": "http://api.test:8080",
       "REPORTS_API_TOKEN": "flt_reports_secret"}


class FakeGrafana(ThreadingHTTPServer):
    def __init__(self, existing_datasources=(), existing_folders=(), fail_dashboards=False):
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict] = []
        self.datasources = set(existing_datasources)
        self.folders = set(existing_folders)
        self.fail_dashboards = fail_dashboards

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, *args):  # keep test output clean
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        s = self.server
        s.requests.append({"method": method, "path": self.path, "body": body,
                           "auth": self.headers.get("Authorization")})
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["api", "datasources", "uid"] and len(parts) == 4:
            uid = parts[3]
            if method == "GET":
                if uid in s.datasources:
                    return self._reply(200, {"uid": uid, "id": 7})
                return self._reply(404, {"message": "Data source not found"})
            if method == "PUT" and uid in s.datasources:
                return self._reply(200, {"message": "Datasource updated", "id": 7})
        if parts == ["api", "datasources"] and method == "POST":
            s.datasources.add(body["uid"])
            return self._reply(200, {"message": "Datasource added", "id": 8,
                                     "datasource": body})
        if parts[:2] == ["api", "folders"]:
            if method == "GET" and len(parts) == 3:
                if parts[2] in s.folders:
                    return self._reply(200, {"uid": parts[2]})
                return self._reply(404, {"message": "folder not found"})
            if method == "POST" and len(parts) == 2:
                s.folders.add(body["uid"])
                return self._reply(200, {"uid": body["uid"], "title": body["title"]})
        if parts == ["api", "dashboards", "db"] and method == "POST":
            if s.fail_dashboards:
                return self._reply(500, {"message": "database is locked"})
            d = body["dashboard"]
            return self._reply(200, {"status": "success", "uid": d["uid"], "version": 1})
        self._reply(404, {"message": "Not found"})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")


@pytest.fixture
def grafana(request):
    kwargs = getattr(request, "param", {})
    server = FakeGrafana(**kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def push(grafana: FakeGrafana, *extra: str, env: dict | None = None, check=True):
    return run_cli("grafana", "push", "--url", grafana.url, "--token", "glsa_test_token",
                   *extra, env=ENV if env is None else env, check=check, timeout=60)


def committed_dashboards() -> dict[str, dict]:
    boards = [json.loads(p.read_text()) for p in sorted((DASH / "json").glob("*.json"))]
    return {b["uid"]: b for b in boards}


def test_push_creates_datasources_folder_and_dashboards(grafana):
    proc = push(grafana)
    reqs = grafana.requests
    assert all(r["auth"] == "Bearer glsa_test_token" for r in reqs)
    calls = [(r["method"], r["path"]) for r in reqs]
    assert calls == [
        ("GET", "/api/datasources/uid/fleetlens-prometheus"),
        ("POST", "/api/datasources"),
        ("GET", "/api/datasources/uid/fleetlens-reports"),
        ("POST", "/api/datasources"),
        ("GET", "/api/folders/fleetlens"),
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * 4,
    ]
    prom, reports = reqs[1]["body"], reqs[3]["body"]
    assert prom == {"name": "fleetlens Prometheus", "uid": "fleetlens-prometheus",
                    "type": "prometheus", "access": "proxy", "url": "http://prom.test:9090",
                    "isDefault": True, "jsonData": {"httpMethod": "POST", "timeInterval": "15s",
                                                    "prometheusType": "Prometheus"}}
    assert reports["type"] == "yesoreyeram-infinity-datasource"
    assert reports["url"] == "http://api.test:8080"
    assert reports["jsonData"]["allowedHosts"] == ["http://api.test:8080"]
    assert reports["secureJsonData"] == {"bearerToken": "flt_reports_secret"}
    assert reqs[5]["body"] == {"title": "fleetlens", "uid": "fleetlens"}
    pushed = {r["body"]["dashboard"]["uid"]: r["body"] for r in reqs[6:]}
    expected = committed_dashboards()
    assert set(pushed) == set(expected)
    for uid, body in pushed.items():
        assert body["folderUid"] == "fleetlens" and body["overwrite"] is True
        assert body["dashboard"] == {**expected[uid], "id": None}
    assert "4 dashboards pushed" in proc.stderr


@pytest.mark.parametrize("grafana", [dict(existing_datasources={"fleetlens-prometheus",
                                                                 "fleetlens-reports"},
                                          existing_folders={"fleetlens"})], indirect=True)
def test_push_again_updates_in_place(grafana):
    push(grafana, "--api-url", "http://other:8080")
    calls = [(r["method"], r["path"]) for r in grafana.requests]
    assert ("PUT", "/api/datasources/uid/fleetlens-prometheus") in calls
    assert ("PUT", "/api/datasources/uid/fleetlens-reports") in calls
    assert ("POST", "/api/datasources") not in calls and ("POST", "/api/folders") not in calls
    put = next(r for r in grafana.requests if r["path"].endswith("/fleetlens-reports")
               and r["method"] == "PUT")
    assert put["body"]["url"] == "http://other:8080"  # the flag beats the environment


def test_missing_value_is_refused_before_any_request(grafana):
    env = {k: v for k, v in ENV.items() if k != "REPORTS_API_TOKEN"}
    proc = push(grafana, env=env, check=False)
    assert proc.returncode == 2
    assert "${REPORTS_API_TOKEN} has no value" in proc.stderr
    assert grafana.requests == []


@pytest.mark.parametrize("grafana", [dict(fail_dashboards=True)], indirect=True)
def test_grafana_error_is_one_line_and_exit_1(grafana):
    proc = push(grafana, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("fleetlens grafana push: Grafana at http://127.0.0.1:")
    assert "Traceback" not in proc.stderr


def test_provisioning_file_round_trips_through_expand():
    from fleetlens.grafana_push import expand

    doc = yaml.safe_load((DASH / "provisioning/datasources/fleetlens.yaml").read_text())
    out = expand(doc, ENV)
    assert "$" not in json.dumps(out)
    assert expand("a $$b ${X} $X", {"X": "1"}) == "a $b 1 1"
