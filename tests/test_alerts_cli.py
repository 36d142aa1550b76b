"""`fleetlens alerts test|check|receiver` and config validation, through the real CLI."""

from __future__ import annotations

import hashlib
import hmac
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetlens.alerts.config import load
from tests.conftest import cli_env, run_cli
from tests.test_alerts_delivery import free_port
from tests.test_alerts_support import Recorder, receiver_toml

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "alerts.example.toml"


def test_alerts_test_reports_each_receiver(tmp_path):
    down = free_port()
    with Recorder() as good, Recorder(statuses=[500]) as bad:
        cfg = tmp_path / "alerts.toml"
        cfg.write_text(receiver_toml("good", good.url, "alertmanager", hmac_secret="k")
                       + receiver_toml("bad", bad.url, "slack")
                       + receiver_toml("down", f"http://127.0.0.1:{down}/x", "json"))
        proc = run_cli("alerts", "test", "--config", str(cfg), check=False)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stdout.splitlines()
        assert re.match(r"receiver good \(alertmanager, http://127\.0\.0\.1:\d+\) firing: ok: "
                        r"ok, HTTP 200 in", lines[0]), lines
        assert "receiver bad (slack" in lines[1] and "FAILED: failed (http_5xx): HTTP 500" \
            in lines[1]
        assert "receiver down (json" in lines[2] and "FAILED: failed (network)" in lines[2]
        assert "1 sent, 2 failed" in proc.stderr
        [body] = good.ok
        assert body["version"] == "4"
        assert body["alerts"][0]["labels"]["alertname"] == "FleetlensTestAlert"
        req = good.requests[0]
        ts = req["headers"]["x-fleetlens-timestamp"]
        mac = hmac.new(b"k", ts.encode() + b"." + req["raw"], hashlib.sha256).hexdigest()
        assert req["headers"]["x-fleetlens-signature-256"] == f"sha256={mac}"
        assert [r["status"] for r in bad.requests] == [500]  # one attempt, no retries


def test_alerts_test_all_ok_and_resolve(tmp_path):
    with Recorder() as rec:
        cfg = tmp_path / "alerts.toml"
        cfg.write_text(receiver_toml("pd", rec.url, "pagerduty", routing_key="K" * 32))
        proc = run_cli("alerts", "test", "--config", str(cfg), "--resolve")
        assert proc.returncode == 0
        assert [b["event_action"] for b in rec.ok] == ["trigger", "resolve"]
        assert rec.ok[0]["dedup_key"] == rec.ok[1]["dedup_key"]


def test_receiver_command_prints_alerts_and_checks_the_signature(tmp_path):
    port = free_port()
    out = tmp_path / "got.ndjson"
    recv = subprocess.Popen(
        [sys.executable, "-m", "fleetlens", "alerts", "receiver", "--port", str(port),
         "--hmac-secret", "k", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env())
    try:
        first = recv.stdout.readline()
        assert first.strip() == f"receiver: listening on http://127.0.0.1:{port}/"
        cfg = tmp_path / "alerts.toml"
        url = f"http://127.0.0.1:{port}/hooks/alertmanager"
        cfg.write_text(receiver_toml("ok", url, "alertmanager", hmac_secret="k")
                       + receiver_toml("wrong", url, "json", hmac_secret="nope"))
        proc = run_cli("alerts", "test", "--config", str(cfg), "--resolve", check=False)
        assert proc.returncode == 1
        assert "receiver ok (alertmanager" in proc.stdout
        assert "FAILED: failed (http_4xx): HTTP 401" in proc.stdout
        lines = [recv.stdout.readline().strip() for _ in range(4)]
        assert lines[0].startswith("receiver: FIRING   FleetlensTestAlert [info] tenant=test "
                                   "node=test-node gpu=0 - Test alert")
        assert lines[1].startswith("receiver: RESOLVED FleetlensTestAlert")
        assert lines[2] == "receiver: REJECTED /hooks/alertmanager: bad signature"
        assert len(out.read_text().splitlines()) == 2
    finally:
        recv.terminate()
        recv.wait(10)


@pytest.mark.parametrize("toml, message", [
    ('[rules.gpu_idle]\nfor = "5x"\n',
     '[rules.gpu_idle] for = \'5x\' is not a duration like "90s", "30m", "4h"'),
    ("[rules.gpu_idle]\nfro = \"5m\"\n", "unknown key [rules.gpu_idle] fro (known: enabled, "),
    ("[rules.idle]\n", "unknown rule [rules.idle] (known: gpu_idle, low_mfu, xid"),
    ("[rules.low_mfu]\nthreshold = 1.5\n", "[rules.low_mfu] threshold = 1.5 must be within"),
    ("[rules.stale.tenants.acme]\nfor = \"1m\"\n", "unknown key [rules.stale] tenants"),
    ("[rules.throttle.tenants.acme]\nseverity = \"page\"\n",
     "[rules.throttle.tenants.acme] severity = 'page' is not one of critical, error"),
    ("[alerts]\ngroup_interval = \"soon\"\n", "[alerts] group_interval = 'soon' is not a"),
    ("[alerting]\n", "unknown section [alerting]"),
    ('[[receivers]]\nname = "a"\nformat = "xml"\nurl = "http://x"\n',
     '[[receivers]] #1 (a) format = \'xml\' is not one of alertmanager, slack, pagerduty'),
    ('[[receivers]]\nname = "a"\n', "[[receivers]] #1 (a) url is required"),
    ('[[receivers]]\nname = "a"\nurl = "ftp://x"\n', "url 'ftp://x' must start with http"),
    ('[[receivers]]\nname = "a"\nurl = "http://x"\n[[receivers]]\nname = "a"\nurl = "http://y"\n',
     "[[receivers]] #2 (a) name 'a' is used twice"),
    ('[[receivers]]\nname = "p"\nurl = "http://x"\nformat = "pagerduty"\n',
     "format pagerduty needs routing_key"),
    ('[[receivers]]\nname = "a"\nurl = "http://x"\nhmac_secret_env = "NOPE_NOT_SET_X"\n',
     "hmac_secret_env names NOPE_NOT_SET_X, which is not set"),
    ('[[receivers]]\nname = "a"\nurl = "http://x"\nseverities = ["page"]\n',
     "severities: 'page' is not one of"),
    ("not toml [", "is not valid TOML"),
])
def test_config_errors_are_one_line_naming_the_key(tmp_path, toml, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    proc = run_cli("alerts", "check", "--config", str(cfg), check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"fleetlens alerts: {cfg}") or "not valid TOML" in message
    assert message in proc.stderr, proc.stderr


def test_pipeline_refuses_a_bad_alerts_file_before_consuming(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[rules.xid]\nclear_after = "-1m"\n')
    t = time.monotonic()
    proc = run_cli("pipeline", "--bootstrap", "127.0.0.1:1", "--store", str(tmp_path / "s"),
                   "--alerts", str(cfg), check=False)
    assert proc.returncode == 2
    assert "[rules.xid] clear_after = '-1m' is not a duration" in proc.stderr
    assert time.monotonic() - t < 60


def test_example_config_is_valid_and_check_prints_it():
    cfg = load(EXAMPLE)
    assert cfg.rules["gpu_idle"].get("for", "research") == 7200
    assert cfg.rules["gpu_idle"].get("for", "acme") == 1800
    proc = run_cli("alerts", "check", "--config", str(EXAMPLE))
    assert "rule gpu_idle  on  GpuIdleWhileAllocated/GpuIdleHeldWhileAllocated: for=30m" \
        in proc.stdout
    assert "receiver local: alertmanager -> http://127.0.0.1:9095 route[all]" in proc.stdout
