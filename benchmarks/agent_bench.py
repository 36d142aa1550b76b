"""Agent footprint: CPU time and peak resident memory of a real `fleetlens agent` process.

    .venv/bin/python benchmarks/agent_bench.py [--seconds 60] [--interval 1] [--nodes 1]

Runs the agent (sim source, 1 node x 8 GPUs, 1 Hz by default) publishing through its spool to
an embedded Tansu broker, lets it settle, then measures over --seconds from /proc: user+system
CPU time of the agent process (all its threads) as a percentage of one core, and its peak RSS
(VmHWM). Prints figures; asserts nothing. Linux only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fleetlens.broker import EmbeddedBroker, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
DCGM_PAGE = ROOT.parent / "shared" / "reference" / "dcgm" / "dcgm_8xh100_synthetic.txt"
if not DCGM_PAGE.is_file():
    DCGM_PAGE = Path("/work/shared/reference/dcgm/dcgm_8xh100_synthetic.txt")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def status_kb(pid: int, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    p.add_argument("--settle", type=float, default=5.0, help="seconds before measuring")
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--nodes", type=int, default=1, help="simulated nodes, 8 GPUs each")
    p.add_argument("--source", choices=["sim", "dcgm"], default="sim",
                   help="dcgm: scrape a local HTTP server serving the recorded 8xH100 "
                        "dcgm-exporter page (../shared/reference/dcgm/)")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    p.add_argument("--no-metrics", action="store_true",
                   help="do not serve the agent's Prometheus metrics (served by default)")
    args = p.parse_args()

    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker())
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        if args.source == "dcgm":
            from benchmarks.common import StaticServer

            srv = stack.enter_context(StaticServer({"/metrics": DCGM_PAGE.read_bytes()}))
            source_args = ["--source", "dcgm", "--dcgm-url", srv.url("/metrics")]
        else:
            source_args = ["--source", "sim", "--nodes", str(args.nodes)]
        t_start = time.monotonic()
        agent = subprocess.Popen(
            [sys.executable, "-m", "fleetlens", "agent", *source_args,
             "--interval", str(args.interval),
             "--bootstrap", broker.bootstrap, "--topic", "bench.agent",
             "--spool-dir", str(Path(tmp) / "spool"),
             "--metrics-port", "0" if args.no_metrics else str(free_port())],
            stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("FLEETLENS_")})
        try:
            time.sleep(args.settle)
            if agent.poll() is not None:
                print(agent.stderr.read(), file=sys.stderr)
                return 1
            startup_cpu = cpu_seconds(agent.pid)
            rss_settled = status_kb(agent.pid, "VmRSS")
            t0, c0 = time.monotonic(), cpu_seconds(agent.pid)
            time.sleep(args.seconds)
            t1, c1 = time.monotonic(), cpu_seconds(agent.pid)
            rss_now = status_kb(agent.pid, "VmRSS")
            hwm = status_kb(agent.pid, "VmHWM")
            threads = len(os.listdir(f"/proc/{agent.pid}/task"))
        finally:
            agent.send_signal(signal.SIGTERM)
            _, err = agent.communicate(timeout=30)
        total = time.monotonic() - t_start

    summary = next((ln for ln in err.splitlines() if ln.startswith("agent: ticks=")), "")
    gpus = args.nodes * 8
    pct = 100.0 * (c1 - c0) / (t1 - t0)
    print(f"fleetlens agent, {args.source} source, {args.nodes} node(s) x 8 GPUs = {gpus} GPUs at "
          f"{1 / args.interval:g} Hz, publishing to Tansu through the spool, metrics "
          f"{'off' if args.no_metrics else 'served'}")
    print(f"  CPU (user+sys) over {t1 - t0:.0f} s:   {c1 - c0:.2f} s = {pct:.2f} % of one core")
    print(f"  CPU for start-up (first {args.settle:g} s): {startup_cpu:.2f} s")
    print(f"  RSS: {rss_settled / 1024:.1f} MB settled, {rss_now / 1024:.1f} MB at the end, "
          f"peak (VmHWM) {hwm / 1024:.1f} MB; {threads} threads")
    print(f"  agent exit {agent.returncode} after {total:.0f} s: {summary}")
    if args.json:
        print(json.dumps({"source": args.source, "gpus": gpus, "seconds": t1 - t0,
                          "cpu_pct": pct, "startup_cpu_s": startup_cpu,
                          "rss_settled_mb": rss_settled / 1024, "peak_rss_mb": hwm / 1024,
                          "threads": threads, "exit": agent.returncode}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
