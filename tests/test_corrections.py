"""Late data and corrected ledgers change the stored numbers exactly, and nothing else.

Both run through the real broker and pipeline, on the fixture of test_end_to_end.py.
"""

from __future__ import annotations

import json
import uuid

import duckdb
import pytest
from kafka import KafkaProducer

from tests.conftest import FIXTURES, run_cli
from tests.test_end_to_end import EXPECTED, FROM, TO, assert_report_matches, pipeline, report_json

pytestmark = pytest.mark.broker
H = 3600.0
T0 = 1794787200.0


def _setup(broker, topic, store):
    run_cli("allocations", "load", str(FIXTURES / "e2e_allocations.csv"), "--store", str(store))
    run_cli("replay", str(FIXTURES / "e2e_samples.ndjson"), "--bootstrap", broker.bootstrap,
            "--topic", topic)
    group = f"g-{uuid.uuid4().hex[:8]}"
    pipeline(broker, topic, store, group)
    assert_report_matches(report_json(store))
    return group


def _line(ts: float, **over) -> bytes:
    s = {"v": 1, "ts": ts, "interval_s": 30.0, "node": "node-a", "gpu": 0, "uuid": "GPU-a0",
         "model": "NVIDIA H100 80GB HBM3", "cluster": "c1"}
    s.update(over)
    return json.dumps(s).encode()


def test_late_samples_are_merged_and_late_duplicates_dropped(broker, topic, tmp_path):
    store = tmp_path / "store"
    group = _setup(broker, topic, store)
    # After the windows closed: a sample the store never had (a0 at +15 s, 15 s busy, in
    # alpha's allocation), and a second delivery of one it has (a0 at +30).
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send(topic, key=b"node-a", value=_line(T0 + 15, interval_s=15.0, gpu_util=80.0,
                                                     sm_active=0.5, tensor_active=0.2,
                                                     sm_clock_mhz=1830.0, power_w=500.0))
    producer.send(topic, key=b"node-a", value=_line(T0 + 30, gpu_util=0.0, sm_active=0.0,
                                                     tensor_active=0.0, sm_clock_mhz=345.0,
                                                     power_w=100.0, fb_used_mib=50000.0))
    producer.flush()
    producer.close()
    out = pipeline(broker, topic, store, group)
    stats = json.loads(out.stderr.split("pipeline: ", 1)[1])
    assert (stats["late"], stats["late_duplicates"], stats["dead_letters"]) == (2, 1, 0)

    alpha = next(t for t in report_json(store)["tenants"] if t["tenant"] == "alpha")
    base = EXPECTED["alpha"]
    assert alpha["gpu_hours_allocated"] == pytest.approx(base["gpu_hours_allocated"] + 15 / H)
    assert alpha["gpu_hours_busy"] == pytest.approx(base["gpu_hours_busy"] + 15 / H)
    assert alpha["gpu_hours_idle"] == pytest.approx(base["gpu_hours_idle"])
    # MFU: (0.5 x 30 + 0.2 x 15) / (60 + 15) known seconds
    assert alpha["mfu_allocated"] == pytest.approx((0.5 * 30 + 0.2 * 15) / 75)
    assert alpha["energy_kwh"] == pytest.approx(base["energy_kwh"] + 500 * 15 / 3.6e6)


def test_a_corrected_ledger_recomputes_only_the_periods_it_changes(broker, topic, tmp_path):
    store = tmp_path / "store"
    group = _setup(broker, topic, store)
    before = duckdb.connect().execute(
        "SELECT count(*) FROM read_parquet(?)", [str(store / "rollups" / "**" / "*.parquet")]
    ).fetchone()[0]
    # The corrected ledger gives beta's minute (+60..+120 on node-a) to zeta instead.
    corrected = tmp_path / "ledger-v2.csv"
    corrected.write_text((FIXTURES / "e2e_allocations.csv").read_text().replace(
        "beta,node-a,*", "zeta,node-a,*"))
    run_cli("allocations", "load", str(corrected), "--store", str(store))
    out = pipeline(broker, topic, store, group)
    stats = json.loads(out.stderr.split("pipeline: ", 1)[1])
    assert stats["samples"] == 0 and stats["ledger_corrections"] > 0

    report = report_json(store)
    tenants = {t["tenant"]: t for t in report["tenants"]}
    assert "beta" not in tenants
    for key, value in EXPECTED["beta"].items():
        if value is None:
            assert tenants["zeta"][key] is None
        else:
            assert tenants["zeta"][key] == pytest.approx(value, abs=1e-12), key
    for name in ("alpha", "gamma", "delta", "epsilon"):  # untouched
        for key, value in EXPECTED[name].items():
            assert tenants[name][key] == (pytest.approx(value, abs=1e-12)
                                          if value is not None else None), (name, key)
    # Only the changed minute got correction rows: 2 GPUs x (beta out, zeta in).
    after = duckdb.connect().execute(
        "SELECT count(*) FROM read_parquet(?)", [str(store / "rollups" / "**" / "*.parquet")]
    ).fetchone()[0]
    assert after - before == stats["ledger_corrections"] == 4
    # Running again changes nothing more.
    pipeline(broker, topic, store, group)
    assert report_json(store) == report
    assert TO > FROM
