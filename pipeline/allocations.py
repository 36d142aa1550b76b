"""`fleetlens allocations load`: validate a ledger CSV and store it as a new version."""

from __future__ import annotations

from pathlib import Path

from fleetlens.pipeline.store import Store
from fleetlens.pipeline.tenancy import ledger_frame, read_ledger_csv


def load_ledger(csv_path: str, store_dir: str) -> tuple[Path, int]:
    rows = read_ledger_csv(csv_path)
    path = Store(store_dir).write_ledger(ledger_frame(rows))
    return path, len(rows)
