"""Sampling gaps: allocated GPU time for which no sample arrived counts as unavailable.

For ledger allocations the report already knows the allocated time and counts whatever has no
sample as unavailable (sql/ledger_missing_macro.sql). For GPUs attributed another way (the
sample's own tenant, its namespace, its Slurm job) the only evidence of an allocation is the
samples themselves: when a GPU's samples before and after a silence belong to the same tenant,
the silence is taken as time that tenant held the GPU, and counted as unavailable — never as
idle.

A silence counts when it is longer than `gap_intervals` x the sample interval (default 3): a
late or lost sample here and there is normal. The gap's seconds are written as a row of the
minute of the sample that ends it (`gap_s`; observed_s 0), so totals over any range that holds
both ends are exact.
"""

from __future__ import annotations

import polars as pl
from fleetlens.pipeline.rollup import (
    GPU_KEY,
    ROLLUP_SCHEMA,
    first_of_gpu,
    gpu_sorted,
    join_state,
    last_of_gpu,
    model_specs,
)
from fleetlens.pipeline.tenancy import attribute

from fleetlens.config import Definitions, TenancyConfig

# The last sample of each GPU, carried from flush to flush (and in the checkpoint).
GAP_STATE_SCHEMA = {"uuid": pl.String, "mig_instance": pl.Int64, "_prev_end": pl.Float64,
                    "_prev_tenant": pl.String, "_prev_source": pl.String}


def empty_gap_state() -> pl.DataFrame:
    return pl.DataFrame(schema=GAP_STATE_SCHEMA)


def gap_rows(prepared: pl.DataFrame, state: pl.DataFrame, ledger: pl.DataFrame,
             defs: Definitions, tenancy: TenancyConfig | None = None
             ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows with the gap seconds found in these samples, the updated state)."""
    if prepared.height == 0:
        return pl.DataFrame(schema=ROLLUP_SCHEMA), state
    # Prepared samples are already in this order (the sort then costs little); on rows sorted
    # by GPU, "the previous sample of the same GPU" is a plain shift.
    s = attribute(gpu_sorted(prepared), ledger, tenancy)
    s = join_state(s, state)
    first = first_of_gpu()
    end = pl.col("ts") + pl.col("interval_s")
    s = s.with_columns(
        pl.when(first).then(pl.col("_prev_end")).otherwise(end.shift(1)).alias("_pe"),
        pl.when(first).then(pl.col("_prev_tenant"))
        .otherwise(pl.col("tenant_resolved").shift(1)).alias("_pt"),
        pl.when(first).then(pl.col("_prev_source"))
        .otherwise(pl.col("tenant_source").shift(1)).alias("_ps"))
    gap = pl.col("ts") - pl.col("_pe")
    counts = ((gap > defs.gap_intervals * pl.col("interval_s") - pl.col("interval_s"))
              & (pl.col("_pt") == pl.col("tenant_resolved"))
              & (pl.col("tenant_source") != "ledger") & (pl.col("_ps") != "ledger"))
    found = s.filter(counts.fill_null(False)).with_columns(gap.alias("gap_s"))
    last = s.filter(last_of_gpu()).select(*GPU_KEY, end.alias("_prev_end"),
                                          pl.col("tenant_resolved").alias("_prev_tenant"),
                                          pl.col("tenant_source").alias("_prev_source"))
    new_state = pl.concat([state.join(last.select(GPU_KEY), on=GPU_KEY, how="anti",
                                      nulls_equal=True), last.select(state.columns)])
    if found.height == 0:
        return pl.DataFrame(schema=ROLLUP_SCHEMA), new_state
    specs = model_specs(found.select("model", "power_limit_w").unique().rows())
    found = found.join(specs.select("model", "power_limit_w", "model_key"),
                       on=["model", "power_limit_w"], how="left", nulls_equal=True)
    rows = found.with_columns(
        ((pl.col("ts") // 60) * 60 * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us"))
        .alias("minute"),
        pl.col("tenant_resolved").alias("tenant_out")).drop("tenant").rename(
        {"tenant_out": "tenant"})
    zero = {"samples", "observed_s", "busy_s", "low_eff_s", "idle_s", "idle_held_s",
            "unavailable_s", "energy_j", "xid_count", "throttled_s", "mfu_s", "mfu_basis_s",
            "mfu_busy_basis_s"}
    keep = {"minute", "node", "gpu", "uuid", "mig_instance", "tenant", "tenant_source",
            "mig_profile", "model", "model_key", "cluster", "namespace", "job_id", "gap_s"}
    out = rows.select([
        (pl.col(c).cast(t) if c in keep else
         pl.lit(0, dtype=t).alias(c) if c in zero else pl.lit(None, dtype=t).alias(c))
        for c, t in ROLLUP_SCHEMA.items()])
    return out, new_state


def state_from_rows(rows: list[list]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=GAP_STATE_SCHEMA, orient="row")


def state_to_rows(state: pl.DataFrame) -> list[list]:
    return [list(r) for r in state.sort("uuid", "mig_instance", nulls_last=True).iter_rows()]
