"""The DCGM field table: which dcgm-exporter metrics fleetlens reads, and in which units.

Why a table keyed by DCGM field ID rather than by metric name: metric names come from the
exporter's counters CSV, so one field appears under several names (current names, the 1.x
lower-case names of ``--use-old-namespace`` deployments, the DCGM 4.6 unit-suffixed names),
and the unit is a property of the field, not of the name. A field that DCGM 4.6 re-issues
with a new unit gets a new ID and therefore its own row here (``SM_CLOCK_HERTZ``,
``GPU_ENERGY_JOULES_TOTAL``).

Each row says how a raw value becomes a schema-v1 value (``raw / divisor``), which DCGM
"blank" sentinel applies (int64 or fp64), and whether the value is *device-level*: repeated
unchanged on every MIG GPU-instance row, so that it must be reported once per physical GPU.

Nothing here imports Polars or DuckDB: the agent runs on GPU nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

# DCGM "blank" sentinels (dcgm_structs.h). Values at or above these mean "no value"
# (BLANK, NOT_FOUND, NOT_SUPPORTED, NOT_PERMISSIONED) and old exporters leaked them as numbers.
INT64_BLANK = 0x7FFFFFFFFFFFFFF0  # 9223372036854775792
FP64_BLANK = 140737488355328.0  # 2**47


@dataclass(frozen=True, eq=False)
class DcgmField:
    """One DCGM field as fleetlens reads it.

    Compared and hashed by identity (``eq=False``): every field is one of the singletons in
    ``FIELDS``, and the dcgm source keys dicts by field hundreds of times per scrape, where the
    generated value hash (a tuple of every attribute) cost more than the lookups themselves.
    """

    field_id: int
    names: tuple[str, ...]  # every metric name this field is exported under
    target: str  # schema-v1 field, or an internal "_helper" that feeds one
    unit: str  # the raw unit, for the docs
    divisor: float = 1.0  # schema value = raw / divisor
    kind: str = "int"  # DCGM value type: "int" (int64 sentinel) or "double" (fp64 sentinel)
    device_level: bool = False  # same value on every MIG instance row of one physical GPU

    def is_blank(self, value: float) -> bool:
        """True for a leaked DCGM sentinel (or anything too large to be a real reading)."""
        if value >= INT64_BLANK:
            return True
        return self.kind == "double" and value >= FP64_BLANK


FIELDS: tuple[DcgmField, ...] = (
    # -- clocks, temperature, power, energy: device-level (repeated on MIG instance rows) --
    DcgmField(100, ("DCGM_FI_DEV_SM_CLOCK", "dcgm_sm_clock"), "sm_clock_mhz", "MHz",
              device_level=True),
    DcgmField(1603, ("DCGM_FI_DEV_SM_CLOCK_HERTZ",), "sm_clock_mhz", "Hz", divisor=1e6,
              device_level=True),
    DcgmField(112, ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"),
              "throttle", "bitmask", device_level=True),
    DcgmField(150, ("DCGM_FI_DEV_GPU_TEMP", "dcgm_gpu_temp"), "temp_c", "°C",
              device_level=True),
    DcgmField(155, ("DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_BOARD_POWER_WATTS",
                    "dcgm_power_usage"), "power_w", "W", kind="double", device_level=True),
    DcgmField(164, ("DCGM_FI_DEV_ENFORCED_POWER_LIMIT",), "power_limit_w", "W", kind="double",
              device_level=True),
    DcgmField(156, ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "dcgm_total_energy_consumption"),
              "energy_j", "mJ", divisor=1000.0, device_level=True),
    DcgmField(1611, ("DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL",), "energy_j", "J", kind="double",
              device_level=True),
    # -- utilization: DEV_GPU_UTIL is percent 0-100 (absent on MIG instances) --
    DcgmField(203, ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_UTIL_RATIO",
                    "dcgm_gpu_utilization"), "gpu_util", "%"),
    # -- XID: the last XID number, sticky; turned into events by the source --
    DcgmField(230, ("DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_XID_ERROR", "dcgm_xid_errors"),
              "xid", "XID code"),
    # -- framebuffer, MiB; per MIG instance on instance rows --
    DcgmField(250, ("DCGM_FI_DEV_FB_TOTAL",), "fb_total_mib", "MiB"),
    DcgmField(251, ("DCGM_FI_DEV_FB_FREE", "dcgm_fb_free"), "_fb_free", "MiB"),
    DcgmField(252, ("DCGM_FI_DEV_FB_USED", "dcgm_fb_used"), "fb_used_mib", "MiB"),
    DcgmField(253, ("DCGM_FI_DEV_FB_RESERVED",), "_fb_reserved", "MiB"),
    # -- profiling (DCP) activities: ratios 0-1, per MIG instance on instance rows --
    DcgmField(1001, ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO",
                     "dcgm_fi_prof_gr_engine_active"), "_gr_engine_active", "ratio",
              kind="double"),
    DcgmField(1002, ("DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_SM_UTIL_RATIO",
                     "dcgm_fi_prof_sm_active"), "sm_active", "ratio", kind="double"),
    DcgmField(1003, ("DCGM_FI_PROF_SM_OCCUPANCY", "DCGM_FI_PROF_SM_OCCUPANCY_RATIO",
                     "dcgm_fi_prof_sm_occupancy"), "sm_occupancy", "ratio", kind="double"),
    DcgmField(1004, ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_TENSOR_UTIL_RATIO",
                     "dcgm_fi_prof_pipe_tensor_active"), "tensor_active", "ratio",
              kind="double"),
    DcgmField(1005, ("DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_DRAM_UTIL_RATIO",
                     "dcgm_fi_prof_dram_active"), "dram_active", "ratio", kind="double"),
    DcgmField(1006, ("DCGM_FI_PROF_PIPE_FP64_ACTIVE", "DCGM_FI_PROF_FP64_UTIL_RATIO"),
              "fp64_active", "ratio", kind="double"),
    DcgmField(1007, ("DCGM_FI_PROF_PIPE_FP32_ACTIVE", "DCGM_FI_PROF_FP32_UTIL_RATIO"),
              "fp32_active", "ratio", kind="double"),
    DcgmField(1008, ("DCGM_FI_PROF_PIPE_FP16_ACTIVE", "DCGM_FI_PROF_FP16_UTIL_RATIO"),
              "fp16_active", "ratio", kind="double"),
)

# Metric names are matched case-insensitively: the 1.x names are the current ones lower-cased
# (dcgm_fi_prof_*), and a hand-written counters CSV may differ only in case.
BY_NAME: dict[str, DcgmField] = {name.upper(): f for f in FIELDS for name in f.names}


def lookup(metric_name: str) -> DcgmField | None:
    """The field a metric name stands for, or None for metrics fleetlens does not read.

    ``prometheus_client``'s parser, used before ``collectors/exposition.py``, renamed the
    samples of a ``# TYPE … counter`` family to ``<name>_total``
    (``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total``); such a suffix is still taken off, so that
    pages re-exported by something that adds it (or recorded through it) keep working.
    """
    found = BY_NAME.get(metric_name.upper())
    if found is None and metric_name.endswith("_total"):
        found = BY_NAME.get(metric_name[: -len("_total")].upper())
    return found
