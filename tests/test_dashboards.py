"""The Grafana dashboards: schema, datasources, API routes, metric names, generated = committed.

Offline: nothing here needs Grafana. The dashboard JSON schema is read in place from
../shared/reference/grafana/ (Draft-07, vendored from grafana-foundation-sdk); the structural
checks below run without it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from fleetlens.pipeline.metrics import PipelineMetrics, exported_names

from tests.conftest import FIXTURES, REFERENCE, cli_env

ROOT = Path(__file__).resolve().parents[1]
DASH = ROOT / "dashboards"
JSON_DIR = DASH / "json"
PROVISIONING = DASH / "provisioning"
SCHEMA = REFERENCE / "grafana" / "dashboard.jsonschema.json"
DCGM_CSV = ROOT / "deploy" / "dcgm" / "fleetlens-counters.csv"
ROUTES = json.loads((DASH / "api_routes.json").read_text())["routes"]
INFINITY = "yesoreyeram-infinity-datasource"
# The SDK marks the classic dashboard model deprecated in favour of v2; Grafana 11/12 take
# classic JSON (../shared/reference/grafana.md §1.1).
pytestmark = pytest.mark.filterwarnings("ignore:Prefer using dashboardv2:DeprecationWarning")

FILES = sorted(JSON_DIR.glob("*.json"))
BOARDS = {p.name: json.loads(p.read_text()) for p in FILES}


def panels(board: dict) -> list[dict]:
    out = []
    for p in board.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows hold their panels
    return out


def targets(board: dict) -> list[tuple[dict, dict]]:
    """(panel, target) pairs, with the panel's datasource applied where a target has none."""
    return [(p, t) for p in panels(board) for t in p.get("targets", [])]


def datasource_of(panel: dict, target: dict) -> dict:
    return target.get("datasource") or panel.get("datasource") or {}


def test_the_four_dashboards_exist():
    titles = sorted(b["title"] for b in BOARDS.values())
    assert titles == ["fleetlens / Fleet overview", "fleetlens / GPU and node drill-down",
                      "fleetlens / Pipeline health", "fleetlens / Tenant"]
    tenant = BOARDS["tenant.json"]
    assert [v["name"] for v in tenant["templating"].get("list", [])][0] == "tenant"


# -- generated = committed ----------------------------------------------------------------------
def _generator():
    spec = importlib.util.spec_from_file_location("fleetlens_dash_generate",
                                                  DASH / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_json_is_what_the_generator_writes():
    rendered = _generator().render()
    assert sorted(rendered) == [p.name for p in FILES]
    for name, text in rendered.items():
        assert (JSON_DIR / name).read_text() == text, f"{name} is stale: run `make dashboards`"


def test_generator_check_mode_reports_a_stale_file(tmp_path, monkeypatch):
    gen = _generator()
    monkeypatch.setattr(gen, "OUT", tmp_path)
    assert gen.main([]) == 0 and gen.main(["--check"]) == 0
    (tmp_path / "tenant.json").write_text("{}")
    assert gen.main(["--check"]) == 1


# -- schema and structure -----------------------------------------------------------------------
@pytest.mark.skipif(not SCHEMA.is_file(), reason=f"{SCHEMA} not present (it is in CI)")
@pytest.mark.parametrize("name", [p.name for p in FILES])
def test_dashboard_validates_against_grafana_schema(name):
    from jsonschema import Draft7Validator

    validator = Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = []
    for e in validator.iter_errors(BOARDS[name]):
        errors.append(f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}")
        errors += [f"  {'/'.join(map(str, c.absolute_path))}: {c.message[:200]}"
                   for c in e.context or []]
    assert not errors, "\n".join(errors)


@pytest.mark.skipif(not SCHEMA.is_file(), reason=f"{SCHEMA} not present (it is in CI)")
def test_schema_catches_the_faults_we_guard_against():
    """The validator is not vacuous: a broken copy of a real dashboard fails it."""
    from jsonschema import Draft7Validator

    validator = Draft7Validator(json.loads(SCHEMA.read_text()))
    bad = json.loads(json.dumps(BOARDS["fleet-overview.json"]))
    bad["panels"][1]["gridPos"]["w"] = "wide"
    bad["style"] = "dark"
    assert len(list(validator.iter_errors(bad))) == 2


@pytest.mark.parametrize("name", [p.name for p in FILES])
def test_dashboard_structure(name):
    b = BOARDS[name]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", b["uid"])
    assert b["schemaVersion"] == 41  # Grafana >= 11.6 loads it; see dashboards/generate.py
    assert "id" not in b or b["id"] is None
    ids = [p["id"] for p in panels(b)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells: set[tuple[int, int]] = set()
    for p in panels(b):
        g = p["gridPos"]
        assert g["w"] >= 1 and g["x"] + g["w"] <= 24, (p["title"], g)
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p.get("targets"), f"panel {p['title']!r} has no query"
    # Every $var a query uses is defined (Grafana's own $__ globals aside).
    defined = {v["name"] for v in b["templating"].get("list", [])}
    text = json.dumps([p.get("targets") for p in panels(b)] + b["templating"].get("list", []))
    used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", text)) - {"__timeFrom", "__timeTo",
                                                          "__rate_interval", "__interval"}
    assert used <= defined, used - defined


def test_dashboard_uids_are_unique():
    uids = [b["uid"] for b in BOARDS.values()]
    assert len(uids) == len(set(uids))


# -- datasources --------------------------------------------------------------------------------
def provisioned_datasources() -> dict[str, str]:
    out = {}
    for f in sorted((PROVISIONING / "datasources").glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        assert doc["apiVersion"] == 1
        for ds in doc["datasources"]:
            out[ds["uid"]] = ds["type"]
    return out


def test_provisioning_has_both_datasources_and_the_dashboard_folder():
    assert provisioned_datasources() == {"fleetlens-prometheus": "prometheus",
                                         "fleetlens-reports": INFINITY}
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "fleetlens.yaml").read_text())
    (p,) = providers["providers"]
    assert p["type"] == "file" and p["options"]["path"].startswith("/var/lib/grafana/dashboards")


@pytest.mark.parametrize("name", [p.name for p in FILES])
def test_every_datasource_uid_is_provisioned(name):
    known = provisioned_datasources()
    refs = [p["datasource"] for p in panels(BOARDS[name]) if p.get("datasource")]
    refs += [datasource_of(p, t) for p, t in targets(BOARDS[name])]
    refs += [v["datasource"] for v in BOARDS[name]["templating"].get("list", [])
             if v.get("datasource")]
    assert refs
    for ref in refs:
        assert known.get(ref.get("uid")) == ref.get("type"), ref


# -- Infinity targets -> API routes ---------------------------------------------------------------
def infinity_targets() -> list[tuple[str, dict, dict]]:
    return [(name, p, t) for name, b in BOARDS.items() for p, t in targets(b)
            if datasource_of(p, t).get("type") == INFINITY]


def test_infinity_targets_exist_in_every_dashboard():
    assert {name for name, _, _ in infinity_targets()} == set(BOARDS)


@pytest.mark.parametrize("name,panel,target", infinity_targets(),
                         ids=lambda x: x["title"] if isinstance(x, dict) and "title" in x else "")
def test_infinity_target_matches_a_known_api_route(name, panel, target):
    """Against dashboards/api_routes.json (the API's routes as the dashboards assume them)."""
    assert target["parser"] == "backend"  # alerting and public dashboards need it
    route = ROUTES.get(target["url"])
    assert route is not None, f"{panel['title']}: {target['url']} is not an API route"
    params = [p["key"] for p in target["url_options"]["params"]]
    assert set(params) <= set(route["params"]), set(params) - set(route["params"])
    if "from" in route["params"]:
        assert {"from": "${__timeFrom}", "to": "${__timeTo}"}.items() <= {
            p["key"]: p["value"] for p in target["url_options"]["params"]}.items()
    assert target["root_selector"] == route["root"]
    used = {c["selector"] for c in target["columns"]}
    assert used <= set(route["columns"]), f"{panel['title']}: {used - set(route['columns'])}"
    if target["url"].startswith("/v1/series/"):
        metric = next(p["value"] for p in target["url_options"]["params"] if p["key"] == "metric")
        keys = {"time", "tenant", "model", "cluster", "uuid", "node", "gpu"}
        assert used - keys == set(metric.split(",")), "columns = the metrics asked for"


def _serve_available() -> bool:
    from fleetlens.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return "serve" in sub.choices


API_TOKEN = "flt_dashboard_test_token"
# Values the dashboards' variables take in the API check: the e2e fixture's hour.
VARIABLES = {"${__timeFrom}": "1794787200000", "${__timeTo}": "1794790800000", "$step": "1h",
             "$tenant": "alpha", "$node": "node-a", "$uuid": "GPU-a0"}


def _fixture_store(root: Path) -> Path:
    """A store holding the rollups of tests/fixtures/e2e_samples.ndjson under the fixture's
    allocation ledger (as the pipeline would write them), built without a broker."""
    from fleetlens.pipeline.allocations import load_ledger
    from fleetlens.pipeline.decode import Record, decode
    from fleetlens.pipeline.rollup import rollup
    from fleetlens.pipeline.store import Store

    from fleetlens.config import Definitions

    store = root / "store"
    load_ledger(str(FIXTURES / "e2e_allocations.csv"), str(store))
    lines = [ln for ln in (FIXTURES / "e2e_samples.ndjson").read_bytes().splitlines()
             if ln.strip()]
    frame, _ = decode([Record(0, i, b"n", ln) for i, ln in enumerate(lines)])
    st = Store(str(store))
    rows = rollup(frame.drop("_partition", "_offset"), st.read_ledger()[1], Definitions())
    assert rows.height
    st.write_rollups("fleetlens.samples", 0, 1, rows)
    return store


def _get(port: int, path: str, token: str | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.skipif(not _serve_available(), reason="`fleetlens serve` (fleetlens.api) is not on "
                    "this branch: Infinity routes are checked against dashboards/api_routes.json")
def test_infinity_targets_against_the_running_api(tmp_path):
    """Where the API exists: every route and parameter the dashboards use is in its OpenAPI
    spec, and every query, sent as Grafana would send it, answers rows with the columns the
    panel reads."""
    import hashlib

    store = _fixture_store(tmp_path)
    config = tmp_path / "fleetlens.toml"
    digest = hashlib.sha256(API_TOKEN.encode()).hexdigest()
    config.write_text(f'[api]\ntokens = [{{hash = "sha256:{digest}", tenant = "*"}}]\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "fleetlens", "--config", str(config), "serve",
                             "--store", str(store), "--host", "127.0.0.1", "--port", str(port)],
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        spec = None
        for _ in range(150):
            try:
                spec = _get(port, "/openapi.json")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.2)
        assert spec, "no /openapi.json from fleetlens serve"
        assert set(ROUTES) <= set(spec["paths"]), set(ROUTES) - set(spec["paths"])
        for _, panel, target in infinity_targets():
            op = spec["paths"][target["url"]]["get"]
            declared = {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}
            params = {p["key"]: p["value"] for p in target["url_options"]["params"]}
            assert set(params) <= declared, (target["url"], set(params) - declared)
            for var, value in VARIABLES.items():
                params = {k: v.replace(var, value) for k, v in params.items()}
            assert "$" not in json.dumps(params), params
            rows = _get(port, f"{target['url']}?{urllib.parse.urlencode(params)}", API_TOKEN)
            assert isinstance(rows, list) and rows, f"{panel['title']}: no rows from {params}"
            missing = {c["selector"] for c in target["columns"]} - set(rows[0])
            assert not missing, f"{panel['title']}: {target['url']} has no {missing}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- PromQL metric names ---------------------------------------------------------------------------
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and",
    "or", "unless", "inf", "nan",
}
# Series Prometheus itself writes for every scrape target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label matchers, grouping clauses, ranges,
    strings and function names removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\s*(\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_metric_name_parser():
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}'
                        '[$__rate_interval])))') == {"a_bucket"}
    assert metric_names("time() - max(b_seconds) + c{job=~\"fleetlens.*\"} == 1") == \
        {"b_seconds", "c"}
    assert metric_names('label_values(d{node=~"$node"}, uuid)') == {"d", "uuid"}


def promql_of(board: dict) -> list[str]:
    exprs = [t["expr"] for p, t in targets(board) if datasource_of(p, t).get("type") ==
             "prometheus"]
    for v in board["templating"].get("list", []):
        q = v.get("query")
        if v.get("type") == "query" and isinstance(q, str) and q.startswith("label_values("):
            inner = q[len("label_values("):-1]
            exprs.append(inner.rsplit(",", 1)[0])  # the selector; the label name is not a metric
    return exprs


def exported() -> set[str]:
    names = exported_names(PipelineMetrics().registry)
    if importlib.util.find_spec("fleetlens.collectors.agent_metrics"):
        from fleetlens.collectors import agent_metrics

        names |= exported_names(agent_metrics.make_registry(agent_metrics.AgentMetrics()))
    return names


def dcgm_csv_fields() -> set[str]:
    fields = set()
    for line in DCGM_CSV.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            field, kind, _ = (c.strip() for c in line.split(",", 2))
            if kind in ("gauge", "counter"):
                fields.add(field)
    return fields


@pytest.mark.parametrize("name", [p.name for p in FILES])
def test_every_promql_metric_is_exported(name):
    known = exported()
    dcgm = dcgm_csv_fields()
    exprs = promql_of(BOARDS[name])
    assert exprs
    for expr in exprs:
        for metric in metric_names(expr):
            if metric.startswith("DCGM_"):
                assert metric in dcgm, f"{metric} is not enabled in {DCGM_CSV.name}"
            else:
                assert metric in known | PROMETHEUS_SYNTHETIC, f"{expr!r}: {metric} not exported"


def test_dcgm_panels_use_profiling_fields_the_csv_enables():
    used = {m for b in BOARDS.values() for e in promql_of(b) for m in metric_names(e)
            if m.startswith("DCGM_")}
    assert {"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_GR_ENGINE_ACTIVE"} <= used
    assert used <= dcgm_csv_fields()
