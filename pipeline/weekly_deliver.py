"""`report weekly --webhook URL`: post a summary of the report (headline figures and the
paths written) through the alerting delivery code (fleetlens/alerts/deliver.py), as a
fleetlens.alerts.v1 JSON body with one alert `WeeklyUtilizationReport` whose annotations
carry the figures (docs/weekly-report.md)."""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

from fleetlens.alerts.config import Receiver
from fleetlens.alerts.deliver import Attempt, backoff, send

ALERTNAME = "WeeklyUtilizationReport"


def summary_notification(report: dict, paths: list[Path], now: float | None = None) -> dict:
    now = time.time() if now is None else now
    week, tenant = report["week"], report["tenant_filter"]
    labels = {"alertname": ALERTNAME, "severity": "info", "week": week}
    if tenant:
        labels["tenant"] = tenant
    figures: dict[str, str] = {}
    if report["fleet"] is not None:
        for k, v in report["fleet"]["headline"].items():
            figures[k] = "" if v is None else f"{v:.6g}"
    for t in report["tenants"]:
        figures[f"tenant.{t['tenant']}.gpu_hours_allocated"] = f"{t['gpu_hours_allocated']:.6g}"
    m = report["money"]
    figures["billed_total"] = f"{m['billed_total']:.2f} {m['currency']}"
    figures["idle_cost_total"] = f"{m['idle_cost_total']:.2f} {m['currency']}"
    c = report["concentration"]
    if c is not None and c["hhi"] is not None:
        figures["hhi"] = f"{c['hhi']:.0f}"
        figures["top1_share"] = f"{c['top1_share']:.4f}"
    dq = report["data_quality"]
    if dq["coverage"] is not None:
        figures["coverage"] = f"{dq['coverage']:.4f}"
    head = report["fleet"]["headline"] if report["fleet"] else None
    summary = (f"GPU utilization week {week}: {head['gpu_hours_allocated']:,.1f} of "
               f"{head['gpu_hours_available']:,.1f} GPU-hours allocated, "
               f"{head['gpu_hours_busy']:,.1f} busy" if head else
               f"GPU utilization week {week}, tenant {tenant}")
    outputs = ", ".join(str(p.resolve()) for p in paths)
    fp = hashlib.sha256(f"{ALERTNAME}/{week}/{tenant or ''}".encode()).hexdigest()[:16]
    return {"id": f"weekly-{fp}-{int(now)}", "receiver": "weekly-report", "status": "firing",
            "group_key": f"{ALERTNAME}/{week}", "group_labels": {"week": week},
            "created_at": now,
            "alerts": [{"status": "firing", "labels": labels,
                        "annotations": {"summary": summary, "outputs": outputs, **figures},
                        "starts_at": now, "ends_at": None, "fingerprint": fp,
                        "value": head["gpu_hours_allocated"] if head else None}]}


def post_summary(url: str, report: dict, paths: list[Path], attempts: int = 3,
                 timeout: float = 10.0) -> Attempt:
    """Send with the alerting code's retry rules (retryable failures back off and retry)."""
    receiver = Receiver(name="weekly-report", url=url, format="json", timeout=timeout,
                        retry_initial=0.5, retry_max=5.0)
    n = summary_notification(report, paths)
    rng = random.Random()
    result = send(receiver, n, "")
    for i in range(1, attempts):
        if result.ok or not result.retryable:
            break
        time.sleep(backoff(receiver, i, rng))
        result = send(receiver, n, "")
    return result
