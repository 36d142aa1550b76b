"""Notification -> HTTP body, one function per receiver format.

* ``alertmanager``: the Alertmanager webhook payload, version "4" (anything that consumes
  Alertmanager webhooks accepts it);
* ``slack``: an incoming-webhook message (``text``);
* ``pagerduty``: an Events API v2 event (one alert per notification: trigger or resolve,
  ``dedup_key`` = ``fleetlens/<fingerprint>``);
* ``json``: fleetlens' own format, version ``fleetlens.alerts.v1`` (docs/alerting.md).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fleetlens.alerts.config import Receiver

ZERO_TIME = "0001-01-01T00:00:00Z"
JSON_VERSION = "fleetlens.alerts.v1"
PAGERDUTY_SEVERITIES = {"critical", "error", "warning", "info"}


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    common = dict(dicts[0])
    for d in dicts[1:]:
        common = {k: v for k, v in common.items() if d.get(k) == v}
    return common


def alertmanager(n: dict[str, Any], r: Receiver, external_url: str) -> dict[str, Any]:
    alerts = n["alerts"]
    shown = alerts[:r.max_alerts] if r.max_alerts else alerts
    return {
        "version": "4",
        "groupKey": n["group_key"],
        "truncatedAlerts": len(alerts) - len(shown),
        "status": n["status"],
        "receiver": n["receiver"],
        "groupLabels": n["group_labels"],
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "alerts": [{
            "status": a["status"], "labels": a["labels"], "annotations": a["annotations"],
            "startsAt": rfc3339(a["starts_at"]),
            "endsAt": rfc3339(a["ends_at"]) if a["ends_at"] is not None else ZERO_TIME,
            "generatorURL": f"{external_url}/alerts?alertname={a['labels']['alertname']}",
            "fingerprint": a["fingerprint"],
        } for a in shown],
    }


def slack(n: dict[str, Any], r: Receiver, external_url: str) -> dict[str, Any]:
    firing = [a for a in n["alerts"] if a["status"] == "firing"]
    resolved = [a for a in n["alerts"] if a["status"] == "resolved"]
    group = " ".join(f"{k}={v}" for k, v in sorted(n["group_labels"].items()))
    head = f"[FIRING:{len(firing)}]" if firing else "[RESOLVED]"
    lines = [f"{head} {group}".rstrip()]
    for a in firing:
        lines.append(f"• {a['annotations'].get('summary', a['labels']['alertname'])}"
                     f" ({a['labels'].get('severity', '')})")
        if a["annotations"].get("description"):
            lines.append(f"  {a['annotations']['description']}")
    for a in resolved:
        lines.append(f"• RESOLVED {rfc3339(a['ends_at'])}: "
                     f"{a['annotations'].get('summary', a['labels']['alertname'])}")
    return {"text": "\n".join(lines)}


def pagerduty(n: dict[str, Any], r: Receiver, external_url: str) -> dict[str, Any]:
    a = n["alerts"][0]  # pagerduty receivers group per alert: exactly one
    dedup = f"fleetlens/{a['fingerprint']}"
    if a["status"] == "resolved":
        return {"routing_key": r.routing_key, "event_action": "resolve", "dedup_key": dedup}
    labels = a["labels"]
    severity = labels.get("severity", "warning")
    component = f"gpu{labels['gpu']}" if "gpu" in labels else labels.get("topic", "")
    return {
        "routing_key": r.routing_key, "event_action": "trigger", "dedup_key": dedup,
        "payload": {
            "summary": a["annotations"].get("summary", labels["alertname"])[:1024],
            "source": labels.get("node") or labels.get("tenant") or "fleetlens",
            "severity": severity if severity in PAGERDUTY_SEVERITIES else "warning",
            "timestamp": rfc3339(a["starts_at"]),
            "component": component,
            "group": labels.get("tenant", ""),
            "class": labels["alertname"],
            "custom_details": {**labels, **a["annotations"], "value": a["value"]},
        },
        "client": "fleetlens", "client_url": external_url,
    }


def fleetlens_json(n: dict[str, Any], r: Receiver, external_url: str) -> dict[str, Any]:
    return {
        "version": JSON_VERSION, "id": n["id"], "receiver": n["receiver"],
        "status": n["status"], "groupKey": n["group_key"], "groupLabels": n["group_labels"],
        "createdAt": rfc3339(n["created_at"]), "externalURL": external_url,
        "alerts": [{
            "status": a["status"], "alertname": a["labels"]["alertname"],
            "severity": a["labels"].get("severity"), "labels": a["labels"],
            "annotations": a["annotations"], "startsAt": rfc3339(a["starts_at"]),
            "endsAt": rfc3339(a["ends_at"]), "fingerprint": a["fingerprint"],
            "value": a["value"],
        } for a in n["alerts"]],
    }


RENDERERS = {"alertmanager": alertmanager, "slack": slack, "pagerduty": pagerduty,
             "json": fleetlens_json}


def render(n: dict[str, Any], r: Receiver, external_url: str) -> bytes:
    return json.dumps(RENDERERS[r.format](n, r, external_url), separators=(",", ":"),
                      ensure_ascii=False).encode()
