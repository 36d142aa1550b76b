"""End to end: Kafka (Tansu) -> `fleetlens pipeline` -> store -> `fleetlens serve` (the real
command, its own process, tokens from a config file) -> HTTP. The API gives the numbers of
`fleetlens report range` for the same store, and sees a second pipeline run's data while it keeps
serving (nothing restarted, no lock error)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from fleetlens.api.auth import hash_token
from fleetlens.broker import free_port
from tests.conftest import FIXTURES, cli_env, run_cli
from tests.test_api_support import SERIES_AS_REPORT

pytestmark = pytest.mark.broker

FROM, TO = "2026-11-16T00:00:00Z", "2026-11-16T01:00:00Z"
LATER = "2026-11-16T02:00:00Z"
ADMIN = "e2e-admin-token-0123456789"
BETA = "e2e-beta-token-0123456789"


def report(store, start=FROM, end=TO) -> dict:
    return json.loads(run_cli("report", "range", "--store", str(store), "--from", start,
                              "--to", end, "--format", "json").stdout)


def pipeline(broker, topic, store):
    run_cli("pipeline", "--bootstrap", broker.bootstrap, "--topic", topic, "--store",
            str(store), "--group", f"g-{uuid.uuid4().hex[:8]}", "--until-idle", "2")


@pytest.fixture
def served(tmp_path):
    """`fleetlens serve` on a free port over tmp_path/store; yields (url, store, process)."""
    store = tmp_path / "store"
    store.mkdir()
    cfg = tmp_path / "fleetlens.toml"
    cfg.write_text("[api]\ntokens = [\n"
                   f'  {{hash = "{hash_token(ADMIN)}", tenant = "*"}},\n'
                   f'  {{hash = "{hash_token(BETA)}", tenant = "beta"}},\n]\n')
    port = free_port()
    log = open(tmp_path / "serve.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "fleetlens", "--config", str(cfg), "serve",
                             "--store", str(store), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=cli_env())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.1)
        yield url, store, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.seek(0)
        text = log.read()
        log.close()
        assert "Traceback" not in text and "lock" not in text.lower(), text


def get(url: str, path: str, token: str, **params) -> list[dict]:
    r = httpx.get(url + path, params=params, headers={"Authorization": f"Bearer {token}"},
                  timeout=30)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def assert_same(api_rows: list[dict], report_rows: list[dict], keys=None) -> None:
    assert [r["tenant"] for r in api_rows] == [r["tenant"] for r in report_rows]
    for a, b in zip(api_rows, report_rows, strict=True):
        for k in keys or b:
            v = b[k]
            assert a[k] == (v if v is None or isinstance(v, str) else pytest.approx(v, rel=1e-9)), k


def test_serve_answers_with_the_reports_numbers_while_the_pipeline_writes(broker, topic,
                                                                         served):
    url, store, proc = served
    q = {"from": FROM, "to": TO}
    assert get(url, "/v1/summary", ADMIN, **q) == []  # empty store: served, no error

    run_cli("allocations", "load", str(FIXTURES / "e2e_allocations.csv"), "--store", str(store))
    run_cli("replay", str(FIXTURES / "e2e_samples.ndjson"), "--bootstrap", broker.bootstrap,
            "--topic", topic)
    pipeline(broker, topic, store)
    rep = report(store)
    assert {"alpha", "beta", "gamma", "delta"} <= {t["tenant"] for t in rep["tenants"]}
    # The same process, no restart: the new files are visible, with the report's numbers.
    assert get(url, "/v1/summary", ADMIN, **q) == rep["tenants"]
    [fleet] = get(url, "/v1/fleet", ADMIN, **q)
    assert fleet == {k: rep["fleet"][k] for k in ("gpu_hours_observed", "gpu_hours_unallocated",
                                                  "gpu_hours_unavailable")}
    assert get(url, "/v1/unknown-models", ADMIN, **q) == rep["fleet"]["unknown_models"]
    assert_same(get(url, "/v1/summary", BETA, **q),
                [t for t in rep["tenants"] if t["tenant"] == "beta"])
    series = get(url, "/v1/series/tenant", ADMIN, step="1h", **q)
    names = [r["tenant"] for r in series]
    assert_same(series, [t for t in rep["tenants"] if t["tenant"] in names], SERIES_AS_REPORT)
    assert {"alpha", "beta", "gamma", "delta"} <= set(names)
    # Grafana sends epoch milliseconds.
    assert get(url, "/v1/summary", ADMIN, **{"from": "1794787200000",
                                              "to": "1794790800000"}) == rep["tenants"]

    # A second batch through the pipeline while the API keeps serving (sim agent backfill of
    # the next hour); the API's answer follows the store.
    run_cli("agent", "--source", "sim", "--nodes", "1", "--interval", "60", "--bootstrap",
            broker.bootstrap, "--topic", topic, "--backfill-from", TO, "--backfill-to", LATER)
    pipeline(broker, topic, store)
    rep2 = report(store, FROM, LATER)
    assert rep2["fleet"]["gpu_hours_observed"] > rep["fleet"]["gpu_hours_observed"]
    assert_same(get(url, "/v1/summary", ADMIN, **{"from": FROM, "to": LATER}), rep2["tenants"])
    [fleet2] = get(url, "/v1/series/fleet", ADMIN, step="2h", metric="gpu_hours_observed",
                   **{"from": FROM, "to": LATER})
    assert fleet2["gpu_hours_observed"] == pytest.approx(rep2["fleet"]["gpu_hours_observed"])
    assert proc.poll() is None
