"""Fuzzing every operation of the API's OpenAPI spec with schemathesis against the real server on
127.0.0.1: whatever the parameters, no 5xx, and every answer's status code and content type is
one the spec documents for that route (JSON answers: an array of objects, or an error object).

Schemathesis generates the requests; they are sent with httpx and checked here rather than with
`case.call_and_validate`, whose requests-based transport breaks when `urllib3-future` (pulled in
by niquests, a dependency of grafana-client) replaces urllib3 in the same environment.
Bounded so it stays well under a minute on two cores: 25 examples per operation (plus
schemathesis' explicit-example and coverage cases), derandomized, no deadline. Run once as admin
and once with a tenant token (the tenant-scoping code paths differ)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from fleetlens.api.app import create_app
from tests.test_api_support import ADMIN_TOKEN, TOKENS, LiveServer, write_fixture_store

# The spec of the app the live server runs (the lazy `from_fixture` loader does not work with
# pytest 9), generated from the code at import time; requests go over HTTP to the live server.
SPEC = create_app("unused-store", []).openapi()
schema = schemathesis.openapi.from_dict(SPEC)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "store"
    write_fixture_store(root)
    with LiveServer(root) as s:
        yield s


def call(case, live, token: str) -> None:
    headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    r = live.client.request(case.method, case.formatted_path, params=case.query,
                            headers=headers)
    where = f"{case.method} {r.request.url} -> {r.status_code}: {r.text[:300]}"
    assert r.status_code < 500, where
    operations = SPEC["paths"][case.path]
    if case.method.lower() not in operations:  # schemathesis also tries undocumented methods
        assert r.status_code == 405, where
        return
    documented = operations[case.method.lower()]["responses"]
    assert str(r.status_code) in documented, where
    ctype = r.headers["content-type"].split(";")[0]
    assert ctype in documented[str(r.status_code)]["content"], where
    if ctype == "application/json":
        body = r.json()
        if r.status_code == 200:
            assert isinstance(body, list) and all(isinstance(x, dict) for x in body), where
        else:
            assert isinstance(body, dict) and isinstance(body.get("error"), str), where


SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


@schema.parametrize()
@SETTINGS
def test_fuzz_as_admin(case, live):
    call(case, live, ADMIN_TOKEN)


@schema.parametrize()
@SETTINGS
def test_fuzz_as_tenant(case, live):
    call(case, live, TOKENS["beta"])
