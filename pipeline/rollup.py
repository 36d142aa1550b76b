"""Per-GPU, per-minute rollups: the numbers every report is built from.

`rollup()` is a pure function of the samples of closed windows (plus the ledger, the catalog
and the definitions): running it again over the same samples gives the same rows, which is
what makes a replay after a crash harmless.

Definitions (defaults in config [definitions]; README "Definitions"):

* a sample counts `interval_s` GPU-seconds, in the minute that contains its `ts`;
* idle: gpu_util <= 1 and (sm_active null or <= 0.01); a sample with neither counter
  measured cannot be called idle and counts as busy;
* idle-held: idle and fb_used_mib >= 1024 (memory held, no compute); busy: not idle;
* MFU estimate: tensor_active x sm_clock_mhz / spec_clock_mhz, clamped to [0, 1]; null when
  tensor_active is null or the model is not in the catalog; a null sm_clock (or a SKU
  without a spec clock) uses 1.0 as the ratio. Idle samples count as MFU 0.

Rollup rows keep three MFU sums so reports can divide correctly:
`mfu_s` = sum of mfu x seconds, `mfu_basis_s` = seconds where MFU is known (idle seconds of
catalogued GPUs included, as zero), `mfu_busy_basis_s` = busy seconds where MFU is known.
"""

from __future__ import annotations

import polars as pl
from fleetlens.pipeline.catalog import lookup
from fleetlens.pipeline.tenancy import attribute

from fleetlens.config import Definitions

KEYS = ["minute", "node", "gpu", "uuid", "mig_instance", "tenant", "tenant_source"]

ROLLUP_SCHEMA: dict[str, pl.DataType] = {
    "minute": pl.Datetime("us"),
    "node": pl.String, "gpu": pl.Int64, "uuid": pl.String, "mig_instance": pl.Int64,
    "tenant": pl.String, "tenant_source": pl.String,
    "mig_profile": pl.String, "model": pl.String, "model_key": pl.String,
    "cluster": pl.String, "namespace": pl.String, "job_id": pl.String,
    "samples": pl.UInt32, "observed_s": pl.Float64, "busy_s": pl.Float64,
    "idle_s": pl.Float64, "idle_held_s": pl.Float64,
    "gpu_util_mean": pl.Float64, "sm_active_mean": pl.Float64,
    "tensor_active_mean": pl.Float64, "power_w_mean": pl.Float64,
    "energy_j": pl.Float64, "temp_max_c": pl.Float64, "fb_used_max_mib": pl.Float64,
    "xid_count": pl.UInt32, "xid_last": pl.Int64, "throttled_s": pl.Float64,
    "mfu_s": pl.Float64, "mfu_basis_s": pl.Float64, "mfu_busy_basis_s": pl.Float64,
}


def _model_specs(models: list[str]) -> pl.DataFrame:
    rows = []
    for m in models:
        spec = lookup(m)
        rows.append({"model": m, "model_key": spec.model_key if spec else None,
                     "spec_clock_mhz": spec.spec_clock_mhz if spec else None,
                     "_known": spec is not None and spec.bf16_dense_tflops is not None})
    return pl.DataFrame(rows, schema={"model": pl.String, "model_key": pl.String,
                                      "spec_clock_mhz": pl.Float64, "_known": pl.Boolean})


def _time_weighted_mean(col: str) -> pl.Expr:
    measured = pl.col(col).is_not_null()
    weight = pl.when(measured).then(pl.col("interval_s")).otherwise(0.0)
    total = weight.sum()
    return pl.when(total > 0).then((pl.col(col) * weight).sum() / total).alias(f"{col}_mean")


def classify(samples: pl.DataFrame, defs: Definitions) -> pl.DataFrame:
    """Add per-sample `_idle`, `_held`, `_mfu` (and model_key) columns."""
    specs = _model_specs(samples["model"].unique().to_list())
    s = samples.join(specs, on="model", how="left")
    util_idle = pl.col("gpu_util").is_null() | (pl.col("gpu_util") <= defs.idle_gpu_util_max)
    sm_idle = pl.col("sm_active").is_null() | (pl.col("sm_active") <= defs.idle_sm_active_max)
    measured = pl.col("gpu_util").is_not_null() | pl.col("sm_active").is_not_null()
    idle = util_idle & sm_idle & measured
    clock_ratio = pl.when(pl.col("sm_clock_mhz").is_not_null()
                          & pl.col("spec_clock_mhz").is_not_null()) \
        .then(pl.col("sm_clock_mhz") / pl.col("spec_clock_mhz")).otherwise(1.0)
    mfu = pl.when(pl.col("_known") & pl.col("tensor_active").is_not_null()) \
        .then((pl.col("tensor_active") * clock_ratio).clip(0.0, 1.0))
    return s.with_columns(
        idle.alias("_idle"),
        (idle & (pl.col("fb_used_mib") >= defs.idle_held_fb_mib).fill_null(False)).alias("_held"),
        # Idle time counts as zero MFU on a catalogued GPU, whatever tensor_active says.
        pl.when(idle & pl.col("_known")).then(0.0).otherwise(mfu).alias("_mfu"),
    )


def rollup(samples: pl.DataFrame, ledger: pl.DataFrame, defs: Definitions) -> pl.DataFrame:
    """Closed-window samples -> one row per (minute, GPU or MIG instance, tenant)."""
    if samples.height == 0:
        return pl.DataFrame(schema=ROLLUP_SCHEMA)
    s = samples.unique(subset=["uuid", "mig_instance", "ts"], keep="first", maintain_order=True)
    s = classify(attribute(s, ledger), defs)
    sec = pl.col("interval_s")
    busy = ~pl.col("_idle")
    s = s.with_columns(
        ((pl.col("ts") // 60) * 60 * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us"))
        .alias("minute"),
        pl.col("tenant_resolved").alias("tenant_out"),
    ).drop("tenant").rename({"tenant_out": "tenant"})
    out = s.group_by(KEYS).agg(
        pl.col("mig_profile").first(), pl.col("model").first(), pl.col("model_key").first(),
        pl.col("cluster").drop_nulls().last(), pl.col("namespace").drop_nulls().last(),
        pl.col("job_id").drop_nulls().last(),
        pl.len().cast(pl.UInt32).alias("samples"),
        sec.sum().alias("observed_s"),
        sec.filter(busy).sum().alias("busy_s"),
        sec.filter(pl.col("_idle")).sum().alias("idle_s"),
        sec.filter(pl.col("_held")).sum().alias("idle_held_s"),
        _time_weighted_mean("gpu_util"), _time_weighted_mean("sm_active"),
        _time_weighted_mean("tensor_active"), _time_weighted_mean("power_w"),
        (pl.col("power_w") * sec).sum().alias("energy_j"),
        pl.col("temp_c").max().alias("temp_max_c"),
        pl.col("fb_used_mib").max().alias("fb_used_max_mib"),
        pl.col("xid").is_not_null().sum().cast(pl.UInt32).alias("xid_count"),
        pl.col("xid").drop_nulls().last().alias("xid_last"),
        sec.filter(pl.col("throttle").fill_null(0) > 0).sum().alias("throttled_s"),
        (pl.col("_mfu") * sec).sum().alias("mfu_s"),
        sec.filter(pl.col("_mfu").is_not_null()).sum().alias("mfu_basis_s"),
        sec.filter(pl.col("_mfu").is_not_null() & busy).sum().alias("mfu_busy_basis_s"),
    )
    return out.select([pl.col(c).cast(t) for c, t in ROLLUP_SCHEMA.items()]).sort(KEYS[:5])
