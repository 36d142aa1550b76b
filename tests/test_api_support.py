"""Helpers for the API tests (this module holds no tests): a small hand-made store, tokens, and
the real API served by uvicorn on 127.0.0.1 in a background thread.

The store is written with the rollup contract itself (pipeline.rollup.ROLLUP_SCHEMA through
Store.write_rollups), so every figure below can be worked out by hand:

  range 2026-11-16T00:00Z .. 02:00Z, one rollup row per GPU-minute, 60 s each
  U0  node n1 gpu 0, H100 (catalog), cluster c1, tenant alpha all 120 min:
      busy minutes 0-89 (util 80, MFU 0.5, 500 W), idle-held minutes 90-119 (100 W)
  U1  node n1 gpu 1, H100, cluster c1: beta minutes 0-59, idle not held (80 W);
      unallocated minutes 60-119, busy (util 60, MFU 0.2, 400 W)
  U2  node n2 gpu 0, 'Acme X1' (unknown model: no MFU), cluster c2, tenant gamma all 120 min:
      busy minutes 0-59 (util 50, 300 W), idle minutes 60-119 (60 W)
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import uvicorn
from fleetlens.pipeline.rollup import ROLLUP_SCHEMA
from fleetlens.pipeline.store import Store

from fleetlens.api.app import create_app
from fleetlens.api.auth import hash_token
from fleetlens.broker import free_port

T0 = datetime(2026, 11, 16)
FROM, TO = "2026-11-16T00:00:00Z", "2026-11-16T02:00:00Z"
H100, UNKNOWN = "NVIDIA H100 80GB HBM3", "Acme X1"
TENANTS = ("alpha", "beta", "gamma")
ADMIN_TOKEN = "admin-token-for-tests-000001"
TOKENS = {t: f"{t}-token-for-tests-000001" for t in TENANTS}
H = 3600.0


def token_entries() -> list[dict]:
    return [{"hash": hash_token(ADMIN_TOKEN), "tenant": "*"}] + [
        {"hash": hash_token(tok), "tenant": t} for t, tok in TOKENS.items()]


def row(minute: int, node: str, gpu: int, uuid: str, model: str, cluster: str,
        tenant: str | None, *, busy: bool, held: bool = False, util: float = 0.0,
        mfu: float | None = None, power: float = 0.0) -> dict:
    known = model == H100
    return {
        "minute": T0 + timedelta(minutes=minute), "node": node, "gpu": gpu, "uuid": uuid,
        "mig_instance": None, "tenant": tenant,
        "tenant_source": "ledger" if tenant else "none", "mig_profile": None, "model": model,
        "model_key": "h100_sxm5_80gb" if known else None, "cluster": cluster,
        "namespace": None, "job_id": None, "samples": 1, "observed_s": 60.0,
        "busy_s": 60.0 if busy else 0.0, "idle_s": 0.0 if busy else 60.0,
        "idle_held_s": 60.0 if held else 0.0, "gpu_util_mean": util, "sm_active_mean": None,
        "tensor_active_mean": mfu if busy else 0.0, "power_w_mean": power,
        "energy_j": power * 60, "temp_max_c": None,
        "fb_used_max_mib": 50000.0 if held else 0.0, "xid_count": 0, "xid_last": None,
        "throttled_s": 0.0,
        "mfu_s": (mfu or 0.0) * 60 if known and busy else 0.0,
        "mfu_basis_s": 60.0 if known else 0.0,
        "mfu_busy_basis_s": 60.0 if known and busy else 0.0,
    }


def fixture_rows() -> list[dict]:
    rows = []
    for m in range(120):
        rows.append(row(m, "n1", 0, "U0", H100, "c1", "alpha", busy=m < 90, held=m >= 90,
                        util=80.0 if m < 90 else 0.0, mfu=0.5, power=500 if m < 90 else 100))
        if m < 60:
            rows.append(row(m, "n1", 1, "U1", H100, "c1", "beta", busy=False, power=80))
        else:
            rows.append(row(m, "n1", 1, "U1", H100, "c1", None, busy=True, util=60.0, mfu=0.2,
                            power=400))
        rows.append(row(m, "n2", 0, "U2", UNKNOWN, "c2", "gamma", busy=m < 60,
                        util=50.0 if m < 60 else 0.0, power=300 if m < 60 else 60))
    return rows


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ROLLUP_SCHEMA)


def write_fixture_store(root: Path) -> Store:
    """The rows above in three files over two partitions, as a pipeline would leave them."""
    store = Store(root)
    rows = fixture_rows()
    store.write_rollups("fleetlens.samples", 0, 1, frame(rows[:150]))
    store.write_rollups("fleetlens.samples", 0, 2, frame(rows[150:200]))
    store.write_rollups("fleetlens.samples", 1, 1, frame(rows[200:]))
    return store


# Hand-computed figures for [FROM, TO) (see the module docstring).
EXPECTED_SUMMARY = {
    "alpha": dict(gpu_hours_allocated=2.0, gpu_hours_busy=1.5, gpu_hours_idle=0.5,
                  gpu_hours_idle_held=0.5, mfu_allocated=0.5 * 90 / 120, mfu_busy=0.5,
                  energy_kwh=(500 * 90 + 100 * 30) * 60 / 3.6e6),
    "beta": dict(gpu_hours_allocated=1.0, gpu_hours_busy=0.0, gpu_hours_idle=1.0,
                 gpu_hours_idle_held=0.0, mfu_allocated=0.0, mfu_busy=None,
                 energy_kwh=80 * 60 * 60 / 3.6e6),
    "gamma": dict(gpu_hours_allocated=2.0, gpu_hours_busy=1.0, gpu_hours_idle=1.0,
                  gpu_hours_idle_held=0.0, mfu_allocated=None, mfu_busy=None,
                  energy_kwh=(300 + 60) * 60 * 60 / 3.6e6),
}
# No ledger file is loaded and no sample carries a GPU-down XID: nothing is unavailable.
EXPECTED_FLEET = {"gpu_hours_observed": 6.0, "gpu_hours_unallocated": 1.0,
                  "gpu_hours_unavailable": 0.0}
# Columns a per-tenant series bucket spanning the whole range shares with the report's tenant
# row. (gpu_hours_allocated is left out: where the ledger counts allocated GPU-seconds for which
# no sample arrived, the report adds them and the series, which shows observed data, does not.)
SERIES_AS_REPORT = ("gpu_hours_busy", "gpu_hours_idle", "gpu_hours_idle_held", "mfu_allocated",
                    "mfu_busy", "energy_kwh")


class LiveServer:
    """The API app under uvicorn on a free 127.0.0.1 port, in a background thread."""

    def __init__(self, store_dir: str | Path, tokens: list[dict] | None = None, **kwargs):
        self.app = create_app(str(store_dir), token_entries() if tokens is None else tokens,
                              **kwargs)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def get(self, path: str, token: str | None = None, **params) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.get(path, params=params, headers=headers)


def approx_equal(got, want, rel: float = 1e-9) -> bool:
    if want is None or got is None:
        return got is want
    return abs(got - want) <= rel * max(abs(want), 1e-12) + 1e-12
