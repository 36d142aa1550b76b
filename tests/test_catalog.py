"""The GPU catalog against real NVML / dcgm-exporter name strings, traps included.

Name strings: those seen in public code and driver output (collected in
../shared/reference/mfu-and-peaks.md §5.3) and the `modelName` labels of the recorded
dcgm-exporter pages in ../shared/reference/dcgm/ (read in place).
"""

from __future__ import annotations

import re

import pytest
from fleetlens.pipeline.catalog import load_catalog, lookup, normalize

from tests.conftest import REFERENCE

# Real strings -> the SKU they must resolve to (None: not in the catalog, never guessed).
REAL_NAMES = {
    "Tesla V100-SXM2-16GB": "v100_sxm2_16gb",
    "Tesla V100-SXM2-32GB": "v100_sxm2_32gb",
    "Tesla V100-PCIE-32GB": None,  # no PCIe V100 row: unknown rather than the SXM2 peak
    "NVIDIA A100-PCIE-40GB": "a100_pcie_40gb",
    "NVIDIA A100-SXM4-40GB": "a100_sxm4_40gb",
    "NVIDIA A100-SXM4-80GB": "a100_sxm4_80gb",
    "NVIDIA A100-SXM-80GB": "a100_sxm4_80gb",  # DGX Station A100
    "NVIDIA A100 80GB PCIe": "a100_pcie_80gb",  # newer drivers
    "NVIDIA A100-PCIE-80GB": "a100_pcie_80gb",  # older drivers
    "NVIDIA H100 PCIe": "h100_pcie_80gb",
    "NVIDIA H100 80GB HBM3": "h100_sxm5_80gb",
    "NVIDIA H100 NVL": "h100_nvl",
    "NVIDIA H800": "h800_sxm5",
    "NVIDIA H200": "h200_sxm",
    "NVIDIA H200 NVL": "h200_nvl",
    "NVIDIA H20": "h20",
    "NVIDIA GH200 480GB": "gh200_96gb",
    "NVIDIA GH200 144G HBM3e": "gh200_144gb",  # HBM3 in the name must not mean H100
    "NVIDIA B100": "b100",
    "NVIDIA B200": "b200",
    "NVIDIA B300 SXM6 AC": "b300",
    "NVIDIA GB200": "gb200",
    "NVIDIA GB300": "gb300",
    "NVIDIA L4": "l4",
    "NVIDIA L40": "l40",
    "NVIDIA L40S": "l40s",
    "NVIDIA A10": "a10",
    "NVIDIA A10G": "a10g",
    "NVIDIA RTX 6000 Ada Generation": "rtx_6000_ada",
    "NVIDIA GeForce RTX 4090": "rtx_4090",
    "NVIDIA RTX A6000": None,
    "AMD Instinct MI250X": "mi250x",
    "AMD Instinct MI250X / MI250": "mi250x",
    "AMD Instinct MI300X": "mi300x",
    "AMD Instinct MI325X": "mi325x",
    "NVIDIA H100": None,  # emulator short name: an unknown H100 is flagged, not taken as SXM
    "Tesla T4": None,
    "NVIDIA T400 4GB": None,
}

TRAPS = {
    "NVIDIA-H100-80GB-HBM3": "h100_sxm5_80gb",  # dcgm-exporter --replace-blanks-in-model-name
    "nvidia h100 80gb hbm3": "h100_sxm5_80gb",  # case
    "NVIDIA  H100   80GB HBM3 ": "h100_sxm5_80gb",  # whitespace
    "NVIDIA_A100_SXM4_80GB": "a100_sxm4_80gb",
    "NVIDIA-L40S": "l40s",  # not L4, not L40
    "NVIDIA-H20": "h20",  # not H200
    "NVIDIA H2000": None,  # no substring matches either way
    "NVIDIA L4 Tensor Core": None,
}


@pytest.mark.parametrize("name, key", sorted({**REAL_NAMES, **TRAPS}.items()))
def test_name_resolves_to_its_sku(name, key):
    spec = lookup(name)
    assert (spec.model_key if spec else None) == key


def test_every_sku_is_reached_by_a_real_name():
    reached = {key for key in REAL_NAMES.values() if key}
    assert reached == set(load_catalog())


def test_recorded_dcgm_model_names_resolve_or_are_reported_unknown():
    folder = REFERENCE / "dcgm"
    if not folder.is_dir():
        pytest.skip(f"reference folder {folder} is absent")
    names = set()
    for page in folder.glob("*.txt"):
        names |= set(re.findall(r'modelName="([^"]*)"', page.read_text()))
    assert names, "no modelName label found in the recorded pages"
    resolved = {n: (lookup(n).model_key if lookup(n) else None) for n in names}
    assert resolved["NVIDIA H100 80GB HBM3"] == "h100_sxm5_80gb"
    assert resolved["NVIDIA L40S"] == "l40s" and resolved["NVIDIA L4"] == "l4"
    assert resolved["NVIDIA GB300"] == "gb300"
    assert resolved["NVIDIA H100"] is None and resolved["Tesla T4"] is None


def test_no_two_skus_share_a_normalised_name():
    seen: dict[str, str] = {}
    for spec in load_catalog().values():
        for name in spec.names:
            assert seen.setdefault(normalize(name), spec.model_key) == spec.model_key


def test_every_row_has_a_source_and_sane_peaks():
    for spec in load_catalog().values():
        assert spec.source, spec.model_key
        assert spec.bf16_dense_tflops or spec.fp16_dense_tflops, spec.model_key
        if spec.fp8_dense_tflops and spec.bf16_dense_tflops:
            assert spec.fp8_dense_tflops == pytest.approx(2 * spec.bf16_dense_tflops, rel=0.02)
        if spec.tf32_dense_tflops and spec.bf16_dense_tflops:
            assert spec.tf32_dense_tflops == pytest.approx(spec.bf16_dense_tflops / 2, rel=0.02)


def test_h200_nvl_reporting_the_bare_name_is_told_apart_by_its_power_limit():
    assert lookup("NVIDIA H200").model_key == "h200_sxm"  # no limit known: the name's SKU
    assert lookup("NVIDIA H200", power_limit_w=700.0).model_key == "h200_sxm"
    assert lookup("NVIDIA H200", power_limit_w=600.0).model_key == "h200_nvl"
    assert lookup("NVIDIA H200 NVL", power_limit_w=600.0).model_key == "h200_nvl"
    assert lookup("NVIDIA H100 80GB HBM3", power_limit_w=400.0).model_key == "h100_sxm5_80gb"
