"""Fuzzing every operation of the API's OpenAPI spec with schemathesis (against the real server
on 127.0.0.1): whatever the parameters, no 5xx, status codes and content types as documented.

Bounded so it stays well under a minute on two cores: a few dozen examples per operation, no
shrinking beyond Hypothesis' defaults, no deadline. Run once as admin and once with a tenant
token (the tenant-scoping code paths differ)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fleetlens.api.app import create_app
from tests.test_api_support import ADMIN_TOKEN, TOKENS, LiveServer, write_fixture_store


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "store"
    write_fixture_store(root)
    with LiveServer(root) as s:
        yield s


# The spec of the app the live server runs (the lazy `from_fixture` loader does not work with
# pytest 9), generated from the code at import time; requests still go over HTTP.
schema = schemathesis.openapi.from_dict(create_app("unused-store", []).openapi())


SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def call(case, live, token: str) -> None:
    case.call_and_validate(base_url=live.url, headers={"Authorization": f"Bearer {token}"},
                           checks=CHECKS)


@schema.parametrize()
@SETTINGS
def test_fuzz_as_admin(case, live):
    call(case, live, ADMIN_TOKEN)


@schema.parametrize()
@SETTINGS
def test_fuzz_as_tenant(case, live):
    call(case, live, TOKENS["beta"])
