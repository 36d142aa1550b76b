"""The NVML source against a fake pynvml (tests/fake_pynvml.py), and cgroup attribution
against synthetic /proc fixtures (tests/fixtures/cgroup/).

Expected numbers are worked out by hand from the fake's raw readings (mW, mJ, bytes, percent)
in the comments next to them, not by the code under test.
"""

from __future__ import annotations

import ctypes
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fleetlens.collectors.cgroup import Attribution, attribute_pid, parse_cgroup
from fleetlens.collectors.nvml import NvmlSource

from fleetlens.schema import FIELD_NAMES, validate_sample
from tests.conftest import FIXTURES, run_cli
from tests.fake_pynvml import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_FUNCTION_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNKNOWN,
    FakeGpu,
    FakeMig,
    FakeNvml,
    FakeProcess,
)

PROC = FIXTURES / "cgroup" / "proc"
ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3
MIB = 1024**2
T0 = 1_795_000_000.0  # a tick time (epoch seconds)
GPM_FIELDS = ("sm_active", "sm_occupancy", "tensor_active", "dram_active", "fp64_active",
              "fp32_active", "fp16_active")
DEVICE_FIELDS = ("power_w", "energy_j", "temp_c", "sm_clock_mhz", "throttle")
# GPM percent per metric id: SM_UTIL 2, SM_OCCUPANCY 3, ANY_TENSOR 5, DRAM_BW 10, FP64 11,
# FP32 12, FP16 13.
H100_GPM = {2: 80.0, 3: 25.0, 5: 42.0, 10: 55.0, 11: 0.5, 12: 10.0, 13: 1.5}


def h100(n: int, **kw) -> FakeGpu:
    kw.setdefault("gpm", dict(H100_GPM))
    return FakeGpu(uuid=f"GPU-00000000-0000-0000-0000-00000000000{n}", **kw)


def a100(n: int, **kw) -> FakeGpu:  # Ampere: no GPM
    return FakeGpu(uuid=f"GPU-aaaaaaaa-0000-0000-0000-00000000000{n}",
                   name="NVIDIA A100-SXM4-80GB", gpm=None, **kw)


class Harness:
    def __init__(self, gpus: list[FakeGpu], **kw):
        self.fake = FakeNvml(gpus)
        self.sleeps: list[float] = []
        self.src = NvmlSource(node="node-1", cluster="c1", lib=self.fake, proc_root=PROC,
                              sleep=self._sleep, **kw)

    def _sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.fake.advance(s)

    def tick(self, t: float = T0, interval_s: float = 10.0) -> list[dict]:
        out = self.src.collect(t, interval_s)
        assert [node for node, _ in out] == ["node-1"]
        samples = out[0][1]
        for s in samples:
            assert tuple(s) == FIELD_NAMES
            validate_sample(s)  # raises on any schema-v1 violation
        return samples


# -- units -------------------------------------------------------------------------------------
def test_units_are_converted_from_nvml_units():
    h = Harness([a100(0, fb_total=81920 * MIB, fb_used=40 * GIB, power_mw=350_123,
                      energy_mj=123_456_789, temp_c=61, sm_clock_mhz=1410, util_pct=97,
                      throttle=0x4 | 0x20)])
    [s] = h.tick(T0, 10.0)
    assert s["v"] == 1 and s["ts"] == T0 and s["interval_s"] == 10.0
    assert (s["node"], s["cluster"], s["gpu"]) == ("node-1", "c1", 0)
    assert s["uuid"] == "GPU-aaaaaaaa-0000-0000-0000-000000000000"
    assert s["model"] == "NVIDIA A100-SXM4-80GB"
    assert s["power_w"] == 350.123  # 350 123 mW
    assert s["energy_j"] == 123_456.789  # 123 456 789 mJ
    assert s["fb_total_mib"] == 81920.0  # 85 899 345 920 bytes / 1 048 576
    assert s["fb_used_mib"] == 40960.0  # 40 GiB
    assert s["temp_c"] == 61.0 and s["sm_clock_mhz"] == 1410.0
    assert s["gpu_util"] == 97.0  # stays a percent
    assert s["throttle"] == 0x24  # SwPowerCap | SwThermalSlowdown, as the bitmask
    # Ampere has no GPM: profiling fields are null, never 0, and no warm-up pause happens.
    assert all(s[f] is None for f in GPM_FIELDS)
    assert h.sleeps == []
    assert s["mig_profile"] is None and s["mig_instance"] is None and s["xid"] is None
    h.fake.advance(10)  # energy counter keeps counting: + 350 123 mW x 10 s = 3 501 230 mJ
    [s2] = h.tick(T0 + 10)
    assert s2["energy_j"] == (123_456_789 + 3_501_230) / 1000


def test_node_name_defaults_to_the_host_name():
    src = NvmlSource(lib=FakeNvml([a100(0)]))
    assert src.node == socket.gethostname()
    assert src.collect(T0, 1.0)[0][0] == socket.gethostname()


# -- GPM ---------------------------------------------------------------------------------------
def test_gpm_percent_becomes_ratio_and_first_tick_uses_a_warmup_pair():
    h = Harness([h100(0)])
    [s] = h.tick(T0)
    # First tick: one pause of >= 100 ms between the two GPM samples, figures from that pair.
    assert len(h.sleeps) == 1 and h.sleeps[0] > 0.1
    assert h.fake.gpm_intervals == [pytest.approx(h.sleeps[0])]
    expected = {"sm_active": 0.80, "sm_occupancy": 0.25, "tensor_active": 0.42,
                "dram_active": 0.55, "fp64_active": 0.005, "fp32_active": 0.10,
                "fp16_active": 0.015}
    assert {f: s[f] for f in GPM_FIELDS} == pytest.approx(expected, rel=1e-9)


def test_gpm_interval_runs_from_the_previous_tick_sample():
    gpu = h100(0)
    h = Harness([gpu])
    h.tick(T0)
    # Next interval: 30 s at 30 % tensor activity, then 30 s at 90 %. Only a GPM pair that
    # spans the whole interval (previous tick's sample -> this tick's) gives the mean, 0.6;
    # a fresh pair taken at tick time would read 0.9.
    gpu.gpm[5] = 30.0
    h.fake.advance(30)
    gpu.gpm[5] = 90.0
    h.fake.advance(30)
    [s] = h.tick(T0 + 60)
    assert s["tensor_active"] == pytest.approx(0.6, rel=1e-9)
    assert len(h.sleeps) == 1  # no second warm-up
    assert h.fake.gpm_intervals[-1] == pytest.approx(60.0)


def test_gpm_per_metric_errors_are_null_and_overshoot_is_clamped():
    gpu = h100(0, gpm={**H100_GPM, 2: 100.4}, gpm_metric_errors={13})
    h = Harness([gpu])
    [s] = h.tick(T0)
    assert s["fp16_active"] is None  # nvmlReturn != 0 for this metric only
    assert s["sm_active"] == 1.0  # 100.4 % (rounding overshoot) -> clamped to the ratio 1.0
    assert s["tensor_active"] == pytest.approx(0.42)
    assert h.src.counters()["gpm_metric_errors_fp16_active"] == 1


# -- error classes -----------------------------------------------------------------------------
def test_not_supported_and_no_permission_are_null_and_not_asked_again():
    gpu = a100(0, mig_capable=False, errors={
        "nvmlDeviceGetPowerUsage": NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetTotalEnergyConsumption": NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetTemperature": NVML_ERROR_NO_PERMISSION,
        "nvmlDeviceGetCurrentClocksEventReasons": NVML_ERROR_FUNCTION_NOT_FOUND})
    h = Harness([gpu])
    for k in range(3):
        [s] = h.tick(T0 + 10 * k)
        assert s["power_w"] is None and s["energy_j"] is None and s["temp_c"] is None
        assert s["throttle"] is None
        assert s["sm_clock_mhz"] == 1755.0 and s["gpu_util"] == 97.0  # the rest is measured
    assert h.fake.calls.count("nvmlDeviceGetPowerUsage") == 1
    assert h.fake.calls.count("nvmlDeviceGetTemperature") == 1
    c = h.src.counters()
    # power, energy; MIG mode (not MIG-capable); retired pages, SBE and DBE (Ampere+ remaps
    # rows instead): each once, then never asked again.
    assert c["nvml_errors_not_supported"] == 2 + 1 + 2
    assert h.fake.calls.count("nvmlDeviceGetRetiredPages") == 2
    assert c["nvml_errors_no_permission"] == 1
    assert c["nvml_errors_function_not_found"] == 1


def test_other_errors_are_null_for_the_tick_and_retried():
    gpu = a100(0, errors={"nvmlDeviceGetUtilizationRates": NVML_ERROR_UNKNOWN})
    h = Harness([gpu])
    [s] = h.tick(T0)
    assert s["gpu_util"] is None and s["power_w"] == 350.123
    del gpu.errors["nvmlDeviceGetUtilizationRates"]
    [s] = h.tick(T0 + 10)
    assert s["gpu_util"] == 97.0
    assert h.src.counters()["nvml_errors_unknown"] == 1


def test_gpu_lost_mid_run_others_continue_and_it_is_counted():
    gpus = [h100(0), h100(1), h100(2)]
    h = Harness(gpus, lost_retry_s=60)
    assert [s["gpu"] for s in h.tick(T0)] == [0, 1, 2]
    gpus[1].lost = True  # fell off the bus (XID 79)
    gpus[2].reset_required = True
    h.fake.advance(10)
    samples = h.tick(T0 + 10)
    assert [s["gpu"] for s in samples] == [0]  # the lost GPUs are skipped, GPU 0 is sampled
    assert samples[0]["tensor_active"] == pytest.approx(0.42)
    c = h.src.counters()
    assert c["gpus_lost"] == 2 and c["gpus_unavailable"] == 2
    assert c["nvml_errors_gpu_is_lost"] == 1 and c["nvml_errors_reset_required"] == 1
    # Not asked again before lost_retry_s: no new errors, still counted once.
    h.fake.advance(10)
    assert [s["gpu"] for s in h.tick(T0 + 20)] == [0]
    assert h.src.counters()["nvml_errors_gpu_is_lost"] == 1
    assert h.src.counters()["gpus_lost"] == 2
    # GPU 1 comes back (reset): re-opened by UUID after lost_retry_s, GPM warms up again.
    gpus[1].lost = False
    h.fake.advance(60)
    samples = h.tick(T0 + 80)
    assert [s["gpu"] for s in samples] == [0, 1]
    assert samples[1]["tensor_active"] == pytest.approx(0.42)
    assert h.src.counters()["gpus_recovered"] == 1
    assert h.src.counters()["gpus_unavailable"] == 1
    h.src.close()
    assert all(s.freed for s in h.fake.gpm_allocated)  # lost GPUs' buffers were freed too


def test_gpu_lost_at_start_is_reported_unavailable():
    gpus = [a100(0), a100(1, lost=True)]
    h = Harness(gpus)
    assert [s["gpu"] for s in h.tick(T0)] == [0]
    assert h.src.counters()["gpus_unavailable"] == 1


# -- MIG ---------------------------------------------------------------------------------------
def mig_gpu() -> FakeGpu:
    return h100(0, processes=[
        FakeProcess(pid=1001, usedGpuMemory=8 * GIB, gpuInstanceId=1, computeInstanceId=0),
        FakeProcess(pid=2001, usedGpuMemory=4 * GIB, gpuInstanceId=5, computeInstanceId=0)],
        mig=[
            # GI 5 listed first on purpose: the carrier is the lowest id, not the first slot.
            FakeMig(gi=5, profile="1g.10gb", profile_enum=0, profile_id=19,
                    fb_total=9856 * MIB, fb_used=2 * GIB, gpm={5: 10.0, 2: 20.0}),
            FakeMig(gi=1, profile="3g.40gb", profile_enum=2, profile_id=9,
                    fb_total=40192 * MIB, fb_used=30 * GIB, compute_instances=2,
                    gpm={5: 60.0, 2: 90.0}),
        ])


def test_mig_one_sample_per_gpu_instance_device_fields_once():
    h = Harness([mig_gpu()])
    samples = h.tick(T0)
    # Two GPU instances (GI 1 has two compute instances: still one sample).
    assert [s["mig_instance"] for s in samples] == [1, 5]
    assert [s["mig_profile"] for s in samples] == ["3g.40gb", "1g.10gb"]
    assert {s["uuid"] for s in samples} == {"GPU-00000000-0000-0000-0000-000000000000"}
    assert {s["gpu"] for s in samples} == {0}
    assert {s["model"] for s in samples} == {"NVIDIA H100 80GB HBM3"}
    carrier, other = samples
    assert carrier["power_w"] == 350.123 and carrier["energy_j"] == pytest.approx(
        (123_456_789 + 350_123 * 0.2) / 1000, abs=1e-3)  # + the 0.2 s GPM warm-up
    assert carrier["temp_c"] == 61.0 and carrier["sm_clock_mhz"] == 1755.0
    assert carrier["throttle"] == 0x4
    assert all(other[f] is None for f in DEVICE_FIELDS)
    # Summing over instances counts the physical GPU's power once.
    assert sum(s["power_w"] or 0 for s in samples) == 350.123
    # Per instance: framebuffer, GPM (nvmlGpmMigSampleGet), attribution; no gpu_util on MIG.
    assert (carrier["fb_total_mib"], carrier["fb_used_mib"]) == (40192.0, 30720.0)
    assert (other["fb_total_mib"], other["fb_used_mib"]) == (9856.0, 2048.0)
    assert carrier["tensor_active"] == pytest.approx(0.60)
    assert other["tensor_active"] == pytest.approx(0.10)
    assert carrier["sm_active"] == pytest.approx(0.90)
    assert carrier["gpu_util"] is None and other["gpu_util"] is None
    assert carrier["pod"] == "7c6a1b2e-3f4d-4e5a-9b8c-0d1e2f3a4b5c" and carrier["job_id"] is None
    assert other["pod"] is None and other["job_id"] == "4242"


def test_mig_xid_goes_to_the_named_instance_or_the_carrier():
    h = Harness([mig_gpu()])
    h.tick(T0)
    h.fake.xid(0, 31, gpu_instance=5)  # MMU fault inside GI 5
    h.fake.advance(10)
    carrier, other = h.tick(T0 + 10)
    assert (carrier["xid"], other["xid"]) == (None, 31)
    h.fake.xid(0, 48)  # device-wide (no instance): the carrier sample gets it
    h.fake.advance(10)
    carrier, other = h.tick(T0 + 20)
    assert (carrier["xid"], other["xid"]) == (48, None)


# -- XID ---------------------------------------------------------------------------------------
def test_xid_lands_in_the_next_sample_of_that_gpu_once():
    h = Harness([a100(0), a100(1)])
    assert [s["xid"] for s in h.tick(T0)] == [None, None]
    h.fake.xid(1, 13)
    h.fake.xid(1, 43)  # two in one interval: `xid` is the last one seen
    assert [s["xid"] for s in h.tick(T0 + 10)] == [None, 43]
    assert [s["xid"] for s in h.tick(T0 + 20)] == [None, None]  # once, not sticky
    assert h.fake.wait_timeouts and set(h.fake.wait_timeouts) == {0}  # never blocks
    c = h.src.counters()
    assert c["xid_events"] == 2 and c["gpu1_last_xid"] == 43


def test_xid_waits_for_a_lost_gpu_to_come_back():
    gpus = [a100(0), a100(1)]
    h = Harness(gpus, lost_retry_s=30)
    h.tick(T0)
    h.fake.xid(1, 79)
    gpus[1].lost = True
    assert [s["gpu"] for s in h.tick(T0 + 10)] == [0]
    assert h.src.counters()["gpu1_last_xid"] == 79
    gpus[1].lost = False
    assert [(s["gpu"], s["xid"]) for s in h.tick(T0 + 40)] == [(0, None), (1, 79)]


# -- library missing ---------------------------------------------------------------------------
def test_library_missing_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"^NVML library not found: .*--source dcgm/sim"):
        NvmlSource(lib=FakeNvml([], library_missing=True))
    with pytest.raises(RuntimeError, match="driver is not loaded"):
        NvmlSource(lib=FakeNvml([], init_error=NVML_ERROR_DRIVER_NOT_LOADED))


def test_binding_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    with pytest.raises(RuntimeError, match="NVML library not found: the nvidia-ml-py package"):
        NvmlSource()


def _driver_present() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_driver_present(), reason="this host has an NVIDIA driver")
def test_cli_without_driver_prints_one_line_and_fails():
    proc = run_cli("agent", "--source", "nvml", "--stdout", "--once", check=False, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fleetlens agent: NVML library not found: ")
    assert "Traceback" not in proc.stderr


# -- close -------------------------------------------------------------------------------------
def test_close_shuts_nvml_down_and_frees_everything():
    h = Harness([h100(0), mig_gpu()])
    h.tick(T0)
    h.src.close()
    h.src.close()  # idempotent
    assert h.fake.initialized == 0 and h.fake.shutdowns == 1
    assert h.fake.gpm_allocated and all(s.freed for s in h.fake.gpm_allocated)
    assert all(es.freed for es in h.fake.event_sets)


# -- attribution -------------------------------------------------------------------------------
@pytest.mark.parametrize("pid, pod, job", [
    (1001, "7c6a1b2e-3f4d-4e5a-9b8c-0d1e2f3a4b5c", None),  # v2, systemd driver
    (1002, "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", None),  # v1, cgroupfs driver
    (1003, "11111111-2222-3333-4444-555555555555", None),  # v2, cgroupfs, Guaranteed
    (1004, "9f8e7d6c-5b4a-4938-8271-605f4e3d2c1b", None),  # v1, systemd, Guaranteed
    (1005, "6d5c0d1b2f2e51f6cd6c2e0bd0b1f4ee", None),  # static pod
    (2001, None, "4242"),  # Slurm, cgroup v1
    (2002, None, "977"),  # Slurm, cgroup v2
    (3001, None, None),  # login session
    (3002, None, None),  # job_<n> outside Slurm
])
def test_cgroup_fixtures(pid, pod, job):
    assert attribute_pid(pid, PROC) == Attribution(pod, job)


def test_cgroup_unreadable_pid_is_none():
    assert attribute_pid(424242, PROC) is None  # exited, or another PID namespace


def test_cgroup_slurm_with_node_suffix():
    text = "4:memory:/slurm_gpu-node-007/uid_1000/job_55/step_extern\n"
    assert parse_cgroup(text) == Attribution(None, "55")


def test_whole_gpu_attribution_prefers_the_largest_process():
    gpu = a100(0, processes=[FakeProcess(pid=1001, usedGpuMemory=1 * GIB),
                             FakeProcess(pid=1002, usedGpuMemory=6 * GIB),
                             FakeProcess(pid=424242, usedGpuMemory=9 * GIB)])  # unreadable
    h = Harness([gpu])
    [s] = h.tick(T0)
    assert s["pod"] == "0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d" and s["namespace"] is None
    c = h.src.counters()
    assert c["attribution_ambiguous"] == 1 and c["attribution_pid_unreadable"] == 1


def test_slurm_job_attribution_on_a_whole_gpu():
    h = Harness([a100(0, processes=[FakeProcess(pid=2002, usedGpuMemory=None)])])
    [s] = h.tick(T0)
    assert (s["pod"], s["job_id"]) == (None, "977")


# -- module boundaries -------------------------------------------------------------------------
def test_import_does_not_load_polars_duckdb_or_pynvml():
    code = ("import sys, fleetlens.collectors.nvml, fleetlens.collectors.cgroup; "
            "print(sorted(m for m in ('polars', 'duckdb', 'pynvml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_only_the_nvml_collector_imports_pynvml():
    importing = re.compile(r"^\s*(?:import\s+pynvml|from\s+pynvml\s+import)", re.M)
    found = []
    for folder in ("fleetlens", "collectors", "pipeline", "sql", "benchmarks", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            if importing.search(path.read_text()):
                found.append(path.relative_to(ROOT).as_posix())
    assert found == ["collectors/nvml.py"]

