"""Per-GPU, per-minute rollups: the numbers every report is built from.

`rollup()` is a pure function of the samples of closed windows (plus the ledger, the catalog,
the config and the energy counters carried from earlier windows): running it again over the
same samples gives the same rows, which is what makes a replay after a crash harmless.

Definitions (defaults in config [definitions]; README "Definitions"):

* a sample stands for the GPU time [ts, ts + interval_s); a sample that crosses a minute
  boundary or an allocation boundary is cut there, and each part counts its own seconds;
* every second of a GPU is in exactly one bucket: unavailable (the sample carries an XID that
  takes the GPU down), idle, or busy. Idle: gpu_util <= 1 and (sm_active null or <= 0.01);
  a sample with neither counter measured counts as busy. Idle-held is part of idle (memory
  >= 1 GiB held); busy-low-efficiency is part of busy (sm_active < 0.15);
* MFU estimate: tensor_active x sm_clock_mhz / spec_clock_mhz, clamped to [0, 1]; null when
  tensor_active is null, the model is not in the catalog, or the GPU is unavailable; a null
  sm_clock (or a SKU without a spec clock) uses 1.0 as the ratio. Idle samples count as 0;
* energy: the delta of the cumulative energy counter since the GPU's previous sample; where
  the counter is absent, went backwards (driver reload, reset) or spans a gap longer than
  twice the interval, power_w x seconds instead.

Rollup rows keep three MFU sums so reports can divide correctly:
`mfu_s` = sum of mfu x seconds, `mfu_basis_s` = seconds where MFU is known (idle seconds of
catalogued GPUs included, as zero), `mfu_busy_basis_s` = busy seconds where MFU is known.
"""

from __future__ import annotations

import polars as pl
from fleetlens.pipeline.catalog import lookup
from fleetlens.pipeline.tenancy import attribute, split_at_allocations

from fleetlens.config import Definitions, TenancyConfig

KEYS = ["minute", "node", "gpu", "uuid", "mig_instance", "tenant", "tenant_source"]
GPU_KEY = ["uuid", "mig_instance"]

ROLLUP_SCHEMA: dict[str, pl.DataType] = {
    "minute": pl.Datetime("us"),
    "node": pl.String, "gpu": pl.Int64, "uuid": pl.String, "mig_instance": pl.Int64,
    "tenant": pl.String, "tenant_source": pl.String,
    "mig_profile": pl.String, "model": pl.String, "model_key": pl.String,
    "cluster": pl.String, "namespace": pl.String, "job_id": pl.String,
    "samples": pl.Int64, "observed_s": pl.Float64, "busy_s": pl.Float64,
    "low_eff_s": pl.Float64, "idle_s": pl.Float64, "idle_held_s": pl.Float64,
    "unavailable_s": pl.Float64,
    "gpu_util_mean": pl.Float64, "sm_active_mean": pl.Float64,
    "tensor_active_mean": pl.Float64, "power_w_mean": pl.Float64,
    "energy_j": pl.Float64, "temp_max_c": pl.Float64, "fb_used_max_mib": pl.Float64,
    "xid_count": pl.Int64, "xid_last": pl.Int64, "throttled_s": pl.Float64,
    "mfu_s": pl.Float64, "mfu_basis_s": pl.Float64, "mfu_busy_basis_s": pl.Float64,
    # Silence between two samples of the same (non-ledger) tenant: allocated, unavailable,
    # not observed (pipeline/gaps.py). 0 on ordinary rows.
    "gap_s": pl.Float64,
}

# The last energy counter reading of each GPU, carried from one flush to the next.
ENERGY_STATE_SCHEMA = {"uuid": pl.String, "mig_instance": pl.Int64, "_prev_ts": pl.Float64,
                       "_prev_energy": pl.Float64}


def empty_energy_state() -> pl.DataFrame:
    return pl.DataFrame(schema=ENERGY_STATE_SCHEMA)


def model_specs(pairs: list[tuple[str, float | None]]) -> pl.DataFrame:
    """Catalog facts per (model name, power limit) pair seen in a batch."""
    rows = []
    for m, limit in pairs:
        spec = lookup(m, limit)
        rows.append({"model": m, "power_limit_w": limit,
                     "model_key": spec.model_key if spec else None,
                     "spec_clock_mhz": spec.spec_clock_mhz if spec else None,
                     "_known": spec is not None and spec.bf16_dense_tflops is not None})
    return pl.DataFrame(rows, schema={"model": pl.String, "power_limit_w": pl.Float64,
                                      "model_key": pl.String, "spec_clock_mhz": pl.Float64,
                                      "_known": pl.Boolean})


def _time_weighted_mean(col: str) -> pl.Expr:
    weight = pl.when(pl.col(col).is_not_null()).then(pl.col("_secs")).otherwise(0.0)
    total = weight.sum()
    return pl.when(total > 0).then((pl.col(col) * weight).sum() / total).alias(f"{col}_mean")


def classify(samples: pl.DataFrame, defs: Definitions) -> pl.DataFrame:
    """Add per-sample `_down`, `_idle`, `_held`, `_busy`, `_low`, `_mfu` (and model_key)."""
    specs = model_specs(samples.select("model", "power_limit_w").unique().rows())
    # MIG: collectors report the SM clock once per physical GPU (on one instance); the other
    # instances of the same GPU and time share it.
    s = fill_shared_clock(samples.join(specs, on=["model", "power_limit_w"], how="left",
                                       nulls_equal=True))
    down = pl.col("xid").is_in(defs.unavailable_xids).fill_null(False)
    util_idle = pl.col("gpu_util").is_null() | (pl.col("gpu_util") <= defs.idle_gpu_util_max)
    sm_idle = pl.col("sm_active").is_null() | (pl.col("sm_active") <= defs.idle_sm_active_max)
    measured = pl.col("gpu_util").is_not_null() | pl.col("sm_active").is_not_null()
    idle = util_idle & sm_idle & measured & ~down
    busy = ~idle & ~down
    clock_ratio = pl.when(pl.col("sm_clock_mhz").is_not_null()
                          & pl.col("spec_clock_mhz").is_not_null()) \
        .then(pl.col("sm_clock_mhz") / pl.col("spec_clock_mhz")).otherwise(1.0)
    mfu = pl.when(pl.col("_known") & pl.col("tensor_active").is_not_null() & ~down) \
        .then((pl.col("tensor_active") * clock_ratio).clip(0.0, 1.0))
    return s.with_columns(
        down.alias("_down"), idle.alias("_idle"), busy.alias("_busy"),
        (idle & (pl.col("fb_used_mib") >= defs.idle_held_fb_mib).fill_null(False))
        .alias("_held"),
        (busy & (pl.col("sm_active") < defs.low_efficiency_sm_active).fill_null(False))
        .alias("_low"),
        # Idle time counts as zero MFU on a catalogued GPU, whatever tensor_active says.
        pl.when(idle & pl.col("_known")).then(0.0).otherwise(mfu).alias("_mfu"),
    )


def gpu_sorted(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` sorted by (uuid, mig_instance, ts), stably: rows with equal keys keep their
    order, so the first of duplicates stays first (what unique(keep="first") keeps).

    The sort key for `uuid` is its rank among the batch's few distinct UUIDs (same order,
    nulls first as in a plain sort): sorting rows by a string key measured ~10x dearer than
    sorting the distinct strings once and the rows by numbers.
    """
    if in_gpu_order(frame):  # prepared samples (gap_rows) already are: a sort would copy
        return frame
    uuids = frame["uuid"].unique().drop_nulls().sort()
    rank = pl.col("uuid").replace_strict(
        uuids, pl.int_range(1, uuids.len() + 1, eager=True, dtype=pl.UInt32),
        default=0, return_dtype=pl.UInt32)
    return (frame.with_columns(rank.alias("_gk"))
            .sort("_gk", "mig_instance", "ts", maintain_order=True).drop("_gk"))


def in_gpu_order(frame: pl.DataFrame) -> bool:
    """True when no row comes before its predecessor in (uuid, mig_instance, ts) order with
    nulls first, i.e. a stable sort would change nothing (one vectorized pass)."""
    if frame["uuid"].null_count():
        return False
    u, m, t = pl.col("uuid"), pl.col("mig_instance"), pl.col("ts")
    pu, pm, pt = u.shift(1), m.shift(1), t.shift(1)
    earlier = (u < pu) | ((u == pu) & ((m.is_null() & pm.is_not_null()) | (m < pm)
                                       | (m.eq_missing(pm) & (t < pt))))
    return not frame.select(earlier.fill_null(False).any()).item()


def first_of_gpu() -> pl.Expr:
    """On rows sorted by GPU: True where a new (uuid, mig_instance) begins (plain shifts
    instead of window functions over a hash grouping)."""
    return (pl.col("uuid").ne_missing(pl.col("uuid").shift(1))
            | pl.col("mig_instance").ne_missing(pl.col("mig_instance").shift(1)))


def last_of_gpu() -> pl.Expr:
    """On rows sorted by GPU: True on the last row of each (uuid, mig_instance)."""
    return (pl.col("uuid").ne_missing(pl.col("uuid").shift(-1))
            | pl.col("mig_instance").ne_missing(pl.col("mig_instance").shift(-1)))


def fill_shared_clock(s: pl.DataFrame) -> pl.DataFrame:
    """A missing SM clock takes the clock reported for the same GPU at the same time (MIG:
    one instance carries it). The window over (uuid, ts) is skipped when no clock is missing,
    where it could not change anything."""
    if not s["sm_clock_mhz"].null_count():
        return s
    return s.with_columns(
        pl.coalesce("sm_clock_mhz", pl.col("sm_clock_mhz").max().over("uuid", "ts")))


def join_state(s: pl.DataFrame, state: pl.DataFrame) -> pl.DataFrame:
    """`s` with the state columns of its GPU (one state row per GPU), as a left join keeping
    the row order. Only the key columns go through the join: joining the whole frame copied
    every column of up to a million rows at each flush, for two new columns."""
    extra = [c for c in state.columns if c not in GPU_KEY]
    matched = s.select(GPU_KEY).join(state, on=GPU_KEY, how="left", nulls_equal=True,
                                     maintain_order="left")
    if matched.height != s.height:  # a GPU with two state rows: the plain join's answer
        return s.join(state, on=GPU_KEY, how="left", nulls_equal=True, maintain_order="left")
    return s.with_columns(matched.select(extra).get_columns())


def sample_energy(s: pl.DataFrame, state: pl.DataFrame, is_sorted: bool = False
                  ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add `_energy` (joules for the whole sample) and return the updated counter state.

    The result is sorted by (uuid, mig_instance, ts); `is_sorted` says `s` already is (and
    has no two rows with the same key).
    """
    if not is_sorted:
        s = gpu_sorted(s)
    s = join_state(s, state)
    counter = pl.col("energy_j")
    first = first_of_gpu()
    s = s.with_columns(
        pl.when(first).then(pl.col("_prev_energy")).otherwise(counter.shift(1)).alias("_pe"),
        pl.when(first).then(pl.col("_prev_ts")).otherwise(pl.col("ts").shift(1)).alias("_pt"))
    delta = counter - pl.col("_pe")
    usable = (counter.is_not_null() & pl.col("_pe").is_not_null() & (delta >= 0)
              & (pl.col("ts") - pl.col("_pt") <= 2 * pl.col("interval_s")))
    s = s.with_columns(
        pl.when(usable).then(delta).otherwise(pl.col("power_w") * pl.col("interval_s"))
        .alias("_energy")).drop("_prev_energy", "_prev_ts", "_pe", "_pt")
    last = (s.filter(counter.is_not_null())
            .group_by(GPU_KEY).agg(pl.col("ts").last().alias("_prev_ts"),
                                   pl.col("energy_j").last().alias("_prev_energy")))
    new_state = pl.concat([state.join(last.select(GPU_KEY), on=GPU_KEY, how="anti",
                                      nulls_equal=True), last.select(state.columns)])
    return s, new_state


def split_into_pieces(s: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """One row per part of a sample inside one minute and one allocation; `ts` becomes the
    part's start, `_end` its end, `_frac` its share of the sample.

    When no sample crosses a minute boundary (1 s samples at whole seconds: the usual case)
    every sample is its own single part, and the list building and exploding of the general
    path (split_at_minutes) is skipped; the rows are the same.
    """
    end = pl.col("ts") + pl.col("interval_s")
    crossing = ((-(-end // 60) * 60) > (pl.col("ts") // 60 * 60) + 60).any()
    pieces = split_at_minutes(s) if s.select(crossing).item() else s.with_columns(
        end.alias("_end"))
    pieces = split_at_allocations(pieces, ledger)
    return pieces.with_columns(
        (pl.col("_end") - pl.col("ts")).alias("_secs"),
        ((pl.col("_end") - pl.col("ts")) / pl.col("interval_s")).alias("_frac"))


def split_at_minutes(s: pl.DataFrame) -> pl.DataFrame:
    """One row per part of a sample inside one minute: `ts` the part's start, `_end` its
    end (a sample inside one minute is one part)."""
    start = pl.col("ts")
    end = pl.col("ts") + pl.col("interval_s")
    minute0 = (start // 60 * 60).cast(pl.Int64)
    bounds = pl.int_ranges(minute0 + 60, (-(-end // 60) * 60).cast(pl.Int64), 60) \
        .cast(pl.List(pl.Float64))
    s = s.with_columns(bounds.alias("_b"), end.alias("_end"))
    s = s.with_columns(pl.concat_list([start, pl.col("_b")]).alias("_starts"),
                       pl.concat_list([pl.col("_b"), pl.col("_end")]).alias("_ends"))
    return s.drop("ts", "_end", "_b").explode(["_starts", "_ends"]) \
        .rename({"_starts": "ts", "_ends": "_end"})


def rollup(samples: pl.DataFrame, ledger: pl.DataFrame, defs: Definitions,
           tenancy: TenancyConfig | None = None,
           energy_state: pl.DataFrame | None = None) -> pl.DataFrame:
    """Closed-window samples -> one row per (minute, GPU or MIG instance, tenant)."""
    return rollup_with_state(samples, ledger, defs, tenancy, energy_state)[0]


def rollup_with_state(samples: pl.DataFrame, ledger: pl.DataFrame, defs: Definitions,
                      tenancy: TenancyConfig | None = None,
                      energy_state: pl.DataFrame | None = None,
                      ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Like rollup(), also returning the energy counter state to carry to the next flush."""
    state = empty_energy_state() if energy_state is None else energy_state
    if samples.height == 0:
        return pl.DataFrame(schema=ROLLUP_SCHEMA), state
    s, state = prepare(samples, state)
    return aggregate(s, ledger, defs, tenancy), state


def prepare(samples: pl.DataFrame, energy_state: pl.DataFrame
            ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Deduplicate and give each sample its energy (`_energy`): the form kept in the raw
    archive, from which any window can be recomputed exactly.

    One stable sort by GPU and time does both jobs: duplicates of (uuid, mig_instance, ts)
    end up next to each other in arrival order, so dropping every row equal to the one before
    keeps the first, as unique(keep="first") would, and the rows come out in the order
    sample_energy needs.
    """
    s = gpu_sorted(samples)
    repeat = (~first_of_gpu() & (pl.col("ts") == pl.col("ts").shift(1))).fill_null(False)
    if s.select(repeat.any()).item():  # filtering copies every column: only when needed
        s = s.filter(~repeat)
    return sample_energy(s, energy_state, is_sorted=True)


def aggregate(s: pl.DataFrame, ledger: pl.DataFrame, defs: Definitions,
              tenancy: TenancyConfig | None = None) -> pl.DataFrame:
    """Prepared samples (see prepare) -> rollup rows."""
    if s.height == 0:
        return pl.DataFrame(schema=ROLLUP_SCHEMA)
    s = classify(split_into_pieces(s.with_columns(pl.col("ts").alias("_ts0")), ledger), defs)
    s = attribute(s, ledger, tenancy)
    sec = pl.col("_secs")
    s = s.with_columns(
        ((pl.col("ts") // 60) * 60 * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us"))
        .alias("minute"),
        pl.col("tenant_resolved").alias("tenant_out"),
    ).drop("tenant").rename({"tenant_out": "tenant"})
    out = s.group_by(KEYS).agg(
        pl.col("mig_profile").first(), pl.col("model").first(), pl.col("model_key").first(),
        pl.col("cluster").drop_nulls().last(), pl.col("namespace").drop_nulls().last(),
        pl.col("job_id").drop_nulls().last(),
        # Counted once, on the part where the sample starts (a cut sample has several parts).
        (pl.col("ts") == pl.col("_ts0")).sum().cast(pl.Int64).alias("samples"),
        sec.sum().alias("observed_s"),
        sec.filter(pl.col("_busy")).sum().alias("busy_s"),
        sec.filter(pl.col("_low")).sum().alias("low_eff_s"),
        sec.filter(pl.col("_idle")).sum().alias("idle_s"),
        sec.filter(pl.col("_held")).sum().alias("idle_held_s"),
        sec.filter(pl.col("_down")).sum().alias("unavailable_s"),
        _time_weighted_mean("gpu_util"), _time_weighted_mean("sm_active"),
        _time_weighted_mean("tensor_active"), _time_weighted_mean("power_w"),
        (pl.col("_energy") * pl.col("_frac")).sum().alias("energy_j"),
        pl.col("temp_c").max().alias("temp_max_c"),
        pl.col("fb_used_mib").max().alias("fb_used_max_mib"),
        (pl.col("xid").is_not_null() & (pl.col("ts") == pl.col("_ts0"))).sum()
        .cast(pl.Int64).alias("xid_count"),
        pl.col("xid").drop_nulls().last().alias("xid_last"),
        sec.filter(pl.col("throttle").fill_null(0) > 0).sum().alias("throttled_s"),
        (pl.col("_mfu") * sec).sum().alias("mfu_s"),
        sec.filter(pl.col("_mfu").is_not_null()).sum().alias("mfu_basis_s"),
        sec.filter(pl.col("_mfu").is_not_null() & pl.col("_busy")).sum()
        .alias("mfu_busy_basis_s"),
        pl.lit(0.0).alias("gap_s"),
    )
    return out.select([pl.col(c).cast(t) for c, t in ROLLUP_SCHEMA.items()]).sort(KEYS[:5])


# Columns that add up across rows: the only ones a correction row carries.
SUM_COLUMNS = ["samples", "observed_s", "busy_s", "low_eff_s", "idle_s", "idle_held_s",
               "unavailable_s", "energy_j", "xid_count", "throttled_s", "mfu_s", "mfu_basis_s",
               "mfu_busy_basis_s", "gap_s"]
_DESCRIPTIVE = ["mig_profile", "model", "model_key", "cluster", "namespace", "job_id"]


def correction(new: pl.DataFrame, old: pl.DataFrame) -> pl.DataFrame:
    """Rows that turn the sums of `old` into those of `new` when added to them.

    Used when the same samples are attributed again (a corrected ledger): stored rows stay,
    and these rows carry the differences. Means and maxima are left null on them; every
    report aggregates rollups with sum(), so the corrected totals are exact.
    """
    cols = [*KEYS, *_DESCRIPTIVE, *SUM_COLUMNS]
    both = new.select(cols).join(old.select(cols), on=KEYS, how="full", coalesce=True,
                                 nulls_equal=True, suffix="_old")
    out = both.with_columns(
        *[pl.coalesce(c, f"{c}_old") for c in _DESCRIPTIVE],
        *[(pl.col(c).fill_null(0) - pl.col(f"{c}_old").fill_null(0)).alias(c)
          for c in SUM_COLUMNS])
    changed = pl.any_horizontal([pl.col(c).abs() > 1e-9 for c in SUM_COLUMNS])
    out = out.filter(changed)
    return pl.DataFrame(schema=ROLLUP_SCHEMA).vstack(
        out.select([pl.col(c).cast(t) if c in out.columns else pl.lit(None, dtype=t).alias(c)
                    for c, t in ROLLUP_SCHEMA.items()]))
