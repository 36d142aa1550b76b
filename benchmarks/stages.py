"""The benchmark stages. Each returns rows (stage, figure, value, note) for the one table.

Sizes come from `Sizes` (normal or --quick). Every stage starts and stops what it needs (an
embedded Tansu broker, subprocesses, Prometheus) on 127.0.0.1 with temporary directories.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchmarks.common import (
    ROOT,
    StaticServer,
    clean_env,
    cpu_seconds,
    encoded_fleet,
    fleetlens_cmd,
    load,
    pct,
    pipeline_summary,
    produce,
    run_measured,
    start,
    status_kb,
)

Row = tuple[str, str, str, str]
DCGM_PAGE = ROOT.parent / "shared" / "reference" / "dcgm" / "dcgm_8xh100_synthetic.txt"
if not DCGM_PAGE.is_file():
    DCGM_PAGE = Path("/work/shared/reference/dcgm/dcgm_8xh100_synthetic.txt")


@dataclass
class Sizes:
    ingest_gpus: int = 1000
    ingest_ticks: int = 600          # 1 Hz ticks: 10 minutes of a 1,000-GPU fleet = 600k samples
    memory_big_gpus: int = 10000
    memory_big_ticks: int = 90       # 90 s of 10,000 GPUs: > 1 minute of windows in flight
    decode_gpus: int = 1000
    decode_ticks: int = 300
    query_fleets: tuple = (1000, 10000)
    agent_seconds: float = 30.0
    fresh_seconds: float = 200.0
    fresh_nodes: int = 16
    prom_gpus: int = 1000
    prom_seconds: float = 40.0
    prom_backfill_gpus: int = 1000
    prom_backfill_step_s: int = 300
    api_gpus: int = 1000
    api_requests: int = 10           # per client (10 clients)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(ingest_ticks=150, memory_big_gpus=0, decode_ticks=100,
                   query_fleets=(1000,), agent_seconds=6.0, fresh_seconds=100.0,
                   prom_seconds=10.0, prom_backfill_gpus=100, prom_backfill_step_s=600,
                   api_requests=3)


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def _pipeline(bootstrap: str, store: str, topic: str, group: str, until_idle: float = 3.0,
              extra: tuple = ()) -> list[str]:
    return fleetlens_cmd("pipeline", "--bootstrap", bootstrap, "--store", store,
                         "--topic", topic, "--group", group, "--until-idle", str(until_idle),
                         *extra)


def _busy(summary: dict) -> float:
    return sum(summary["stage_seconds"].values())


def _stage_cpu(summary: dict) -> float:
    return sum(summary.get("stage_cpu_seconds", {}).values())


def _cpu_split(summary: dict, samples: int) -> str:
    """CPU-seconds per 1M GPU-samples of each stage."""
    st = summary.get("stage_cpu_seconds", {})
    return " ".join(f"{k} {1e6 * v / samples:.1f}" for k, v in sorted(st.items()))


def _split(summary: dict) -> str:
    st = summary["stage_seconds"]
    total = _busy(summary) or 1.0
    return " ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(st.items()))


# -- ingest -----------------------------------------------------------------------------------
def ingest(sz: Sizes) -> list[Row]:
    from fleetlens.broker import EmbeddedBroker

    rows: list[Row] = []
    t0 = float(int(time.time()) // 60 * 60 - 86400)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        # One pipeline process.
        n = sz.ingest_gpus * sz.ingest_ticks
        msgs = encoded_fleet(sz.ingest_gpus, sz.ingest_ticks, t0)
        mb = sum(len(v) for _, v in msgs) / 1e6
        topic = f"bench.ingest1.{uuid.uuid4().hex[:6]}"
        prod_s = produce(broker.bootstrap, topic, msgs)
        del msgs
        rows.append(("ingest", f"produce {n:,} samples ({mb:.0f} MB NDJSON, zstd)",
                     f"{prod_s:.1f} s", f"{n / prod_s:,.0f} samples/s (kafka-python producer)"))
        b0 = cpu_seconds(broker.proc.pid)
        rc, _, err, wall, cpu, rss = run_measured(
            _pipeline(broker.bootstrap, f"{tmp}/s1", topic, f"bench-{uuid.uuid4().hex[:8]}"))
        bcpu = cpu_seconds(broker.proc.pid) - b0
        s = pipeline_summary(err)
        busy = _busy(s)
        rows.append(("ingest 1 proc", "GPU-samples/s (busy: fetch+decode+window+rollup+write)",
                     _fmt_rate(s["samples"] / busy), f"{s['samples']:,} samples in {busy:.1f} s "
                     f"busy, {wall:.1f} s wall incl. start, group join, 3 s idle exit"))
        rows.append(("ingest 1 proc", "stage split", _split(s),
                     "seconds: " + json.dumps(s["stage_seconds"])))
        rows.append(("ingest 1 proc", "CPU-s per 1M GPU-samples", f"{1e6 * cpu / n:.1f}",
                     f"whole process incl. start-up ({cpu:.1f} CPU-s); broker not counted"))
        rows.append(("ingest 1 proc", "CPU-s per 1M GPU-samples, pipeline + broker",
                     f"{1e6 * (cpu + bcpu) / n:.1f}", f"Tansu broker serving the fetches: "
                     f"{bcpu:.1f} CPU-s (memory storage; Apache Kafka differs)"))
        stage_cpu = _stage_cpu(s)
        cores = stage_cpu / busy
        rows.append(("ingest 1 proc", "CPU-s per 1M GPU-samples in the stages (steady state)",
                     f"{1e6 * stage_cpu / s['samples']:.1f}",
                     f"process CPU (all threads) while fetching and processing, start-up, "
                     f"joins and idle polls excluded; per stage: {_cpu_split(s, s['samples'])}"))
        rows.append(("ingest 1 proc", "cores in use while busy", f"{cores:.2f}",
                     f"{stage_cpu:.1f} CPU-s in {busy:.1f} s busy (Polars and DuckDB run "
                     f"on threads); so two processes on this {os.cpu_count()}-core machine can "
                     f"reach at most x{min(2.0, (os.cpu_count() or 1) / cores):.2f}"))
        rows.append(("memory", f"pipeline peak RSS, {sz.ingest_gpus:,} GPUs",
                     f"{rss / 1024:.0f} MB", f"{sz.ingest_ticks} s of 1 Hz samples backlog, "
                     "flush every 5 s, max 1M pending rows"))

        # Two pipeline processes, one group, a fresh 4-partition topic.
        rate1 = s["samples"] / busy
        rows += _two_processes(sz, broker.bootstrap, t0, f"{tmp}/s2", rate1, "default threads")

        # The same pair, each process confined to one Polars thread (POLARS_MAX_THREADS=1), and
        # one such process alone: how the pipeline scales across processes when a process
        # cannot borrow the other core, as with one worker per core on a bigger machine.
        one = clean_env(POLARS_MAX_THREADS="1")
        topic1t = f"bench.ingest1t.{uuid.uuid4().hex[:6]}"
        produce(broker.bootstrap, topic1t, encoded_fleet(sz.ingest_gpus, sz.ingest_ticks, t0))
        _, _, err, _, cpu1t, _ = run_measured(
            _pipeline(broker.bootstrap, f"{tmp}/s1t", topic1t, f"bench-{uuid.uuid4().hex[:8]}"),
            env=one)
        s1t = pipeline_summary(err)
        busy1t = _busy(s1t)
        rate1t = s1t["samples"] / busy1t
        rows.append(("ingest 1 proc, 1 thread", "GPU-samples/s (POLARS_MAX_THREADS=1)",
                     _fmt_rate(rate1t), f"{_stage_cpu(s1t) / busy1t:.2f} cores in use "
                     f"while busy; {1e6 * _stage_cpu(s1t) / s1t['samples']:.1f} CPU-s per 1M "
                     f"in the stages, {1e6 * cpu1t / s1t['samples']:.1f} whole process"))
        rows += _two_processes(sz, broker.bootstrap, t0, f"{tmp}/s2t", rate1t,
                               "1 Polars thread each", env=one)

        # Memory at 10,000 GPUs: > 1 minute of samples in flight.
        if not sz.memory_big_gpus:
            return rows
        nb = sz.memory_big_gpus * sz.memory_big_ticks
        msgs = encoded_fleet(sz.memory_big_gpus, sz.memory_big_ticks, t0)
        topic3 = f"bench.mem.{uuid.uuid4().hex[:6]}"
        produce(broker.bootstrap, topic3, msgs)
        del msgs
        rc, _, err, wall, cpu, rss = run_measured(
            _pipeline(broker.bootstrap, f"{tmp}/s3", topic3, f"bench-{uuid.uuid4().hex[:8]}"))
        s3 = pipeline_summary(err)
        rows.append(("memory", f"pipeline peak RSS, {sz.memory_big_gpus:,} GPUs",
                     f"{rss / 1024:.0f} MB", f"{nb:,} samples ({sz.memory_big_ticks} s at 1 Hz) "
                     f"backlog; {s3['samples'] / _busy(s3):,.0f} samples/s busy; "
                     f"split {_split(s3)}"))
    return rows


def _two_processes(sz: Sizes, bootstrap: str, t0: float, store: str, rate1: float,
                   label: str, env: dict | None = None) -> list[Row]:
    """Two pipeline processes in one consumer group draining a fresh 4-partition topic."""
    topic = f"bench.ingest2.{uuid.uuid4().hex[:6]}"
    produce(bootstrap, topic, encoded_fleet(sz.ingest_gpus, sz.ingest_ticks, t0), partitions=4)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    procs = [start(_pipeline(bootstrap, store, topic, group, until_idle=4.0), env)
             for _ in range(2)]
    results = [p.finish(600) for p in procs]
    sums = [pipeline_summary(e) for _, e in results]
    total = sum(x["samples"] for x in sums)
    busiest = max(_busy(x) for x in sums)
    cpu2 = sum(p.cpu for p in procs)
    rate2 = total / busiest
    # Nodes are keyed to partitions by hash, so the two processes rarely get equal shares; the
    # one with more samples bounds the pair whatever the CPU does.
    share = max(x["samples"] for x in sums) / total
    stage = f"ingest 2 procs, {label}"
    return [
        (stage, "GPU-samples/s, both together", _fmt_rate(rate2),
         f"{total:,} samples ({' + '.join(str(x['samples']) for x in sums)}) / busiest "
         f"process's {busiest:.1f} s busy; x{rate2 / rate1:.2f} of 1 proc ({label}); the "
         f"larger share is {100 * share:.0f} %, so partition balance alone allows at most "
         f"x{1 / share:.2f}"),
        (stage, "CPU-s per 1M GPU-samples", f"{1e6 * cpu2 / total:.1f}",
         f"both processes, incl. start-up; in the stages: "
         f"{1e6 * sum(_stage_cpu(x) for x in sums) / total:.1f}"),
    ]


# -- decode + rollup alone --------------------------------------------------------------------
def decode_rollup(sz: Sizes) -> list[Row]:
    from fleetlens.pipeline.decode import Record, decode
    from fleetlens.pipeline.rollup import rollup
    from fleetlens.pipeline.store import Store

    from fleetlens.config import Config

    t0 = float(int(time.time()) // 60 * 60 - 86400)
    msgs = encoded_fleet(sz.decode_gpus, sz.decode_ticks, t0)
    records = [Record(i % 4, i, k, v) for i, (k, v) in enumerate(msgs)]
    n = sz.decode_gpus * sz.decode_ticks
    cfg = Config()
    _, ledger = Store(tempfile.mkdtemp()).read_ledger()
    best_d, best_r = 1e9, 1e9
    for _ in range(3):
        a = time.perf_counter()
        frame, dead = decode(records)
        b = time.perf_counter()
        out = rollup(frame.drop("_partition", "_offset"), ledger, cfg.definitions, cfg.tenancy)
        c = time.perf_counter()
        best_d, best_r = min(best_d, b - a), min(best_r, c - b)
    return [
        ("decode alone", "GPU-samples/s (pipeline.decode.decode)", _fmt_rate(n / best_d),
         f"{n:,} samples in {len(records):,} messages, best of 3 ({best_d:.2f} s)"),
        ("rollup alone", "GPU-samples/s (pipeline.rollup.rollup)", _fmt_rate(n / best_r),
         f"-> {out.height:,} rollup rows, best of 3 ({best_r:.2f} s)"),
        ("decode+rollup", "GPU-samples/s, the ceiling without Kafka",
         _fmt_rate(n / (best_d + best_r)), "one thread of Python driving Polars"),
    ]


# -- query ------------------------------------------------------------------------------------
WEEK0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday


def make_rollups(store_dir: str, gpus: int, days: int = 7) -> int:
    """1-minute rollups for `gpus` GPUs over `days` days, written directly (one file per day)."""
    import polars as pl
    from fleetlens.pipeline.rollup import ROLLUP_SCHEMA
    from fleetlens.pipeline.store import Store

    store = Store(store_dir)
    tenants = ["acme-ai", "borealis-labs", "cobalt-research", "delta-vision", "ember-inference"]
    g_all = pl.DataFrame({"_g": pl.arange(0, gpus, eager=True)}).with_columns(
        pl.format("gpu-node-{}", pl.col("_g") // 8).alias("node"),
        (pl.col("_g") % 8).alias("gpu"), pl.format("GPU-{}", pl.col("_g")).alias("uuid"))
    total = 0
    chunk = 2500
    for d, c0 in [(d, c0) for d in range(days) for c0 in range(0, gpus, chunk)]:
        g = g_all.slice(c0, chunk)
        m0 = int((WEEK0 + timedelta(days=d)).timestamp()) // 60
        minutes = pl.DataFrame({"_m": pl.arange(m0, m0 + 1440, eager=True)})
        f = minutes.join(g, how="cross")
        h = (pl.col("_g") * 1_000_003 + pl.col("_m") // 180 * 7919).hash(7)
        u = (h % 1000).cast(pl.Float64) / 1000.0
        busy = (u < 0.6)
        idle = ~busy & (u < 0.9)
        tenant_i = ((pl.col("_g") // 8 + pl.col("_m") // 360) % 6).cast(pl.Int64)
        f = f.with_columns(
            (pl.col("_m") * 60_000_000).cast(pl.Datetime("us")).alias("minute"),
            pl.lit(None, pl.Int64).alias("mig_instance"),
            pl.when(tenant_i < 5).then(
                pl.lit(pl.Series(tenants)).get(tenant_i.clip(0, 4))).alias("tenant"),
            pl.lit("ledger").alias("tenant_source"),
            pl.lit(None, pl.String).alias("mig_profile"),
            pl.lit("NVIDIA H100 80GB HBM3").alias("model"), pl.lit("h100-sxm5-80gb")
            .alias("model_key"), pl.lit("sim-1").alias("cluster"),
            pl.lit(None, pl.String).alias("namespace"), pl.lit(None, pl.String).alias("job_id"),
            pl.lit(60, pl.UInt32).alias("samples"), pl.lit(60.0).alias("observed_s"),
            pl.when(busy).then(60.0).otherwise(0.0).alias("busy_s"),
            pl.when(busy & (u < 0.1)).then(60.0).otherwise(0.0).alias("low_eff_s"),
            pl.when(idle).then(60.0).otherwise(0.0).alias("idle_s"),
            pl.when(idle & (u < 0.75)).then(60.0).otherwise(0.0).alias("idle_held_s"),
            pl.when(~busy & ~idle).then(60.0).otherwise(0.0).alias("unavailable_s"),
            (u * 100).alias("gpu_util_mean"), u.alias("sm_active_mean"),
            (u * 0.5).alias("tensor_active_mean"), (200 + 500 * u).alias("power_w_mean"),
            ((200 + 500 * u) * 60).alias("energy_j"), (40 + 40 * u).alias("temp_max_c"),
            (80000 * u).alias("fb_used_max_mib"), pl.lit(0, pl.UInt32).alias("xid_count"),
            pl.lit(None, pl.Int64).alias("xid_last"), pl.lit(0.0).alias("throttled_s"),
            pl.when(busy).then(u * 30).otherwise(0.0).alias("mfu_s"),
            pl.lit(60.0).alias("mfu_basis_s"),
            pl.when(busy).then(60.0).otherwise(0.0).alias("mfu_busy_basis_s"),
            pl.lit(0.0).alias("gap_s"),
        ).select([pl.col(c).cast(t) for c, t in ROLLUP_SCHEMA.items()])
        store.write_rollups("fleetlens.samples", 0, d * 1000 + c0 // chunk + 1, f)
        total += f.height
    return total


def compact_store(store_dir: str) -> float:
    """What the pipeline does as rollup files accumulate (pipeline/compact.py), here at once
    for the generated files; returns the seconds it took."""
    from fleetlens.pipeline.compact import compact_partition
    from fleetlens.pipeline.store import Store

    store = Store(store_dir)
    a = time.perf_counter()
    compact_partition(store, "fleetlens.samples", 0, max(int(f.stem) for f in store.rollup_files()))
    return time.perf_counter() - a


def query(sz: Sizes) -> list[Row]:
    from fleetlens.pipeline.query import connect
    from fleetlens.pipeline.report import range_figures, range_report
    from fleetlens.pipeline.store import Store

    rows: list[Row] = []
    start_s, end_s = WEEK0.strftime("%Y-%m-%d"), (WEEK0 + timedelta(days=7)).strftime("%Y-%m-%d")
    week = (WEEK0, WEEK0 + timedelta(days=7))
    for gpus in sz.query_fleets:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.monotonic()
            n = make_rollups(tmp, gpus)
            gen = time.monotonic() - t
            # Before the hourly tier exists: every minute row is read.
            con = connect(tmp)
            a = time.perf_counter()
            minute_only = range_figures(con, *week)
            minute_s = time.perf_counter() - a
            compact_s = compact_store(tmp)
            store = Store(tmp)
            tier_rows = sum(pq_rows(f) for f in store.hourly_dir().rglob("*.parquet"))
            size_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*.parquet")) / 1e6
            files = len(list(Path(tmp).rglob("*.parquet")))
            cold = []
            for _ in range(2 if gpus <= 1000 else 1):
                rc, out, err, wall, cpu, rss = run_measured(fleetlens_cmd(
                    "report", "range", "--store", tmp, "--from", start_s, "--to", end_s,
                    "--format", "json"))
                if rc != 0:
                    raise RuntimeError(err)
                cold.append(wall)
            n_tenants = len(json.loads(out)["tenants"])
            con = connect(tmp)
            warm, reconnect = [], []
            for _ in range(5):
                a = time.perf_counter()
                tiered = range_figures(con, *week)
                warm.append(time.perf_counter() - a)
            for _ in range(5):
                a = time.perf_counter()
                range_report(tmp, *week)
                reconnect.append(time.perf_counter() - a)
            worst = max_relative_difference(minute_only, tiered)
            rows.append(("query", f"report range 1 week, {gpus:,} GPUs, cold (new process)",
                         f"{min(cold):.2f} s",
                         f"{n:,} rollup rows in {files} files, {size_mb:.0f} MB "
                         f"Parquet; {n_tenants} tenants; CLI incl. Python start-up, peak RSS "
                         f"{rss / 1024:.0f} MB; rollups generated in {gen:.0f} s"))
            rows.append(("query", f"report range 1 week, {gpus:,} GPUs, warm (in-process)",
                         f"{sorted(warm)[len(warm) // 2]:.3f} s",
                         f"median of {len(warm)} range_figures() calls on an open store "
                         f"connection (min {min(warm):.3f} s), as the API and the weekly report "
                         f"run it; with a new connection each time (range_report): "
                         f"{sorted(reconnect)[len(reconnect) // 2]:.3f} s"))
            rows.append(("query", f"hourly tier, {gpus:,} GPUs: compaction / report without it",
                         f"{compact_s:.1f} s / {minute_s:.2f} s",
                         f"{n:,} minute rows -> {tier_rows:,} hourly rows in {compact_s:.1f} s "
                         f"(once here; the pipeline compacts every 60 files); the same report "
                         f"from minute rows only: {minute_s:.2f} s; largest relative difference "
                         f"between the two: {worst:.1e}"))
    return rows


def pq_rows(path: Path) -> int:
    import polars as pl

    return pl.scan_parquet(path).select(pl.len()).collect().item()


def max_relative_difference(a: object, b: object) -> float:
    """The largest relative difference between the numbers of two report dicts (same shape)."""
    if isinstance(a, dict):
        return max((max_relative_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list):
        return max((max_relative_difference(x, y) for x, y in zip(a, b, strict=True)),
                   default=0.0)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) / max(abs(a), abs(b), 1e-12)
    if a != b:
        raise AssertionError(f"report differs: {a!r} != {b!r}")
    return 0.0


def api(sz: Sizes) -> list[Row]:
    """`fleetlens serve` over a week of 1,000 GPUs of 1-minute rollups: the per-tenant summary
    under 10 concurrent clients (requests/s, p50/p99 latency)."""
    import threading

    from fleetlens.broker import free_port

    token = "bench-admin-token-0123456789"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        n = make_rollups(tmp, sz.api_gpus)
        compact_store(tmp)
        entry = subprocess.run(fleetlens_cmd("api", "hash-token", token), capture_output=True,
                               text=True, check=True).stdout.strip()
        cfg = Path(tmp) / "api.toml"
        cfg.write_text(f"[api]\ntokens = [{entry}]\n")
        port = free_port()
        server = subprocess.Popen(fleetlens_cmd("--config", str(cfg), "serve", "--store", tmp,
                                                "--port", str(port)),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=clean_env())
        q = urllib.parse.urlencode({"from": WEEK0.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                    "to": (WEEK0 + timedelta(days=7)).strftime(
                                        "%Y-%m-%dT%H:%M:%SZ")})
        url = f"http://127.0.0.1:{port}/v1/summary?{q}"
        headers = {"Authorization": f"Bearer {token}"}

        def get() -> float:
            a = time.perf_counter()
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=120) as r:
                r.read()
            return time.perf_counter() - a

        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    get()  # warm-up, also waits for the server
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

            def client() -> None:
                for _ in range(sz.api_requests):
                    try:
                        t = get()
                        with lock:
                            latencies.append(t)
                    except OSError as exc:
                        with lock:
                            errors.append(repr(exc))

            threads = [threading.Thread(target=client) for _ in range(10)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait(30)
    latencies.sort()
    p = lambda q_: latencies[min(len(latencies) - 1, int(q_ * len(latencies)))]  # noqa: E731
    note = (f"{len(latencies)} requests, 10 clients, {n:,} rollup rows (hourly tier built); "
            f"{len(errors)} errors; server and clients share the 2 cores")
    rows.append(("api", f"/v1/summary 1 week, {sz.api_gpus:,} GPUs: requests/s",
                 f"{len(latencies) / wall:.1f}", note))
    rows.append(("api", "/v1/summary latency p50 / p99",
                 f"{p(0.5) * 1000:.0f} / {p(0.99) * 1000:.0f} ms", note))
    return rows


# -- agent ------------------------------------------------------------------------------------
def agent(sz: Sizes) -> list[Row]:
    rows: list[Row] = []
    for source in ("sim", "dcgm"):
        rc, out, err, wall, cpu, rss = run_measured(
            [sys.executable, str(ROOT / "benchmarks" / "agent_bench.py"),
             "--seconds", str(sz.agent_seconds), "--source", source, "--json"], timeout=300)
        if rc != 0:
            rows.append(("agent", f"{source} source", "failed", err.strip()[-200:]))
            continue
        r = json.loads(out.strip().splitlines()[-1])
        rows.append(("agent", f"{source} source, 1 Hz x 8 GPUs: CPU % of one core",
                     f"{r['cpu_pct']:.2f} %", f"over {r['seconds']:.0f} s after 5 s settle"))
        rows.append(("agent", f"{source} source, 1 Hz x 8 GPUs: peak RSS",
                     f"{r['peak_rss_mb']:.0f} MB", f"settled {r['rss_settled_mb']:.0f} MB; "
                     f"{r['threads']} threads"))
    return rows


# -- freshness --------------------------------------------------------------------------------
def freshness(sz: Sizes) -> list[Row]:
    """Live agent at 1 Hz -> pipeline (default windows, metrics on): when does each sample show
    in the store (its minute's rollup file) and in the Prometheus gauge?"""
    import polars as pl

    from fleetlens.broker import EmbeddedBroker, free_port

    rows: list[Row] = []
    topic = f"bench.fresh.{uuid.uuid4().hex[:6]}"
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        from fleetlens.config import KafkaConfig
        from fleetlens.kafka_client import ensure_topics

        ensure_topics(KafkaConfig(bootstrap=broker.bootstrap), [topic])
        mport = free_port()
        env = clean_env()
        pipe = start(_pipeline(broker.bootstrap, f"{tmp}/store", topic,
                               f"bench-{uuid.uuid4().hex[:8]}", until_idle=9999,
                               extra=("--metrics-port", str(mport))), env)
        ag = start(fleetlens_cmd("agent", "--source", "sim", "--nodes", str(sz.fresh_nodes),
                                 "--interval", "1", "--bootstrap", broker.bootstrap,
                                 "--topic", topic, "--spool-dir", f"{tmp}/spool",
                                 "--metrics-port", "0"), env)
        seen_files: set[str] = set()
        store_lat: list[float] = []
        gauge_lat: list[float] = []
        last_gauge = None
        deadline = time.monotonic() + sz.fresh_seconds
        t_started = time.time()
        try:
            while time.monotonic() < deadline:
                time.sleep(0.5)
                now = time.time()
                for f in Path(f"{tmp}/store/rollups").rglob("[0-9]*.parquet"):
                    if str(f) in seen_files:
                        continue
                    seen_files.add(str(f))
                    df = pl.read_parquet(f, columns=["minute", "samples"])
                    # one row per GPU and minute (no tenancy splits here): each row's samples
                    # are at ts = minute + k for the last `samples` seconds the agent ran
                    for minute, samples in df.iter_rows():
                        m = minute.replace(tzinfo=UTC).timestamp()
                        ks = [k for k in range(60) if m + k >= t_started - 1][-max(1, samples):]
                        store_lat += [now - (m + k) for k in ks]
                try:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics",
                                                  timeout=2).read().decode()
                except OSError:
                    continue
                ts = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                      if line.startswith("fleetlens_gpu_window_timestamp_seconds{")]
                if ts:
                    newest = max(ts)
                    if newest != last_gauge:
                        # the gauge is the window start: its newest sample is ts = start + 59
                        gauge_lat.append(now - newest)
                        last_gauge = newest
        finally:
            ag.send_signal(signal.SIGTERM)
            ag.finish(30)
            pipe.send_signal(signal.SIGTERM)
            pipe.finish(30)
    from fleetlens.config import PipelineConfig

    defaults = PipelineConfig()  # the benchmark runs the pipeline with the default windows
    note = (f"live sim agent {sz.fresh_nodes * 8} GPUs at 1 Hz -> pipeline, lateness "
            f"{defaults.lateness_s:g} s, flush {defaults.flush_interval_s:g} s; "
            f"{sz.fresh_seconds:.0f} s run, {len(store_lat):,} samples")
    rows.append(("freshness", "sample ts -> in store (report/API) p50 / p99",
                 f"{pct(store_lat, 50):.0f} / {pct(store_lat, 99):.0f} s", note))
    rows.append(("freshness", "Prometheus gauge: oldest / newest sample of the minute",
                 f"{max(gauge_lat, default=float('nan')):.0f} / "
                 f"{max(gauge_lat, default=float('nan')) - 59:.0f} s",
                 "max over the run of (now - fleetlens_gpu_window_timestamp_seconds) when the "
                 "newest minute changes (the gauge is the minute's start, ts of its oldest "
                 "sample); the minute's newest sample (start + 59 s) is 59 s younger"))
    return rows


# -- Prometheus side by side -----------------------------------------------------------------
PROM_FAMILIES = 20


def _dcgm_template() -> tuple[list[str], str]:
    """The first 20 metric families of the recorded 8xH100 page, as a list of family blocks."""
    text = DCGM_PAGE.read_text()
    blocks, cur = [], []
    for line in text.splitlines():
        if line.startswith("# HELP") and cur:
            blocks.append(cur)
            cur = []
        cur.append(line)
    if cur:
        blocks.append(cur)
    blocks = [b for b in blocks if any(ln.startswith("DCGM") for ln in b)][:PROM_FAMILIES]
    return ["\n".join(b) for b in blocks], "gpu-h100-017"


def _node_pages(gpus: int, variant: int) -> dict[str, bytes]:
    blocks, host = _dcgm_template()
    page = "\n".join(blocks) + "\n"
    pages = {}
    for n in range(max(1, gpus // 8)):
        p = page.replace(host, f"gpu-node-{n:04d}").replace("GPU-", f"GPU-{n:04d}")
        if variant:
            p = p.replace("} 1", "} 2")
        pages[f"/node/{n}/metrics"] = p.encode()
    return pages


def prometheus(sz: Sizes, fleetlens_cpu_per_m: float | None) -> list[Row]:
    from fleetlens.broker import free_port

    rows: list[Row] = []
    prom = shutil.which("prometheus") or "/usr/bin/prometheus"
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(prom).exists():
        return [("prometheus", "skipped", "-", "prometheus binary not installed")]
    with tempfile.TemporaryDirectory() as tmp:
        pages = _node_pages(sz.prom_gpus, 0)
        with StaticServer(pages) as srv:
            targets = [f"127.0.0.1:{srv.port}"]
            port = free_port()
            cfg = {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [{
                    "job_name": f"node{n}", "metrics_path": path,
                    "static_configs": [{"targets": targets}]}
                    for n, path in enumerate(pages)],
            }
            Path(f"{tmp}/prom.yml").write_text(json.dumps(cfg))
            p = subprocess.Popen([prom, f"--config.file={tmp}/prom.yml",
                                  f"--storage.tsdb.path={tmp}/data",
                                  f"--web.listen-address=127.0.0.1:{port}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                def appended() -> float:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                  timeout=5).read().decode()
                    return sum(float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines()
                               if ln.startswith("prometheus_tsdb_head_samples_appended_total"))
                for _ in range(60):
                    try:
                        appended()
                        break
                    except OSError:
                        time.sleep(0.5)
                time.sleep(5)  # settle: first scrapes create the series
                c0, a0 = cpu_seconds(p.pid), appended()
                t0 = time.monotonic()
                flip = 0
                while time.monotonic() - t0 < sz.prom_seconds:
                    time.sleep(1)
                    flip ^= 1
                    srv.pages.update(_node_pages(sz.prom_gpus, flip))
                c1, a1 = cpu_seconds(p.pid), appended()
                secs = time.monotonic() - t0
                rss = status_kb(p.pid, "VmHWM")
            finally:
                p.terminate()
                p.wait(30)
        # appended counts every series incl. the up/scrape_* ones (5 per target)
        gpu_samples = (a1 - a0 - 5 * len(pages) * secs) / PROM_FAMILIES
        per_m = 1e6 * (c1 - c0) / max(gpu_samples, 1)
        rows.append(("prometheus", f"ingest CPU-s per 1M GPU-samples ({PROM_FAMILIES} families, "
                     "1 s scrapes)", f"{per_m:.0f}",
                     f"{sz.prom_gpus:,} GPUs in {len(pages)} targets, {secs:.0f} s, "
                     f"{gpu_samples:,.0f} GPU-samples, {c1 - c0:.1f} CPU-s; peak RSS "
                     f"{rss / 1024:.0f} MB"))
        if fleetlens_cpu_per_m:
            rows.append(("prometheus", "ratio: Prometheus / fleetlens CPU per GPU-sample",
                         f"{per_m / fleetlens_cpu_per_m:.1f}x",
                         "fleetlens = ingest 1 proc + Tansu (fetch, decode, windows, rollups, "
                         "Parquet); "
                         "Prometheus = scrape+parse+TSDB append only"))
        rows += _promql(sz, promtool, prom, tmp)
    return rows


def _promql(sz: Sizes, promtool: str, prom: str, tmp: str) -> list[Row]:
    """Backfill one week of GPU_UTIL with tenant labels via promtool, then ask per-tenant idle
    hours with PromQL; compare with fleetlens's report over the same GPUs and tenants."""
    from fleetlens.pipeline.query import connect
    from fleetlens.pipeline.report import range_figures

    from fleetlens.broker import free_port

    gpus, step = sz.prom_backfill_gpus, sz.prom_backfill_step_s
    tenants = ["acme-ai", "borealis-labs", "cobalt-research", "delta-vision", "ember-inference"]
    t_start = int(WEEK0.timestamp())
    t_end = t_start + 7 * 86400
    om = Path(f"{tmp}/backfill.om")
    # Same deterministic tenant and busy pattern as make_rollups (per 3 h / 6 h blocks), so the
    # truth is known: a GPU-minute is idle iff gpu_util <= 1.
    a = time.monotonic()
    with om.open("w") as f:
        f.write("# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n"
                "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n")
        import polars as pl
        for g in range(gpus):
            ms = pl.DataFrame({"_m": pl.arange(t_start // 60, t_end // 60, step // 60,
                                               eager=True)})
            h = ((pl.lit(g, pl.Int64) * 1_000_003 + pl.col("_m") // 180 * 7919).hash(7) % 1000) \
                .cast(pl.Float64) / 1000.0
            ti = ((pl.lit(g // 8, pl.Int64) + pl.col("_m") // 360) % 6)
            df = ms.with_columns(h.alias("u"), ti.alias("t"))
            lines = []
            for m, u, t in df.iter_rows():
                if u >= 0.9:
                    continue  # unavailable: a GPU that is down is not exported
                util = u * 100 if u < 0.6 else 0.0
                tl = f',tenant="{tenants[t]}"' if t < 5 else ""
                lines.append(f'DCGM_FI_DEV_GPU_UTIL{{gpu="{g % 8}",Hostname="gpu-node-{g // 8}"'
                             f'{tl}}} {util} {m * 60}\n')
            f.write("".join(lines))
        f.write("# EOF\n")
    gen_s = time.monotonic() - a
    a = time.monotonic()
    r = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics",
                        "--max-block-duration=168h", str(om), f"{tmp}/bf"],
                       capture_output=True, text=True)
    bf_s = time.monotonic() - a
    om.unlink()
    if r.returncode != 0:
        return [("promql", "backfill failed", "-", r.stderr.strip()[-200:])]
    port = free_port()
    Path(f"{tmp}/empty.yml").write_text("{}")
    p = subprocess.Popen([prom, f"--config.file={tmp}/empty.yml",
                          f"--storage.tsdb.path={tmp}/bf",
                          "--storage.tsdb.retention.time=100y",
                          f"--web.listen-address=127.0.0.1:{port}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[Row] = []
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(base + "/-/ready", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        q = (f"sum by (tenant) (count_over_time((DCGM_FI_DEV_GPU_UTIL <= 1)[7d:{step}s])) "
             f"* {step} / 3600")
        url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": t_end - 1})
        times, result = [], None
        for _ in range(2):
            a = time.perf_counter()
            result = json.loads(urllib.request.urlopen(url, timeout=600).read())
            times.append(time.perf_counter() - a)
        rss = status_kb(p.pid, "VmHWM")
    finally:
        p.terminate()
        p.wait(30)
    prom_hours = {x["metric"].get("tenant"): float(x["value"][1])
                  for x in result["data"]["result"]}
    # fleetlens over the same GPUs (1-minute rollups, exact) for the same question
    with tempfile.TemporaryDirectory() as store:
        make_rollups(store, gpus)
        compact_store(store)
        con = connect(store)
        fl = []
        for _ in range(3):
            a = time.perf_counter()
            rep = range_figures(con, WEEK0, WEEK0 + timedelta(days=7))
            fl.append(time.perf_counter() - a)
        fl_s = min(fl)
    fl_hours = {t["tenant"]: t.get("gpu_hours_idle") for t in rep["tenants"]}
    errs = [abs(prom_hours.get(k, 0) - v) / v for k, v in fl_hours.items()
            if v and k in prom_hours]
    rows.append(("promql", f"per-tenant idle GPU-hours, 1 week, {gpus:,} GPUs, step {step} s",
                 f"{min(times):.2f} s", f"Prometheus query (best of 2), peak RSS "
                 f"{rss / 1024:.0f} MB; OpenMetrics gen {gen_s:.0f} s, promtool backfill "
                 f"{bf_s:.0f} s"))
    rows.append(("promql", "fleetlens whole weekly report, same GPUs (warm)",
                 f"{fl_s:.3f} s", f"best of 3 on an open connection, hourly tier built; "
                 f"ratio PromQL/fleetlens {min(times) / fl_s:.0f}x; PromQL "
                 f"idle hours differ from exact by up to {100 * max(errs, default=0):.1f} % "
                 "(sampled every step, not time-weighted)"))
    return rows


STAGES = {
    "ingest": ingest, "decode": decode_rollup, "query": query, "api": api, "agent": agent,
    "freshness": freshness, "prometheus": prometheus,
}


def timestamp_note() -> str:
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}, load {load()}"
