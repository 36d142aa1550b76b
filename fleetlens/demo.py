"""`fleetlens demo` (what `make demo` runs): the whole path on the embedded broker.

1. start the Tansu broker on a free 127.0.0.1 port;
2. write the simulated fleet's allocation ledger for last week and load it;
3. start the pipeline (a separate process, as in production);
4. backfill the simulated week through Kafka with the agent (another process);
5. wait for the pipeline to drain the topic, then print the weekly per-tenant report.

Each step runs the real CLI in a subprocess, so the demo exercises exactly what users run.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleetlens.broker import EmbeddedBroker


def last_full_week(now: datetime | None = None) -> tuple[datetime, datetime]:
    """Monday 00:00 UTC .. next Monday of the last complete ISO week."""
    now = now or datetime.now(UTC)
    this_monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0,
                                                                 microsecond=0)
    return this_monday - timedelta(days=7), this_monday


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleetlens", *args]


class _Receiver:
    def __init__(self, proc: subprocess.Popen, url: str):
        self.proc, self.url = proc, url

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _start_alert_receiver(work: Path) -> tuple[_Receiver, Path, Path]:
    """A local webhook receiver (`fleetlens alerts receiver`) and an alerts config that
    points the example rules at it."""
    out = work / "alerts.ndjson"
    out.unlink(missing_ok=True)
    log = work / "alert-receiver.log"
    proc = subprocess.Popen(_cli("alerts", "receiver", "--port", "0", "--out", str(out)),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    deadline = time.monotonic() + 30
    url = None
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text().splitlines():
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].strip().rstrip("/")
        time.sleep(0.1)
    if url is None:
        proc.kill()
        raise RuntimeError(f"the alert receiver did not start; see {log}")
    example = Path(__file__).resolve().parents[1] / "deploy" / "alerts.example.toml"
    text = example.read_text().replace("http://127.0.0.1:9095", url)
    cfg = work / "alerts.toml"
    cfg.write_text(text)
    return _Receiver(proc, url), cfg, out


def _alert_summary(path: Path) -> str:
    import json
    from collections import Counter

    counts: Counter = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            body = json.loads(line).get("body") or {}  # the receiver logs path, headers, body
            for alert in body.get("alerts", []):
                counts[(alert.get("labels", {}).get("alertname", "?"),
                         alert.get("status", "?"))] += 1
    if not counts:
        return "none"
    return ", ".join(f"{name} {status} x{n}" for (name, status), n in sorted(counts.items()))


def run_demo(args: argparse.Namespace) -> int:
    store = Path(args.store)
    work = store.parent
    if store.exists():
        shutil.rmtree(store)
    work.mkdir(parents=True, exist_ok=True)
    start, week_end = last_full_week()
    end = min(week_end, start + timedelta(days=args.days))
    span = f"{start:%Y-%m-%dT%H:%M:%SZ}", f"{end:%Y-%m-%dT%H:%M:%SZ}"
    sim_args = ["--nodes", str(args.nodes), "--tenants", str(args.tenants)]
    t0 = time.monotonic()

    _say(f"starting the embedded Kafka broker (Tansu), log in {work / 'broker.log'}")
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        bs = broker.bootstrap
        _say(f"broker ready on {bs}")

        ledger = work / "allocations.csv"
        subprocess.run(_cli("sim", "ledger", "--from", span[0], "--to", span[1],
                            "--out", str(ledger), *sim_args), check=True)
        subprocess.run(_cli("allocations", "load", str(ledger), "--store", str(store)),
                       check=True)

        receiver, alerts_cfg, alerts_out = _start_alert_receiver(work)
        _say(f"alert receiver on {receiver.url}; alerts go to {alerts_out}")
        _say("starting the pipeline (consumer group, 1-minute windows, alert rules)")
        pipeline = subprocess.Popen(_cli("pipeline", "--bootstrap", bs, "--store", str(store),
                                         "--group", f"demo-{uuid.uuid4().hex[:8]}",
                                         "--until-idle", "15", "--alerts", str(alerts_cfg)))
        gpus = args.nodes * 8
        _say(f"backfilling {span[0]} .. {span[1]}: {args.nodes} nodes x 8 GPUs = {gpus} GPUs, "
             f"{args.tenants} tenants, one sample per GPU every {args.interval:g}s")
        subprocess.run(_cli("agent", "--source", "sim", "--bootstrap", bs,
                            "--interval", str(args.interval), "--backfill-from", span[0],
                            "--backfill-to", span[1], *sim_args), check=True)
        _say("backfill published; waiting for the pipeline to drain the topic")
        code = pipeline.wait()
        receiver.stop()
        if code != 0:
            _say(f"pipeline failed with exit status {code}")
            return code
        _say("alerts received: " + _alert_summary(alerts_out))

    _say(f"pipeline done; weekly report from the store ({time.monotonic() - t0:.0f}s so far)")
    print()
    report_args = ["report", "range", "--store", str(store), "--from", span[0], "--to", span[1]]
    subprocess.run(_cli(*report_args, "--format", "table"), check=True)
    for fmt in ("json", "csv"):
        out = work / f"report-range.{fmt}"
        with open(out, "w") as f:
            subprocess.run(_cli(*report_args, "--format", fmt), check=True, stdout=f)
    _say(f"store: {store}")
    _say(f"reports: {work / 'report-range.json'}, {work / 'report-range.csv'}")
    # The weekly report of the simulated ISO week (docs/weekly-report.md).
    iso = start.isocalendar()
    weekly = subprocess.run(_cli("report", "weekly", "--store", str(store), "--week",
                                 f"{iso.year}-W{iso.week:02d}", "--format", "html,csv,json",
                                 "--out", str(work / "weekly")),
                            check=True, stdout=subprocess.PIPE, text=True)
    for path in weekly.stdout.split():
        _say(f"weekly report: {path}")
    _say(f"finished in {time.monotonic() - t0:.0f}s")
    return 0
