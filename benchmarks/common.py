"""Shared helpers for the benchmark suite: machine description, /proc readings, subprocesses,
pre-encoded schema-v1 messages, a tiny static HTTP server. Plain Python; asserts nothing."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import platform
import re
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def machine() -> dict:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    return {"cores": os.cpu_count(), "ram_gib": round(mem_kb / 1024 / 1024, 1),
            "cpu": model, "python": platform.python_version(),
            "kernel": platform.release()}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def status_kb(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLENS_")}
    env.update(extra)
    return env


def fleetlens_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleetlens", *args]


def run_measured(cmd: list[str], env: dict | None = None, timeout: float = 600.0
                 ) -> tuple[int, str, str, float, float, int]:
    """Run to completion; (rc, stdout, stderr, wall s, child CPU s user+sys, peak RSS kB)."""
    t0 = time.monotonic()
    proc = start(cmd, env)
    out, err = proc.finish(timeout)
    return proc.returncode, out, err, time.monotonic() - t0, proc.cpu, proc.maxrss_kb


def _communicate(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    t_out = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    t_err = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    t_out.start()
    t_err.start()
    deadline = time.monotonic() + timeout
    # Peak RSS comes from /proc VmHWM, polled: the child's own high-water mark. wait4's
    # ru_maxrss is not usable here, because Linux carries the high-water mark of the memory
    # image replaced by exec (the benchmark's own, often GBs) into the child's figure.
    hwm = 0
    while True:
        hwm = max(hwm, status_kb(proc.pid, "VmHWM"))
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.cpu = ru.ru_utime + ru.ru_stime  # type: ignore[attr-defined]
    proc.maxrss_kb = hwm  # type: ignore[attr-defined]
    t_out.join(10)
    t_err.join(10)
    return "".join(out_chunks), "".join(err_chunks)


class Popen(subprocess.Popen):
    """A child whose CPU time is collected at exit with wait4 and peak RSS from /proc VmHWM."""

    def finish(self, timeout: float = 60.0) -> tuple[str, str]:
        return _communicate(self, timeout)


def start(cmd: list[str], env: dict | None = None) -> Popen:
    return Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                 env=env or clean_env())


def pipeline_summary(stderr: str) -> dict:
    for line in reversed(stderr.splitlines()):
        if line.startswith("pipeline: {"):
            return json.loads(line[len("pipeline: "):])
    raise RuntimeError("no pipeline summary in its stderr:\n" + stderr[-2000:])


# -- schema-v1 messages -----------------------------------------------------------------------
def encoded_fleet(gpus: int, ticks: int, t0: float, interval_s: float = 1.0,
                  distinct: int = 8) -> list[tuple[bytes, bytes]]:
    """(key, value) of one message per node per tick for `gpus` simulated GPUs.

    The simulator makes `distinct` ticks; later ticks reuse one of them with `ts` rewritten
    (string replacement on the encoded bytes), so producing millions of samples costs seconds,
    not the simulator's ~12k samples/s. Values are realistic; only their variety is bounded.
    """
    from fleetlens.collectors.sim import FleetSim

    from fleetlens.schema import encode_message

    nodes = max(1, gpus // 8)
    sim = FleetSim(seed=7, nodes=nodes, gpus_per_node=8, tenants=5)
    templates = []
    for k in range(min(distinct, ticks)):
        t = t0 + k * interval_s
        templates.append([(node.encode(), encode_message(samples), f'"ts":{t!r}'.encode())
                          for node, samples in sim.collect(t, interval_s)])
    out = []
    for k in range(ticks):
        t = t0 + k * interval_s
        new_ts = f'"ts":{t!r}'.encode()
        for key, value, old_ts in templates[k % len(templates)]:
            out.append((key, value if k < len(templates) else value.replace(old_ts, new_ts)))
    return out


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]],
            partitions: int = 4) -> float:
    """Create `topic` and produce the messages (keyed by node, zstd as configured); seconds."""
    from fleetlens.config import KafkaConfig
    from fleetlens.kafka_client import ensure_topics, make_producer

    cfg = KafkaConfig(bootstrap=bootstrap, samples_topic=topic, partitions=partitions)
    ensure_topics(cfg, [topic])
    prod = make_producer(cfg)
    t0 = time.monotonic()
    for key, value in messages:
        prod.send(topic, key=key, value=value)
    prod.flush()
    prod.close()
    return time.monotonic() - t0


# -- static HTTP ------------------------------------------------------------------------------
class StaticServer:
    """Serve {path: bytes} on 127.0.0.1 from a thread (pages may be swapped while running)."""

    def __init__(self, pages: dict[str, bytes]):
        self.pages = pages
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                # the scraper may hang up (Prometheus stopping)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._get()

            def _get(self):
                body = outer.pages.get(self.path.split("?")[0])
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StaticServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    i = min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))
    return v[i]
