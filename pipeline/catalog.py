"""The GPU spec catalog: theoretical peaks per SKU, and matching of NVML/DCGM name strings.

The data lives in gpu_catalog.csv next to this module (one row per SKU, with its source).
Names are matched whole after normalisation (lower case, '-' and '_' as spaces, runs of
whitespace collapsed), never as substrings: "NVIDIA H20" must not match "NVIDIA H200", and
dcgm-exporter's --replace-blanks-in-model-name output ("NVIDIA-H100-80GB-HBM3") must match.
An unknown name yields None: callers report it and leave MFU null rather than guess a peak.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

_NUMERIC = ("bf16_dense_tflops", "fp16_dense_tflops", "tf32_dense_tflops", "fp8_dense_tflops",
            "fp4_dense_tflops", "int8_dense_tops", "fp64_tflops", "fp64_tensor_tflops",
            "fp32_tflops", "mem_gb", "mem_bw_tbs", "tdp_w", "sm_count", "spec_clock_mhz")


@dataclass(frozen=True)
class GpuSpec:
    model_key: str
    names: tuple[str, ...]
    vendor: str
    bf16_dense_tflops: float | None
    fp16_dense_tflops: float | None
    tf32_dense_tflops: float | None
    fp8_dense_tflops: float | None
    fp4_dense_tflops: float | None
    int8_dense_tops: float | None
    fp64_tflops: float | None
    fp64_tensor_tflops: float | None
    fp32_tflops: float | None
    mem_gb: float | None
    mem_bw_tbs: float | None
    tdp_w: float | None
    sm_count: float | None
    spec_clock_mhz: float | None
    source: str


def normalize(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[-_]", " ", name.lower())).strip()


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, GpuSpec]:
    """All SKUs by model_key."""
    text = resources.files("fleetlens.pipeline").joinpath("gpu_catalog.csv").read_text()
    specs = {}
    for row in csv.DictReader(text.splitlines()):
        values = {k: (float(row[k]) if row[k] else None) for k in _NUMERIC}
        specs[row["model_key"]] = GpuSpec(
            model_key=row["model_key"], names=tuple(row["name_patterns"].split("|")),
            vendor=row["vendor"], source=row["source"], **values)
    return specs


@lru_cache(maxsize=1)
def _name_index() -> dict[str, GpuSpec]:
    index: dict[str, GpuSpec] = {}
    for spec in load_catalog().values():
        for name in spec.names:
            key = normalize(name)
            if key in index:
                raise ValueError(f"GPU catalog: name {name!r} is listed for both "
                                 f"{index[key].model_key} and {spec.model_key}")
            index[key] = spec
    return index


# SKUs that some drivers report under another SKU's name, told apart by the enforced power
# limit: (SKU the name matches, the other SKU, its highest power limit in watts).
# "torch reports both as 'NVIDIA H200'": the H200 NVL (600 W) vs the SXM (700 W).
POWER_VARIANTS = (("h200_sxm", "h200_nvl", 600.0),)


def lookup(model_name: str | None, power_limit_w: float | None = None) -> GpuSpec | None:
    """The SKU for an NVML/DCGM model name, or None when the catalog does not know it.

    power_limit_w (the GPU's enforced power limit) picks between SKUs that can report the
    same name; without it the name's own SKU is taken."""
    if not model_name:
        return None
    spec = _name_index().get(normalize(model_name))
    if spec is not None and power_limit_w is not None:
        for named, other, max_w in POWER_VARIANTS:
            if spec.model_key == named and power_limit_w <= max_w:
                return load_catalog()[other]
    return spec
