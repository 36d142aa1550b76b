"""Shared pieces of the alerting tests (this module holds no tests itself).

* `Recorder`: a real webhook receiver (http.server on 127.0.0.1) that records every request
  and answers with scripted statuses, optionally hanging until released;
* `rollups(...)`: crafted rollup frames with the pipeline's ROLLUP_SCHEMA;
* `alerting(...)`: the real alerting runtime (evaluator, outbox, delivery threads) over a store
  directory, with a config written as TOML and loaded by the real loader.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
from fleetlens.pipeline.rollup import ROLLUP_SCHEMA

from fleetlens.alerts import Alerting
from fleetlens.alerts.config import load

T0 = 1794787200.0  # 2026-11-16T00:00:00Z, a Monday
H100 = "NVIDIA H100 80GB HBM3"


class Recorder:
    """A webhook receiver that records what it gets.

    `statuses`: the HTTP status of each request in turn (then 200). `hang`: when set, each
    request waits on `release` before answering (a receiver that hangs)."""

    def __init__(self, statuses: list[int] | None = None, hang: bool = False, port: int = 0):
        self.requests: list[dict] = []
        self.statuses = list(statuses or [])
        self.hang = hang
        self.release = threading.Event()
        self.started = threading.Event()  # a request arrived (hang mode: is hanging)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.answered = 0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                recorder.started.set()
                if recorder.hang:
                    recorder.release.wait(60)
                with recorder.cond:
                    status = recorder.statuses.pop(0) if recorder.statuses else 200
                    recorder.requests.append({
                        "path": self.path, "headers": {k.lower(): v for k, v in
                                                       self.headers.items()},
                        "raw": raw, "status": status, "at": time.monotonic(),
                        "body": json.loads(raw) if raw else None})
                    recorder.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                with recorder.cond:
                    recorder.answered += 1
                    recorder.cond.notify_all()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def ok(self) -> list[dict]:
        """Bodies of the requests answered 2xx, in order."""
        with self.lock:
            return [r["body"] for r in self.requests if 200 <= r["status"] < 300]

    def wait_for(self, n: int, timeout: float = 20.0) -> list[dict]:
        """Wait until `n` requests were answered 2xx; returns their bodies."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(200 <= r["status"] < 300 for r in self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [r["body"] for r in self.requests]
                    raise AssertionError(f"expected {n} deliveries, got {len(got)}: {got}")
                self.cond.wait(left)
        return self.ok

    def alerts(self) -> list[tuple[str, str, str]]:
        """(status, alertname, fingerprint) of every alert in the delivered bodies."""
        out = []
        for body in self.ok:
            for a in body.get("alerts", []):
                out.append((a["status"], a["labels"]["alertname"], a["fingerprint"]))
        return out


def minute(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def row(t: float, node: str = "n1", gpu: int = 0, tenant: str | None = "acme",
        state: str = "busy", **over) -> dict:
    """One GPU-minute of rollup: state busy | idle | held (idle, memory held)."""
    idle = state in ("idle", "held")
    r = {
        "minute": minute(t), "node": node, "gpu": gpu, "uuid": f"GPU-{node}-{gpu}",
        "mig_instance": None, "tenant": tenant, "tenant_source": "sample" if tenant else "none",
        "mig_profile": None, "model": H100, "model_key": "h100-sxm", "cluster": "c1",
        "namespace": None, "job_id": None, "samples": 1, "observed_s": 60.0,
        "busy_s": 0.0 if idle else 60.0, "idle_s": 60.0 if idle else 0.0,
        "idle_held_s": 60.0 if state == "held" else 0.0,
        "gpu_util_mean": 0.0 if idle else 95.0, "sm_active_mean": 0.0 if idle else 0.8,
        "tensor_active_mean": 0.0 if idle else 0.5, "power_w_mean": 90.0 if idle else 650.0,
        "energy_j": 5400.0, "temp_max_c": 35.0 if idle else 70.0,
        "fb_used_max_mib": 50000.0 if state == "held" else (4.0 if idle else 60000.0),
        "xid_count": 0, "xid_last": None, "throttled_s": 0.0,
        "mfu_s": 0.0 if idle else 30.0, "mfu_basis_s": 60.0,
        "mfu_busy_basis_s": 0.0 if idle else 60.0,
    }
    r.update(over)
    return r


def rollups(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ROLLUP_SCHEMA)


def minutes(start_min: int, count: int, **kw) -> list[dict]:
    """`count` consecutive minutes of one GPU from minute `start_min` after T0."""
    return [row(T0 + 60 * (start_min + i), **kw) for i in range(count)]


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def receiver_toml(name: str, url: str, fmt: str = "json", **extra) -> str:
    lines = ["[[receivers]]", f'name = "{name}"', f'url = "{url}"', f'format = "{fmt}"']
    extra = {"retry_initial": "0.1s", "retry_max": "0.5s", "timeout": "2s", **extra}
    for k, v in extra.items():
        if isinstance(v, dict):
            inner = ", ".join(f"{json.dumps(a)} = {json.dumps(b)}" for a, b in v.items())
            lines.append(f"{k} = {{ {inner} }}")
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


BASE = """
[alerts]
group_interval = "0s"
shutdown_drain = "3s"
"""


class Clock:
    """A settable wall clock for processing-time rules (group/repeat intervals, staleness)."""

    def __init__(self, t: float | None = None):
        self.t = time.time() if t is None else t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def alerting(tmp_path: Path, toml: str, store: Path | None = None, clock=None,
             start: bool = True) -> Alerting:
    cfg_path = write_config(tmp_path / f"alerts-{time.monotonic_ns()}.toml", toml)
    store = store or tmp_path / "store"
    a = Alerting(load(cfg_path), store, clock=clock or time.time)
    if start:
        a.start()
    return a
