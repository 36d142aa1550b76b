"""API building blocks without a server: parameter parsing, tokens, the [api] config section,
`fleetlens api hash-token` and `fleetlens serve` refusing to start without tokens."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta

import pytest

from fleetlens import config
from fleetlens.api import params as P
from fleetlens.api.auth import Principal, TokenTable, hash_token
from tests.conftest import run_cli


# -- times, steps, metrics ---------------------------------------------------------------------
@pytest.mark.parametrize("text,want", [
    ("2026-11-16T00:00:00Z", datetime(2026, 11, 16, tzinfo=UTC)),
    ("2026-11-16T02:30:00+02:30", datetime(2026, 11, 16, tzinfo=UTC)),
    ("2026-11-16", datetime(2026, 11, 16, tzinfo=UTC)),
    ("1794787200000", datetime(2026, 11, 16, tzinfo=UTC)),  # Grafana ${__timeFrom}
    ("1794787200123", datetime(2026, 11, 16, 0, 0, 0, 123000, tzinfo=UTC)),
    ("0", datetime(1970, 1, 1, tzinfo=UTC)),
])
def test_parse_time(text, want):
    assert P.parse_time(text, "from") == want


@pytest.mark.parametrize("text", [None, "", "NaN", "inf", "-5", "1.5e12", "2026-11-16T00:00:00",
                                  "yesterday", "2026-02-30", "9999999999999999",
                                  "1969-12-31T23:59:59Z", "2200-01-01", "x" * 1000])
def test_parse_time_refuses(text):
    with pytest.raises(P.ApiError) as exc:
        P.parse_time(text, "from")
    assert exc.value.status == 400 and "'from'" in exc.value.message


def test_parse_range():
    t0, t1 = P.parse_range("2026-11-16", "2026-11-17")
    assert t1 - t0 == timedelta(days=1)
    for a, b in [("2026-11-17", "2026-11-16"), ("2026-11-16", "2026-11-16"),
                 ("1980-01-01", "2000-01-01")]:
        with pytest.raises(P.ApiError):
            P.parse_range(a, b)


@pytest.mark.parametrize("text,minutes", [("1m", 1), ("5m", 5), ("1h", 60), ("90m", 90),
                                          ("1d", 1440), ("1w", 10080), ("3600s", 60),
                                          ("120", 2), (" 2H ", 120)])
def test_parse_step(text, minutes):
    assert P.parse_step(text) == timedelta(minutes=minutes)


@pytest.mark.parametrize("text", [None, "", "0", "0m", "30s", "90s", "-1h", "1.5h", "NaN", "1y",
                                  "1h30m", "9999999999w", "999999w"])
def test_parse_step_refuses(text):
    with pytest.raises(P.ApiError):
        P.parse_step(text)


def test_points_limit():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    P.check_points(t0, t0 + timedelta(minutes=10_000), timedelta(minutes=1), 10_000)
    with pytest.raises(P.ApiError, match="10001 buckets"):
        P.check_points(t0, t0 + timedelta(minutes=10_001), timedelta(minutes=1), 10_000)
    assert P.bucket_count(t0, t0 + timedelta(minutes=61), timedelta(hours=1)) == 2


def test_parse_metrics():
    assert P.parse_metrics(None) == list(P.SERIES_METRICS)
    assert P.parse_metrics(["mfu_busy,gpus", "gpus", " energy_kwh "]) == [
        "mfu_busy", "gpus", "energy_kwh"]
    for bad in (["nope"], ["gpus,tenant"], ["gpus;DROP TABLE rollups"]):
        with pytest.raises(P.ApiError, match="unknown metric"):
            P.parse_metrics(bad)


# -- tokens ------------------------------------------------------------------------------------
def test_tokens_and_headers():
    table = TokenTable([{"hash": hash_token("admin-secret-token"), "tenant": "*"},
                        {"hash": hash_token("acme-secret-token"), "tenant": "acme"}])
    assert hash_token("x") == "sha256:" + hashlib.sha256(b"x").hexdigest()
    assert table.authenticate("Bearer admin-secret-token") == Principal(None)
    assert table.authenticate("bearer   acme-secret-token ") == Principal("acme")
    basic = base64.b64encode(b"grafana:acme-secret-token").decode()
    assert table.authenticate(f"Basic {basic}") == Principal("acme")
    for header in (None, "", "Bearer", "Bearer wrong", "Token acme-secret-token",
                   "acme-secret-token", "Basic !!!", "Basic " + base64.b64encode(b"acme").decode(),
                   "Bearer " + hash_token("acme-secret-token")):
        with pytest.raises(P.ApiError) as exc:
            table.authenticate(header)
        assert exc.value.status == 401


def test_principal_scope():
    admin, acme = Principal(None), Principal("acme")
    assert admin.scope(None) is None and admin.scope("beta") == "beta"
    assert acme.scope(None) == "acme" and acme.scope("acme") == "acme"
    with pytest.raises(P.ApiError) as exc:
        acme.scope("beta")
    assert exc.value.status == 403
    with pytest.raises(P.ApiError):
        acme.require_admin("/v1/fleet")
    admin.require_admin("/v1/fleet")


# -- config and CLI ----------------------------------------------------------------------------
def write(tmp_path, text: str):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_api_config(tmp_path):
    h = hash_token("some-long-token-123")
    cfg = config.load(write(tmp_path, f'[api]\nport = 9000\ntokens = [{{hash = "{h}", '
                                      'tenant = "*"}]\n'), environ={})
    assert cfg.api.port == 9000 and cfg.api.tokens == [{"hash": h, "tenant": "*"}]
    assert config.load(environ={"FLEETLENS_API_PORT": "9100"}).api.port == 9100
    for bad, msg in [
        ('tokens = [{hash = "sha256:abc", tenant = "*"}]', "64 lowercase hex"),
        (f'tokens = [{{hash = "{h}"}}]', "exactly the keys hash and tenant"),
        (f'tokens = [{{hash = "{h}", tenant = ""}}]', "tenant must be"),
        (f'tokens = [{{hash = "{h}", tenant = "*"}}, {{hash = "{h}", tenant = "a"}}]',
         "repeats a hash"),
        ('tokens = ["sha256:x"]', "must be a table"),
        ('tokens = "x"', "must be list"),
        ("port = 0", "port"),
        ("max_points = 0", "max_points"),
        ("colour = 1", "unknown key [api] colour"),
    ]:
        with pytest.raises(config.ConfigError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            config.load(write(tmp_path, f"[api]\n{bad}\n"), environ={})


def test_hash_token_command(tmp_path):
    out = run_cli("api", "hash-token", "my-grafana-token-1234", "--tenant", "acme-ai")
    line = out.stdout.strip()
    assert line == f'{{hash = "{hash_token("my-grafana-token-1234")}", tenant = "acme-ai"}},'
    # A fresh random token: printed on stderr only, its hash on stdout, loadable as config.
    out = run_cli("api", "hash-token")
    token = out.stderr.strip().rsplit(" ", 1)[1]
    assert len(token) >= 32 and token not in out.stdout
    cfg_text = f"[api]\ntokens = [\n{out.stdout}]\n"
    assert tomllib.loads(cfg_text)["api"]["tokens"][0]["hash"] == hash_token(token)
    cfg = config.load(write(tmp_path, cfg_text), environ={})
    assert TokenTable(cfg.api.tokens).authenticate(f"Bearer {token}") == Principal(None)
    # From stdin, so the token stays out of the shell history.
    proc = subprocess.run([sys.executable, "-m", "fleetlens", "api", "hash-token", "-"],
                          input="piped-token-abcdefgh\n", capture_output=True, text=True)
    assert hash_token("piped-token-abcdefgh") in proc.stdout
    short = run_cli("api", "hash-token", "short", check=False)
    assert short.returncode == 2 and "at least 16" in short.stderr


def test_serve_refuses_without_tokens_or_store(tmp_path):
    out = run_cli("serve", "--store", str(tmp_path), check=False)
    assert out.returncode == 2 and "no [api] tokens configured" in out.stderr
    cfg = write(tmp_path, f'[api]\ntokens = [{{hash = "{hash_token("t" * 20)}", '
                          'tenant = "*"}]\n')
    out = run_cli("--config", str(cfg), "serve", "--store", str(tmp_path / "nope"), check=False)
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_agent_side_does_not_import_the_web_stack():
    code = ("import sys, fleetlens.cli, fleetlens.collectors.agent; "
            "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'fleetlens.api') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
