"""`fleetlens agent` as a process: SIGTERM/SIGINT flush, restart with a spool left behind,
what it imports, its flags and [agent] config keys."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest
from fleetlens.collectors.sim import FleetSim
from fleetlens.collectors.spool import Spool

from fleetlens.broker import free_port
from fleetlens.config import ConfigError, load
from fleetlens.schema import encode_message
from tests.conftest import run_cli
from tests.test_agent_support import (
    ROOT,
    check_delivery,
    read_topic,
    start_agent,
    stop_agent,
    summary,
    tick_log,
    wait_until,
)

SEED, NODES, INTERVAL = 11, 3, 1.0


def args(bootstrap: str, topic: str, tmp_path, *extra: str) -> list[str]:
    return ["--source", "sim", "--nodes", str(NODES), "--seed", str(SEED),
            "--interval", str(INTERVAL), "--bootstrap", bootstrap, "--topic", topic,
            "--spool-dir", str(tmp_path / "spool"), "--tick-log", str(tmp_path / "ticks.ndjson"),
            *extra]


@pytest.mark.broker
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_right_after_the_first_tick_still_delivers_it(broker, topic, tmp_path, sig):
    """The first tick is spooled while the sender is still connecting; the signal's flush
    must finish connecting and deliver it before the process exits 0."""
    log = tmp_path / "ticks.ndjson"
    agent = start_agent(*args(broker.bootstrap, topic, tmp_path))
    try:
        wait_until(lambda: len(tick_log(log)) >= NODES, 30, "the first tick", agent)
        code, err = stop_agent(agent, sig)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert code == 0, err
    produced = tick_log(log)
    s = summary(err)
    assert s["sent"] == len(produced) >= NODES and s["spool_messages"] == 0
    check_delivery(read_topic(broker.bootstrap, topic), produced, SEED, NODES, INTERVAL)
    with Spool(tmp_path / "spool", max_bytes=1 << 20) as spool:
        assert spool.backlog == (0, 0)


@pytest.mark.broker
def test_sigterm_without_broker_spools_and_the_next_run_delivers_everything(
        broker, topic, tmp_path):
    log = tmp_path / "ticks.ndjson"
    dead = f"127.0.0.1:{free_port()}"
    agent = start_agent(*args(dead, topic, tmp_path),
                        env={"FLEETLENS_AGENT_FLUSH_TIMEOUT_S": "1.0"})
    try:
        wait_until(lambda: len(tick_log(log)) >= 3 * NODES, 30, "3 ticks", agent)
        code, err = stop_agent(agent, signal.SIGTERM, timeout=10)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    assert code == 0, err
    first = tick_log(log)
    s = summary(err)
    assert s["sent"] == 0 and s["spool_messages"] == len(first) == s["spooled"]
    assert "left in the spool" in err
    # Exactly what was produced is on disk, in order, byte for byte.
    sim = FleetSim(seed=SEED, nodes=NODES)
    nodes = {n.name: n for n in sim.nodes}
    with Spool(tmp_path / "spool", max_bytes=1 << 20) as spool:
        on_disk = [(r.key.decode(), r.value) for r in spool.take(1000)]
    assert on_disk == [(e["node"], encode_message(sim.node_samples(nodes[e["node"]], e["ts"],
                                                                   INTERVAL))) for e in first]
    # A new run against a live broker sends the old run's messages first, then its own.
    proc = run_cli("agent", *args(broker.bootstrap, topic, tmp_path, "--once"))
    produced = tick_log(log)
    assert len(produced) == len(first) + NODES
    assert summary(proc.stderr)["sent"] == len(produced)
    check_delivery(read_topic(broker.bootstrap, topic), produced, SEED, NODES, INTERVAL)


def test_agent_does_not_import_polars_or_duckdb(tmp_path):
    code = textwrap.dedent("""
        import sys
        from fleetlens.cli import main
        import fleetlens.collectors.agent, fleetlens.collectors.publish
        import fleetlens.collectors.spool, fleetlens.collectors.agent_metrics
        import fleetlens.collectors.sim, fleetlens.collectors.source, fleetlens.kafka_client
        from fleetlens.collectors.agent_metrics import AgentMetrics, make_registry
        make_registry(AgentMetrics())
        assert main(["agent", "--stdout", "--once", "--nodes", "1"]) == 0
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("polars", "duckdb"))
        print(json.dumps(heavy), file=sys.stderr)
    """).replace("import sys", "import json, sys")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 8  # the one tick it printed: 8 GPU lines
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []


def test_stdout_once_still_prints_one_tick():
    proc = run_cli("agent", "--stdout", "--once", "--nodes", "2", "--interval", "60")
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(lines) == 16 and {x["node"] for x in lines} == {"gpu-node-000", "gpu-node-001"}
    assert len({x["ts"] for x in lines}) == 1 and lines[0]["ts"] % 60 == 0


@pytest.mark.parametrize("flags, message", [
    (["--spool-max-mb", "0"], "--spool-max-mb must be > 0"),
    (["--metrics-port", "70000"], "--metrics-port must be within 0..65535"),
    (["--interval", "-1"], "--interval must be > 0"),
])
def test_bad_agent_flags_exit_2_with_one_line(flags, message):
    proc = run_cli("agent", "--bootstrap", "127.0.0.1:1", *flags, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_spool_directory_used_by_another_agent_exits_2(tmp_path):
    with Spool(tmp_path / "spool", max_bytes=1 << 20):
        proc = run_cli("agent", "--bootstrap", "127.0.0.1:1", "--once",
                       "--spool-dir", str(tmp_path / "spool"), check=False)
    assert proc.returncode == 2 and "in use by another agent" in proc.stderr


def test_agent_config_keys_and_environment(tmp_path):
    cfg_file = tmp_path / "f.toml"
    cfg_file.write_text('[agent]\nspool_dir = "/x/spool"\nspool_max_mb = 12\n'
                        'metrics_port = 9400\nflush_timeout_s = 2\n')
    a = load(cfg_file, environ={"FLEETLENS_AGENT_SPOOL_MAX_MB": "0.5"}).agent
    assert (a.spool_dir, a.spool_max_mb, a.metrics_port, a.flush_timeout_s) == (
        "/x/spool", 0.5, 9400, 2.0)
    for bad in ["spool_max_mb = 0", "metrics_port = -1", "flush_timeout_s = -1",
                'spool_dir = ""']:
        cfg_file.write_text(f"[agent]\n{bad}\n")
        with pytest.raises(ConfigError, match=bad.split()[0]):
            load(cfg_file, environ={})


def test_example_config_lists_every_agent_key():
    import tomllib
    from dataclasses import fields

    from fleetlens.config import AgentConfig

    example = tomllib.loads((ROOT / "fleetlens.example.toml").read_text())["agent"]
    defaults = AgentConfig()
    assert set(example) == {f.name for f in fields(AgentConfig)}
    assert all(example[k] == getattr(defaults, k) for k in example)
