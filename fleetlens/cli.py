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

from fleetlens.config import Config, ConfigError, load

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit status 2."""


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

        return NvmlSource(node=cfg.agent.node or None, cluster=cfg.sim.cluster or None)
    if args.source == "dcgm":
        from fleetlens.collectors.dcgm import DcgmSource

        if not args.dcgm_url:
            raise UsageError("--source dcgm needs at least one --dcgm-url URL")
        return DcgmSource(urls=args.dcgm_url, cluster=cfg.sim.cluster or None)
    raise UsageError(f"unknown --source {args.source!r} (sim, nvml, dcgm)")


def cmd_agent(args: argparse.Namespace) -> int:
    from fleetlens.collectors import agent
    from fleetlens.collectors.publish import KafkaPublisher, StdoutPublisher

    cfg = _config(args)
    if not args.stdout and not (args.bootstrap or args.config):
        raise UsageError("give --bootstrap HOST:PORT (or a config file), or --stdout")
    interval = args.interval or cfg.agent.interval_s
    if interval <= 0:
        raise UsageError("--interval must be > 0")
    source = _source(cfg, args)
    publisher = StdoutPublisher() if args.stdout else KafkaPublisher(cfg.kafka)
    try:
        if args.backfill_from or args.backfill_to:
            if args.source != "sim":
                raise UsageError("--backfill-from/--backfill-to work with --source sim only")
            sim = source
            if not (args.backfill_from and args.backfill_to):
                raise UsageError("--backfill-from and --backfill-to go together")
            start = _parse_epoch(args.backfill_from, "backfill-from")
            end = _parse_epoch(args.backfill_to, "backfill-to")
            if end <= start:
                raise UsageError("--backfill-to must be after --backfill-from")
            t0 = time.monotonic()

            def progress(t: float, n: int) -> None:
                done = (t - start) / (end - start)
                print(f"agent: backfill {100 * done:5.1f}% ({n:,} samples)", file=sys.stderr,
                      flush=True)

            n = agent.backfill(sim, publisher, start, end, interval, progress)
            print(f"agent: backfilled {n:,} samples from {len(sim.nodes)} nodes in "
                  f"{time.monotonic() - t0:.1f}s", file=sys.stderr)
        else:
            agent.run_live(source, publisher, interval, once=args.once)
    finally:
        publisher.close()
        source.close()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from fleetlens.collectors.publish import KafkaPublisher
    from fleetlens.collectors.replay import replay

    cfg = _config(args)
    try:
        result = replay(args.file, KafkaPublisher(cfg.kafka))
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(f"replay: published {result.samples} samples in {result.messages} messages; "
          f"skipped {len(result.invalid)} invalid lines", file=sys.stderr)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    import json

    from fleetlens.pipeline.job import PipelineJob

    cfg = _config(args)
    job = PipelineJob(cfg, cfg.store.dir, group_id=args.group)
    t0 = time.monotonic()
    stats = job.run(until_idle_s=args.until_idle)
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
    from datetime import UTC, datetime

    cfg = _config(args)
    sim = _sim(cfg, args)
    start = _parse_epoch(args.start, "from")
    end = _parse_epoch(args.end, "to")
    fmt = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
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
                              parse_when(args.end, "to"), args.tenant)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    sys.stdout.write(render(report, args.format))
    return 0


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
    sp.add_argument("--source", default="sim", choices=["sim", "nvml", "dcgm"],
                    help="where samples come from")
    sp.add_argument("--dcgm-url", action="append", metavar="URL",
                    help="dcgm-exporter /metrics URL (repeatable; --source dcgm)")
    sp.add_argument("--interval", type=float, help="seconds between samples")
    sp.add_argument("--bootstrap", help="Kafka HOST:PORT")
    sp.add_argument("--topic", help="samples topic")
    sp.add_argument("--stdout", action="store_true", help="print NDJSON instead of publishing")
    sp.add_argument("--once", action="store_true", help="take one sample and exit")
    sp.add_argument("--backfill-from", help="sim only: publish simulated history from this time")
    sp.add_argument("--backfill-to", help="... up to this time (exclusive)")
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
