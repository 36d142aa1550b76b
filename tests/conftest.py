"""Shared fixtures: one real Tansu broker per test session, unique topics per test."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fleetlens.broker import EmbeddedBroker

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture
def topic() -> str:
    """A fresh samples topic per test (topics are never shared between tests)."""
    return f"samples-{uuid.uuid4().hex[:10]}"


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLENS_")}
    env.update(extra or {})
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run the real `fleetlens` command line in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "fleetlens", *args], capture_output=True,
                          text=True, env=cli_env(env), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"fleetlens {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
