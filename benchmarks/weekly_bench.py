"""Weekly report speed: a generated store of GPUS GPUs x DAYS days of per-minute rollups
(written directly with ROLLUP_SCHEMA + Store.write_rollups, one file per day), then
`weekly_report` for the last full ISO week in it, all four formats written.

    .venv/bin/python benchmarks/weekly_bench.py [--gpus 1000] [--days 30] [--store DIR]

Prints the generation time, the rows, and the report time (the figure that matters).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
from fleetlens.pipeline.rollup import ROLLUP_SCHEMA
from fleetlens.pipeline.store import Store
from fleetlens.pipeline.weekly import weekly_report
from fleetlens.pipeline.weekly_render import write_outputs

from fleetlens.config import PricingConfig

START = datetime(2026, 10, 26)  # a Monday (2026-W44)
MODELS = [("NVIDIA H100 80GB HBM3", "h100_sxm5_80gb"), ("NVIDIA A100-SXM4-80GB",
                                                        "a100_sxm4_80gb")]


def day_frame(day: int, gpus: int, tenants: int) -> pl.DataFrame:
    """One day of every GPU's minutes; states drawn from a hash (deterministic, no numpy)."""
    t0 = START + timedelta(days=day)
    i = pl.int_range(0, gpus * 1440, dtype=pl.Int64)
    g = i // 1440
    u = (pl.col("_i").hash(seed=day) % 10_000) / 10_000.0
    busy = pl.col("_u") < 0.6
    held = ~busy & (pl.col("_u") < 0.8)
    tenant_idx = (pl.col("_g") * 7 + day // 3) % (tenants + 1)  # last index: unallocated
    models = pl.Series([m for m, _ in MODELS])
    keys = pl.Series([k for _, k in MODELS])
    f = pl.select(i.alias("_i")).with_columns(g.alias("_g")).with_columns(u.alias("_u"),
                                                                           tenant_idx.alias("_t"))
    f = f.with_columns(
        (pl.lit(t0) + pl.duration(minutes=pl.col("_i") % 1440)).alias("minute"),
        pl.format("node-{}", (pl.col("_g") // 8)).alias("node"),
        (pl.col("_g") % 8).alias("gpu"), pl.format("GPU-{}", pl.col("_g")).alias("uuid"),
        pl.when(pl.col("_t") < tenants).then(pl.format("tenant-{}", pl.col("_t")))
        .alias("tenant"),
        pl.when(pl.col("_t") < tenants).then(pl.lit("ledger")).otherwise(pl.lit("none"))
        .alias("tenant_source"),
        pl.when(pl.col("_g") % 2 == 0).then(pl.lit(models[0])).otherwise(pl.lit(models[1]))
        .alias("model"),
        pl.when(pl.col("_g") % 2 == 0).then(pl.lit(keys[0])).otherwise(pl.lit(keys[1]))
        .alias("model_key"),
        pl.when(pl.col("_g") < gpus // 2).then(pl.lit("east")).otherwise(pl.lit("west"))
        .alias("cluster"),
        pl.lit(6).alias("samples"), pl.lit(60.0).alias("observed_s"),
        pl.when(busy).then(60.0).otherwise(0.0).alias("busy_s"),
        pl.when(busy & (pl.col("_u") < 0.1)).then(60.0).otherwise(0.0).alias("low_eff_s"),
        pl.when(busy).then(0.0).otherwise(60.0).alias("idle_s"),
        pl.when(held).then(60.0).otherwise(0.0).alias("idle_held_s"),
        pl.lit(0.0).alias("unavailable_s"),
        pl.when(busy).then(0.2 + pl.col("_u")).otherwise(0.0).alias("sm_active_mean"),
        pl.when(busy).then(550.0).otherwise(90.0).alias("power_w_mean"),
        pl.when(busy).then(550.0 * 60).otherwise(90.0 * 60).alias("energy_j"),
        pl.when(busy | held).then(40000.0).otherwise(0.0).alias("fb_used_max_mib"),
        pl.when(busy).then(pl.col("_u") * 60).otherwise(0.0).alias("mfu_s"),
        pl.lit(60.0).alias("mfu_basis_s"),
        pl.when(busy).then(60.0).otherwise(0.0).alias("mfu_busy_basis_s"),
    )
    return f.select([(pl.col(c) if c in f.columns else pl.lit(None)).cast(t).alias(c)
                     for c, t in ROLLUP_SCHEMA.items()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--tenants", type=int, default=12)
    ap.add_argument("--store", help="keep the generated store here (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.store or tmp) / "store"
        store = Store(root)
        t0 = time.perf_counter()
        rows = 0
        for d in range(args.days):
            frame = day_frame(d, args.gpus, args.tenants)
            store.write_rollups("fleetlens.samples", d % 4, d, frame)
            rows += frame.height
        gen = time.perf_counter() - t0
        last_full = START + timedelta(days=args.days)
        last_full -= timedelta(days=last_full.weekday() + 7) if last_full.weekday() else \
            timedelta(days=7)
        y, w, _ = last_full.isocalendar()
        t1, c1 = time.perf_counter(), time.process_time()
        report = weekly_report(str(root), f"{y}-W{w:02d}",
                               pricing=PricingConfig(models={"h100_sxm5_80gb": 2.5}))
        t2, c2 = time.perf_counter(), time.process_time()
        write_outputs(report, ["html", "md", "csv", "json"], Path(tmp) / "out")
        t3 = time.perf_counter()
        print(f"weekly_bench: {args.gpus} GPUs x {args.days} days = {rows:,} rollup rows "
              f"(generated in {gen:.1f}s)")
        print(f"weekly_bench: week {report['week']}: report {t2 - t1:.2f}s "
              f"(CPU {c2 - c1:.2f}s, load "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores), rendering all "
              f"formats {t3 - t2:.2f}s, total {t3 - t1:.2f}s; "
              f"{report['fleet']['headline']['gpu_hours_allocated']:,.0f} GPU-hours allocated, "
              f"{len(report['tenants'])} tenants")


if __name__ == "__main__":
    main()
