"""The `fleetlens` command line.

Subcommands import their modules lazily: `fleetlens agent` must start without loading Polars
or DuckDB, which only the central side needs.

Bad input (a bad flag value, config, ledger or time range) ends the program with exit status 2
and a one-line reason on stderr; nothing is half-done.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fleetlens.config import Config, ConfigError, load
from fleetlens.errors import UsageError

EXIT_BAD_INPUT = 2


def _config(args: argparse.Namespace) -> Config:
    cfg = load(args.config)
    if getattr(args, "bootstrap", None):
        cfg.kafka.bootstrap = args.bootstrap
    if getattr(args, "store", None):
        cfg.store.dir = args.store
    if getattr(args, "topic", None):
        cfg.kafka.samples_topic = args.topic
    return cfg


# -- commands ----------------------------------------------------------------------------------
def cmd_broker(args: argparse.Namespace) -> int:
    from fleetlens.broker import run_foreground

    return run_foreground(args.port)


def _sim(cfg: Config, args: argparse.Namespace):
    from fleetlens.collectors.sim import FleetSim

    s = cfg.sim
    try:
        return FleetSim(seed=args.seed if args.seed is not None else s.seed,
                        nodes=args.nodes or s.nodes, gpus_per_node=s.gpus_per_node,
                        tenants=args.tenants or s.tenants, cluster=s.cluster)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _parse_epoch(text: str, what: str) -> float:
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--{what} {text!r} is not an RFC 3339 time or date") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _source(cfg: Config, args: argparse.Namespace):
    """The sample source named by --source (each imported only when asked for)."""
    if args.source == "sim":
        return _sim(cfg, args)
    if args.source == "nvml":
        from fleetlens.collectors.nvml import NvmlSource

        return NvmlSource(node=cfg.agent.node or None, cluster=cfg.agent.cluster or None)
    if args.source == "dcgm":
        from fleetlens.collectors.dcgm import DcgmSource

        if not args.dcgm_url:
            raise UsageError("--source dcgm needs at least one --dcgm-url URL")
        try:
            return DcgmSource(urls=args.dcgm_url, cluster=cfg.agent.cluster or None)
        except ValueError as exc:  # a malformed URL
            raise UsageError(str(exc)) from None
    raise UsageError(f"unknown --source {args.source!r} (sim, nvml, dcgm)")


def cmd_agent(args: argparse.Namespace) -> int:
    from fleetlens.collectors import agent

    cfg = _config(args)
    if not args.stdout and not (args.bootstrap or args.config):
        raise UsageError("give --bootstrap HOST:PORT (or a config file), or --stdout")
    args.source = args.source or cfg.agent.source
    interval = args.interval or cfg.agent.interval_s
    if interval <= 0:
        raise UsageError("--interval must be > 0")
    a = cfg.agent
    if args.spool_dir:
        a.spool_dir = args.spool_dir
    if args.spool_max_mb is not None:
        if args.spool_max_mb <= 0:
            raise UsageError("--spool-max-mb must be > 0")
        a.spool_max_mb = args.spool_max_mb
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise UsageError("--metrics-port must be within 0..65535 (0 = off)")
        a.metrics_port = args.metrics_port
    backfilling = bool(args.backfill_from or args.backfill_to)
    if backfilling:
        if args.source != "sim":
            raise UsageError("--backfill-from/--backfill-to work with --source sim only")
        if not (args.backfill_from and args.backfill_to):
            raise UsageError("--backfill-from and --backfill-to go together")
        start = _parse_epoch(args.backfill_from, "backfill-from")
        end = _parse_epoch(args.backfill_to, "backfill-to")
        if end <= start:
            raise UsageError("--backfill-to must be after --backfill-from")
        return _agent_backfill(cfg, args, interval, start, end)

    # Live: SIGTERM/SIGINT from here on end the loop and flush; they never kill mid-write.
    import threading

    from fleetlens.collectors.agent_metrics import AgentMetrics, serve, source_counters_of

    stop = threading.Event()
    agent.install_stop_signals(stop)
    metrics = AgentMetrics()
    source = _source(cfg, args)
    metrics.source_counters = source_counters_of(source)
    tick_log = open(args.tick_log, "a") if args.tick_log else None  # noqa: SIM115
    try:
        if args.stdout:
            from fleetlens.collectors.publish import StdoutPublisher

            publisher = StdoutPublisher()
        else:
            publisher = _spooling_publisher(cfg, metrics)
        try:
            if a.metrics_port:
                try:
                    serve(metrics, a.metrics_port)
                except OSError as exc:
                    raise UsageError(f"--metrics-port {a.metrics_port}: {exc.strerror or exc}"
                                     ) from None
            agent.run_live(source, publisher, interval, once=args.once, stop=stop,
                           metrics=metrics, tick_log=tick_log)
        finally:
            if args.stdout:
                publisher.close()
            else:
                publisher.close(a.flush_timeout_s)
    finally:
        source.close()
        if tick_log is not None:
            tick_log.close()
    if not args.stdout:
        summary = metrics.summary()
        print("agent: " + " ".join(f"{k}={v}" for k, v in summary.items()), file=sys.stderr)
        if summary["spool_messages"]:
            print(f"agent: {summary['spool_messages']} message(s) left in the spool "
                  f"{a.spool_dir}; they are sent when the agent next runs", file=sys.stderr)
    return 0


def _spooling_publisher(cfg: Config, metrics):
    from fleetlens.collectors.publish import SpoolingKafkaPublisher
    from fleetlens.collectors.spool import Spool, SpoolError

    try:
        spool = Spool(cfg.agent.spool_dir, int(cfg.agent.spool_max_mb * 1024 * 1024))
    except SpoolError as exc:
        raise UsageError(str(exc)) from None
    if not logging.getLogger().isEnabledFor(logging.INFO):
        # kafka-python logs every refused connection; the sender reports outages itself.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    return SpoolingKafkaPublisher(cfg.kafka, spool, metrics)


def _agent_backfill(cfg: Config, args: argparse.Namespace, interval: float, start: float,
                    end: float) -> int:
    """Simulated history straight to Kafka (blocking producer, no spool: nothing is dropped)."""
    from fleetlens.collectors import agent
    from fleetlens.collectors.publish import KafkaPublisher, StdoutPublisher

    sim = _source(cfg, args)
    publisher = StdoutPublisher() if args.stdout else KafkaPublisher(cfg.kafka)
    try:
        t0 = time.monotonic()

        def progress(t: float, n: int) -> None:
            done = (t - start) / (end - start)
            print(f"agent: backfill {100 * done:5.1f}% ({n:,} samples)", file=sys.stderr,
                  flush=True)

        n = agent.backfill(sim, publisher, start, end, interval, progress)
        print(f"agent: backfilled {n:,} samples from {len(sim.nodes)} nodes in "
              f"{time.monotonic() - t0:.1f}s", file=sys.stderr)
    finally:
        publisher.close()
        sim.close()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from fleetlens.collectors.publish import KafkaPublisher
    from fleetlens.collectors.replay import replay

    cfg = _config(args)
    if not Path(args.file).is_file():
        raise UsageError(f"{args.file}: no such file")
    result = replay(args.file, KafkaPublisher(cfg.kafka))
    print(f"replay: published {result.samples} samples in {result.messages} messages; "
          f"skipped {len(result.invalid)} invalid lines", file=sys.stderr)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    import json

    from fleetlens.pipeline.job import PipelineJob

    cfg = _config(args)
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise UsageError("--metrics-port must be within 0..65535 (0 = off)")
        cfg.metrics.port = args.metrics_port
    job = PipelineJob(cfg, cfg.store.dir, group_id=args.group)
    if cfg.metrics.port:
        from fleetlens.pipeline.metrics import PipelineMetrics

        metrics = PipelineMetrics(stale_after_s=cfg.metrics.gpu_stale_s)
        job.observers.append(metrics.observe_rollups)
        job.flush_hooks.append(metrics.update_health)
        try:
            metrics.serve(cfg.metrics.port, cfg.metrics.host)
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on {cfg.metrics.host}:"
                             f"{cfg.metrics.port}: {exc.strerror or exc}") from None
        print(f"pipeline: metrics on http://{cfg.metrics.host}:{cfg.metrics.port}/metrics",
              file=sys.stderr, flush=True)
    alerting = None
    if args.alerts:
        from fleetlens.alerts import Alerting

        alerting = Alerting.from_file(args.alerts, cfg.store.dir)
        alerting.attach(job)
        if cfg.metrics.port:
            metrics.registry.register(alerting.metrics)  # outbox size, delivery failures
        alerting.start()
    t0 = time.monotonic()
    try:
        stats = job.run(until_idle_s=args.until_idle)
    finally:
        if alerting is not None:
            alerting.stop()
    summary = stats.summary()
    summary["seconds"] = round(time.monotonic() - t0, 2)
    print("pipeline: " + json.dumps(summary), file=sys.stderr)
    return 0


def cmd_allocations_load(args: argparse.Namespace) -> int:
    from fleetlens.pipeline.allocations import load_ledger
    from fleetlens.pipeline.tenancy import LedgerError

    cfg = _config(args)
    try:
        path, n = load_ledger(args.file, cfg.store.dir)
    except LedgerError as exc:
        raise UsageError(str(exc)) from None
    print(f"allocations: loaded {n} allocations into {path}", file=sys.stderr)
    return 0


def cmd_sim_ledger(args: argparse.Namespace) -> int:
    from fleetlens.times import rfc3339 as fmt

    cfg = _config(args)
    sim = _sim(cfg, args)
    start = _parse_epoch(args.start, "from")
    end = _parse_epoch(args.end, "to")
    out = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115
    try:
        out.write("tenant,node,gpu,start,end\n")
        for tenant, node, gpu, s, e in sim.ledger(start, end):
            out.write(f"{tenant},{node},{gpu},{fmt(s)},{fmt(e)}\n")
    finally:
        if args.out:
            out.close()
    return 0


def cmd_report_range(args: argparse.Namespace) -> int:
    from fleetlens.pipeline.report import ReportError, parse_when, range_report, render

    cfg = _config(args)
    try:
        report = range_report(cfg.store.dir, parse_when(args.start, "from"),
                              parse_when(args.end, "to"), args.tenant,
                              gpus_per_node=cfg.definitions.gpus_per_node)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    sys.stdout.write(render(report, args.format))
    return 0


def cmd_report_weekly(args: argparse.Namespace) -> int:
    from fleetlens.pipeline.report import ReportError
    from fleetlens.pipeline.weekly import STEPS, Progress, weekly_report
    from fleetlens.pipeline.weekly_render import FORMATS, write_outputs

    cfg = _config(args)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"--format {args.format!r}: give one or more of "
                         f"{', '.join(FORMATS)} (comma-separated)")
    if args.webhook and not args.webhook.startswith(("http://", "https://")):
        raise UsageError(f"--webhook {args.webhook!r} must be an http(s) URL")
    if not Path(cfg.store.dir).is_dir():
        raise UsageError(f"--store {cfg.store.dir}: no such directory")
    progress = Progress(STEPS + 1 if args.webhook else STEPS)
    try:
        report = weekly_report(cfg.store.dir, args.week, args.tenant, cfg.pricing,
                               gpus_per_node=cfg.definitions.gpus_per_node, progress=progress)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    if args.tenant and not report["tenants"]:
        raise UsageError(f"--tenant {args.tenant!r}: no figures for it in {report['week']}")
    paths = write_outputs(report, formats, args.out)
    for path in paths:
        print(path)
    if args.webhook:
        from fleetlens.pipeline.weekly_deliver import post_summary

        result = post_summary(args.webhook, report, paths)
        progress.step("webhook")
        if not result.ok:
            print(f"fleetlens report weekly: webhook {args.webhook}: {result.describe()}",
                  file=sys.stderr)
            return 1
    return 0


def cmd_report_workloads(args: argparse.Namespace) -> int:
    import json

    from fleetlens.pipeline.report import ReportError, parse_when, workloads_report

    cfg = _config(args)
    try:
        report = workloads_report(cfg.store.dir, parse_when(args.start, "from"),
                                  parse_when(args.end, "to"), args.tenant)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


def cmd_grafana_push(args: argparse.Namespace) -> int:
    import os

    from fleetlens.grafana_push import DEFAULT_DIR, PushError, push

    token = args.token or os.environ.get("GRAFANA_TOKEN")
    if not token:
        raise UsageError("give --token (a Grafana service-account token) or set GRAFANA_TOKEN")
    if not args.url.startswith(("http://", "https://")):
        raise UsageError(f"--url {args.url!r} must be an http(s) URL")
    variables = dict(os.environ)
    for flag, var in (("prometheus_url", "PROMETHEUS_URL"), ("api_url", "REPORTS_API_URL"),
                      ("api_token", "REPORTS_API_TOKEN")):
        if getattr(args, flag):
            variables[var] = getattr(args, flag)
    try:
        result = push(args.url, token, Path(args.dir) if args.dir else DEFAULT_DIR, variables)
    except PushError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:
        if type(exc).__module__.startswith(("grafana_client", "niquests", "urllib3")):
            print(f"fleetlens grafana push: Grafana at {args.url}: {exc}", file=sys.stderr)
            return 1
        raise
    print(f"grafana: datasources created {result.datasources_created or '-'}, updated "
          f"{result.datasources_updated or '-'}; folder "
          f"{'created' if result.folder_created else 'exists'}; "
          f"{len(result.dashboards)} dashboards pushed", file=sys.stderr)
    return 0


def _alerts(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from fleetlens.alerts import commands

        return getattr(commands, name)(args)
    return run


def cmd_demo(args: argparse.Namespace) -> int:
    from fleetlens.demo import run_demo

    return run_demo(args)


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    cfg = _config(args)
    if not cfg.api.tokens:
        raise UsageError("no [api] tokens configured: make one with `fleetlens api hash-token` "
                         "and add it to the config file")
    if not Path(cfg.store.dir).is_dir():
        raise UsageError(f"store directory {cfg.store.dir} does not exist")
    port = args.port if args.port is not None else cfg.api.port
    if not 0 <= port < 65536:
        raise UsageError("--port must be within 0..65535")
    from fleetlens.api.server import serve

    return serve(cfg, args.host or cfg.api.host, port)


def cmd_api_hash_token(args: argparse.Namespace) -> int:
    import json

    from fleetlens.api.auth import ADMIN, hash_token, new_token

    token = sys.stdin.readline().strip() if args.token == "-" else args.token or new_token()
    if len(token) < 16:
        raise UsageError("a token must be at least 16 characters (omit it to get a random one)")
    if not args.token:  # on stderr, so `>> config.toml` never stores the token itself
        print(f"token (give it to the client; only its hash goes in the config): {token}",
              file=sys.stderr)
    tenant = json.dumps(args.tenant or ADMIN)  # a JSON string is a valid TOML basic string
    print(f'{{hash = "{hash_token(token)}", tenant = {tenant}}},')
    return 0


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleetlens", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="TOML config file (default: $FLEETLENS_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable, help_: str, parent=sub) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    def sim_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--nodes", type=int, help="simulated nodes (8 GPUs each)")
        sp.add_argument("--tenants", type=int, help="simulated tenants")
        sp.add_argument("--seed", type=int, help="simulator seed")

    sp = add("broker", cmd_broker, "run the embedded Kafka-protocol broker (Tansu) on 127.0.0.1")
    sp.add_argument("--port", type=int, default=9092)

    sp = add("agent", cmd_agent, "sample GPUs and publish schema-v1 messages")
    sp.add_argument("--source", choices=["sim", "nvml", "dcgm"],
                    help="where samples come from ([agent] source, default sim)")
    sp.add_argument("--dcgm-url", action="append", metavar="URL",
                    help="dcgm-exporter /metrics URL (repeatable; --source dcgm)")
    sp.add_argument("--interval", type=float, help="seconds between samples")
    sp.add_argument("--bootstrap", help="Kafka HOST:PORT")
    sp.add_argument("--topic", help="samples topic")
    sp.add_argument("--stdout", action="store_true", help="print NDJSON instead of publishing")
    sp.add_argument("--once", action="store_true", help="take one sample and exit")
    sp.add_argument("--backfill-from", help="sim only: publish simulated history from this time")
    sp.add_argument("--backfill-to", help="... up to this time (exclusive)")
    sp.add_argument("--spool-dir", help="on-disk spool directory ([agent] spool_dir)")
    sp.add_argument("--spool-max-mb", type=float, metavar="MB",
                    help="cap on spooled data; the oldest messages go first ([agent] spool_max_mb)")
    sp.add_argument("--metrics-port", type=int, metavar="PORT",
                    help="serve Prometheus metrics on this port, 0 = off ([agent] metrics_port)")
    sp.add_argument("--tick-log", metavar="FILE",
                    help="append one JSON line per message produced (testing, debugging)")
    sim_opts(sp)

    sp = add("replay", cmd_replay, "publish a recorded NDJSON file of schema-v1 samples")
    sp.add_argument("file")
    sp.add_argument("--bootstrap", help="Kafka HOST:PORT")
    sp.add_argument("--topic", help="samples topic")

    sp = add("pipeline", cmd_pipeline, "consume samples and write per-GPU-minute rollups")
    sp.add_argument("--bootstrap", help="Kafka HOST:PORT")
    sp.add_argument("--store", help="store directory")
    sp.add_argument("--topic", help="samples topic")
    sp.add_argument("--group", help="consumer group id")
    sp.add_argument("--until-idle", type=float, metavar="SECONDS",
                    help="exit after flushing once no message arrived for SECONDS")
    sp.add_argument("--metrics-port", type=int, metavar="PORT",
                    help="serve Prometheus metrics on PORT (host: [metrics] host; 0 = off)")
    sp.add_argument("--alerts", metavar="FILE",
                    help="evaluate alert rules and notify receivers (TOML; docs/alerting.md)")

    alloc = add("allocations", None, "manage the allocation ledger")
    alloc_sub = alloc.add_subparsers(dest="alloc_command", required=True, metavar="ACTION")
    sp = add("load", cmd_allocations_load, "validate a ledger CSV and store it", alloc_sub)
    sp.add_argument("file", help="CSV with tenant,node,gpu,start,end")
    sp.add_argument("--store", help="store directory")

    sim = add("sim", None, "simulated fleet helpers")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True, metavar="ACTION")
    sp = add("ledger", cmd_sim_ledger, "write the simulated fleet's allocation ledger CSV",
             sim_sub)
    sp.add_argument("--from", dest="start", required=True)
    sp.add_argument("--to", dest="end", required=True)
    sp.add_argument("--out", help="file (default stdout)")
    sim_opts(sp)

    rep = add("report", None, "utilization reports")
    rep_sub = rep.add_subparsers(dest="report_command", required=True, metavar="KIND")
    sp = add("range", cmd_report_range, "per-tenant figures for a time range", rep_sub)
    sp.add_argument("--store", help="store directory")
    sp.add_argument("--from", dest="start", required=True, help="RFC 3339 time or YYYY-MM-DD")
    sp.add_argument("--to", dest="end", required=True, help="RFC 3339 time or YYYY-MM-DD")
    sp.add_argument("--tenant")
    sp.add_argument("--format", choices=["table", "json", "csv"], default="table")

    sp = add("weekly", cmd_report_weekly, "weekly utilization report of one ISO week (UTC): "
             "fleet, money, tenants, concentration, data quality", rep_sub)
    sp.add_argument("--store", help="store directory")
    sp.add_argument("--week", default="last", help="ISO week like 2026-W47, or 'last' "
                    "(the last full week; default)")
    sp.add_argument("--tenant", help="one tenant's report (no fleet or other tenants' figures)")
    sp.add_argument("--format", default="html",
                    help="html, md, csv, json, or several comma-separated (default html)")
    sp.add_argument("--out", required=True, help="output directory")
    sp.add_argument("--webhook", metavar="URL",
                    help="post a summary (headline figures, output paths) to this webhook")

    sp = add("workloads", cmd_report_workloads,
             "workload-reported MFU per job next to the counter estimate (JSON)", rep_sub)
    sp.add_argument("--store", help="store directory")
    sp.add_argument("--from", dest="start", required=True, help="RFC 3339 time or YYYY-MM-DD")
    sp.add_argument("--to", dest="end", required=True, help="RFC 3339 time or YYYY-MM-DD")
    sp.add_argument("--tenant")

    graf = add("grafana", None, "Grafana dashboards and datasources")
    graf_sub = graf.add_subparsers(dest="grafana_command", required=True, metavar="ACTION")
    sp = add("push", cmd_grafana_push, "upload the datasources and dashboards through "
             "Grafana's HTTP API", graf_sub)
    sp.add_argument("--url", required=True, help="Grafana base URL, e.g. http://grafana:3000")
    sp.add_argument("--token", help="service-account token (default: $GRAFANA_TOKEN)")
    sp.add_argument("--dir", help="dashboards directory (default: the repository's dashboards/)")
    sp.add_argument("--prometheus-url", help="Prometheus URL as Grafana reaches it "
                    "(default: $PROMETHEUS_URL)")
    sp.add_argument("--api-url", help="report API URL as Grafana reaches it "
                    "(default: $REPORTS_API_URL)")
    sp.add_argument("--api-token", help="report API token for the Infinity datasource "
                    "(default: $REPORTS_API_TOKEN)")

    al = add("alerts", None, "alert rules and receivers (docs/alerting.md)")
    al_sub = al.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    sp = add("test", _alerts("cmd_test"), "send a sample alert to each configured receiver",
             al_sub)
    sp.add_argument("--config", dest="alerts_config", required=True, metavar="FILE",
                    help="alerts TOML file")
    sp.add_argument("--receiver", help="only this receiver")
    sp.add_argument("--resolve", action="store_true", help="also send the resolve")
    sp = add("check", _alerts("cmd_check"), "validate an alerts file and print its rules",
             al_sub)
    sp.add_argument("--config", dest="alerts_config", required=True, metavar="FILE",
                    help="alerts TOML file")
    sp = add("receiver", _alerts("cmd_receiver"),
             "a webhook receiver that prints the alerts it gets", al_sub)
    sp.add_argument("--port", type=int, default=9095, help="port (0: any free port)")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--hmac-secret", help="reject bodies without this HMAC signature")
    sp.add_argument("--bearer-token", help="reject requests without this bearer token")
    sp.add_argument("--out", metavar="FILE", help="also append each body to FILE (NDJSON)")
    sp.add_argument("--status", type=int, default=200, help="HTTP status to answer with")

    sp = add("demo", cmd_demo, "broker + simulated week + pipeline + weekly report, end to end")
    sp.add_argument("--store", default="var/demo/store")
    sp.add_argument("--nodes", type=int, default=32)
    sp.add_argument("--tenants", type=int, default=5)
    sp.add_argument("--days", type=float, default=7.0)
    sp.add_argument("--interval", type=float, default=60.0)

    sp = add("serve", cmd_serve, "HTTP report API over the store (for Grafana and people)")
    sp.add_argument("--store", help="store directory")
    sp.add_argument("--port", type=int, help="TCP port (default [api] port, 8080)")
    sp.add_argument("--host", help="address to listen on (default [api] host, 127.0.0.1)")

    api = add("api", None, "API helpers")
    api_sub = api.add_subparsers(dest="api_command", required=True, metavar="ACTION")
    sp = add("hash-token", cmd_api_hash_token,
             "print an [api] tokens entry (SHA-256 of a token) for the config file", api_sub)
    sp.add_argument("token", nargs="?",
                    help="the token ('-': read from stdin; omitted: make a random one)")
    sp.add_argument("--tenant", help='tenant the token may read (default "*": admin)')
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.fn(args)
    except (UsageError, ConfigError) as exc:
        print(f"fleetlens {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `fleetlens agent --stdout | head`
        sys.stderr.close()
        return 0
    except Exception as exc:
        # Kafka unreachable or refusing: one line, not a traceback; the cause is elsewhere.
        if type(exc).__module__.startswith("kafka"):
            print(f"fleetlens {args.command}: Kafka error: {exc}", file=sys.stderr)
            return 1
        raise
