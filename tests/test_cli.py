"""The command line as users run it: agent output, the broker command, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from kafka import KafkaAdminClient

from fleetlens.broker import free_port
from fleetlens.schema import FIELD_NAMES, parse_line
from tests.conftest import cli_env, run_cli


def test_agent_stdout_once_prints_valid_schema_v1_ndjson():
    out = run_cli("agent", "--source", "sim", "--stdout", "--once", "--nodes", "3").stdout
    lines = out.splitlines()
    assert len(lines) == 3 * 8
    samples = [parse_line(x) for x in lines]  # raises on any invalid line
    assert {s["node"] for s in samples} == {"gpu-node-000", "gpu-node-001", "gpu-node-002"}
    assert all(list(json.loads(x)) == list(FIELD_NAMES) for x in lines)
    assert len({(s["uuid"], s["ts"]) for s in samples}) == 24


def test_simulator_is_deterministic_and_matches_its_ledger():
    args = ("sim", "ledger", "--from", "2026-11-16", "--to", "2026-11-17", "--nodes", "2")
    assert run_cli(*args).stdout == run_cli(*args).stdout
    first = run_cli("agent", "--stdout", "--nodes", "2", "--interval", "3600",
                    "--backfill-from", "2026-11-16", "--backfill-to", "2026-11-16T03:00:00Z")
    again = run_cli("agent", "--stdout", "--nodes", "2", "--interval", "3600",
                    "--backfill-from", "2026-11-16", "--backfill-to", "2026-11-16T03:00:00Z")
    assert first.stdout == again.stdout and len(first.stdout.splitlines()) == 2 * 8 * 3


def test_agent_imports_nothing_heavy():
    code = ("import sys; import fleetlens.cli, fleetlens.collectors.agent, "
            "fleetlens.collectors.publish, fleetlens.collectors.sim, fleetlens.kafka_client; "
            "print(sorted(m for m in ('polars', 'duckdb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_broker_command_serves_kafka_and_stops_on_sigterm():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fleetlens", "broker", "--port", str(port)],
                            stdout=subprocess.PIPE, text=True, env=cli_env())
    try:
        assert proc.stdout is not None
        assert f"broker ready on 127.0.0.1:{port}" in proc.stdout.readline()
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        assert isinstance(admin.list_topics(), list)
        admin.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "broker stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("args, fragment", [
    (["report", "range", "--from", "2026-11-17", "--to", "2026-11-16"],
     "--to must be after --from"),
    (["report", "range", "--from", "last tuesday", "--to", "2026-11-16"],
     "is not an RFC 3339 time"),
    (["report", "range", "--from", "2026-11-16T00:00:00", "--to", "2026-11-17"],
     "has no UTC offset"),
    (["allocations", "load", "/nonexistent.csv"], "no such file"),
    (["replay", "/nonexistent.ndjson", "--bootstrap", "127.0.0.1:1"], "no such file"),
    (["agent", "--source", "sim"], "give --bootstrap"),
    (["agent", "--stdout", "--backfill-from", "2026-11-16"], "go together"),
    (["agent", "--stdout", "--tenants", "99"], "at most 10 tenants"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, args, fragment):
    if args[0] in ("report", "allocations"):
        args = [*args, "--store", str(tmp_path)]
    proc = run_cli(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and fragment in proc.stderr


def test_report_on_an_empty_store_is_empty_not_an_error(tmp_path):
    out = json.loads(run_cli("report", "range", "--store", str(tmp_path), "--from",
                             "2026-11-16", "--to", "2026-11-17", "--format", "json").stdout)
    assert out["tenants"] == [] and out["fleet"]["gpu_hours_observed"] == 0


def test_report_sql_parameters_are_bound_not_pasted(tmp_path):
    hostile = "x' OR 1=1; DROP TABLE rollups; --"
    out = json.loads(run_cli("report", "range", "--store", str(tmp_path), "--from",
                             "2026-11-16", "--to", "2026-11-17", "--tenant", hostile,
                             "--format", "json").stdout)
    assert out["tenants"] == []
