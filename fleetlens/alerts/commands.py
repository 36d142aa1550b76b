"""The `fleetlens alerts ...` subcommands (the parser lives in fleetlens/cli.py)."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from urllib.parse import urlsplit

from fleetlens.alerts.config import RULE_SPECS, format_duration, load
from fleetlens.alerts.deliver import send
from fleetlens.alerts.rules import ALERTNAMES
from fleetlens.alerts.state import fingerprint


def sample_notification(receiver: str, status: str = "firing",
                        now: float | None = None) -> dict:
    now = time.time() if now is None else now
    labels = {"alertname": "FleetlensTestAlert", "severity": "info", "tenant": "test",
              "node": "test-node", "gpu": "0", "uuid": "GPU-00000000-test", "model": "test"}
    alert = {"status": status, "labels": labels,
             "annotations": {"summary": "Test alert from `fleetlens alerts test`",
                             "description": "If you can read this, the receiver works."},
             "starts_at": now, "ends_at": now if status == "resolved" else None,
             "fingerprint": fingerprint(labels), "value": 1.0}
    return {"id": uuid.uuid4().hex, "receiver": receiver,
            "group_key": '{}:{alertname="FleetlensTestAlert"}',
            "group_labels": {"alertname": "FleetlensTestAlert"}, "status": status, "seq": 1,
            "created_at": now, "alerts": [alert]}


def _where(url: str) -> str:
    parts = urlsplit(url)  # the path of a Slack/other webhook URL is a secret: not shown
    return f"{parts.scheme}://{parts.netloc}"


def cmd_test(args: argparse.Namespace) -> int:
    """Send a sample alert to each configured receiver; exit 1 if any failed."""
    cfg = load(args.alerts_config)
    receivers = cfg.receivers
    if args.receiver:
        receivers = [r for r in receivers if r.name == args.receiver]
        if not receivers:
            names = ", ".join(r.name for r in cfg.receivers) or "none"
            print(f"alerts test: no receiver named {args.receiver!r} (configured: {names})",
                  file=sys.stderr)
            return 2
    if not receivers:
        print("alerts test: no [[receivers]] configured", file=sys.stderr)
        return 2
    failed = 0
    for r in receivers:
        statuses = ["firing", "resolved"] if args.resolve else ["firing"]
        for status in statuses:
            result = send(r, sample_notification(r.name, status), cfg.external_url)
            ok = "ok" if result.ok else "FAILED"
            print(f"receiver {r.name} ({r.format}, {_where(r.url)}) {status}: {ok}: "
                  f"{result.describe()}", flush=True)
            failed += not result.ok
    print(f"alerts test: {len(receivers) * (1 + args.resolve) - failed} sent, {failed} failed",
          file=sys.stderr)
    return 1 if failed else 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a config file and print the effective rules and receivers."""
    cfg = load(args.alerts_config)
    print(f"{cfg.origin}: OK")
    for name in RULE_SPECS:
        rc = cfg.rules[name]
        state = "on " if rc.values["enabled"] else "off"
        values = ", ".join(_show(k, v) for k, v in rc.values.items() if k != "enabled")
        print(f"  rule {name:9} {state} {'/'.join(ALERTNAMES[name])}: {values}")
        for tenant, over in sorted(rc.tenants.items()):
            print(f"      tenant {tenant}: {', '.join(_show(k, v) for k, v in over.items())}")
    for r in cfg.receivers:
        route = []
        if r.tenants:
            route.append(f"tenants={','.join(r.tenants)}")
        if r.severities:
            route.append(f"severities={','.join(r.severities)}")
        if r.alertnames:
            route.append(f"alertnames={','.join(r.alertnames)}")
        extras = [x for x, on in (("hmac", r.hmac_secret), ("bearer", r.bearer_token)) if on]
        print(f"  receiver {r.name}: {r.format} -> {_where(r.url)} "
              f"route[{' '.join(route) or 'all'}] {' '.join(extras)}".rstrip())
    print(f"  group_by={cfg.group_by} group_interval={format_duration(cfg.group_interval)} "
          f"repeat_interval={format_duration(cfg.repeat_interval)} outbox_max={cfg.outbox_max}")
    return 0


def _show(key: str, value) -> str:
    if key in _DURATION_KEYS and isinstance(value, float):
        return f"{key}={format_duration(value)}"
    return f"{key}={value}"


_DURATION_KEYS = {"for", "window", "min_basis", "clear_after", "min_after", "forget_after",
                  "lag_for", "dead_letter_window", "dead_letter_for"}


def cmd_receiver(args: argparse.Namespace) -> int:
    from fleetlens.alerts.receiver import serve

    return serve(args.host, args.port, hmac_secret=args.hmac_secret or "",
                 bearer_token=args.bearer_token or "", out_file=args.out, status=args.status)
