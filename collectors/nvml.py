"""The NVML source: schema-v1 samples of this node's GPUs, read through nvidia-ml-py.

This is the only module of fleetlens that imports ``pynvml`` (PyPI ``nvidia-ml-py``); the
library is imported when an ``NvmlSource`` is made, never at module import, and tests pass a
fake module as ``lib``. docs/collectors-nvml.md describes the counter map and every rule below.

Per physical GPU and tick:

* ``gpu_util`` from ``nvmlDeviceGetUtilizationRates().gpu`` (percent), framebuffer from
  ``nvmlDeviceGetMemoryInfo`` (bytes -> MiB), power (mW -> W), total energy (mJ -> J),
  temperature (C), SM clock (MHz), clock-event reasons (bitmask).
* Hopper and newer: GPM profiling metrics (percent -> 0-1 ratio) computed between the GPM
  sample of the previous tick and the one taken now. A device (or MIG instance) seen for the
  first time gets a first GPM sample, then one pause of ``gpm_warmup_s`` (> 100 ms, NVML's
  minimum) for all such devices together, then the second sample: the first tick has real
  figures too. GPM unsupported -> those fields are null.
* MIG: one sample per GPU instance (``mig_instance`` = GPU-instance id, ``mig_profile``,
  ``uuid`` of the parent). Device-level fields (power, energy, temperature, SM clock,
  clock-event reasons) exist once per physical GPU: they are carried by the sample of the
  instance with the lowest id and are null on the others, so no sum over instances counts
  them twice. ``gpu_util`` is null on MIG (NVML does not support it there).
* XID: XID critical-error events are polled from an NVML event set with timeout 0 at the
  start of every tick; the code lands in ``xid`` of that GPU's next sample (of the MIG instance
  named by the event, else the GPU's first sample), once.
* Errors: NotSupported / FunctionNotFound / NoPermission -> null, and that (device, call) is
  not asked again; GpuIsLost / ResetRequired -> the GPU is marked unavailable, its sample is
  skipped (not emitted: a sample without counters would read as busy time), the others are
  sampled as usual, and the GPU is re-tried every ``lost_retry_s``; other errors -> null and
  asked again next tick. Every error is counted by class in ``counters()``.
* ECC, retired pages and remapped rows have no schema-v1 field; they are kept as per-GPU
  gauges in ``counters()``.
"""

from __future__ import annotations

import ctypes
import logging
import math
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetlens.collectors.cgroup import Attribution, attribute_pid

from fleetlens.errors import UsageError
from fleetlens.schema import FIELD_NAMES, SCHEMA_VERSION

log = logging.getLogger(__name__)

# nvmlReturn_t codes (NVML API reference; identical in pynvml).
NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 6
DRIVER_NOT_LOADED = 9
TIMEOUT = 10
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
RESET_REQUIRED = 16
LIB_RM_VERSION_MISMATCH = 18
_UNSUPPORTED = {NOT_SUPPORTED, FUNCTION_NOT_FOUND, NO_PERMISSION}
_LOST = {GPU_IS_LOST, RESET_REQUIRED}

_UINT_NA = 0xFFFFFFFF  # NVML_VALUE_NOT_AVAILABLE_uint
_ULL_NA = 2**64 - 1  # NVML_VALUE_NOT_AVAILABLE_ulonglong
MIB = 1024 * 1024
XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError
NO_INSTANCE = 0xFFFFFFFF  # gpuInstanceId of an event that is not about one MIG instance
MAX_EVENTS_PER_TICK = 1000

# GPM metric id -> schema field; every one is a percent 0-100 (pynvml NVML_GPM_METRIC_*).
GPM_METRICS: dict[int, str] = {
    2: "sm_active",  # SM_UTIL
    3: "sm_occupancy",  # SM_OCCUPANCY
    5: "tensor_active",  # ANY_TENSOR_UTIL
    10: "dram_active",  # DRAM_BW_UTIL
    11: "fp64_active",  # FP64_UTIL
    12: "fp32_active",  # FP32_UTIL
    13: "fp16_active",  # FP16_UTIL
}
DEVICE_LEVEL = ("power_w", "energy_j", "temp_c", "sm_clock_mhz", "throttle", "power_limit_w")


class NvmlUnavailable(RuntimeError, UsageError):
    """NVML cannot be used on this host. Also the CLI's UsageError, so `fleetlens agent`
    prints the one-line reason and exits with status 2 instead of a traceback."""


class _GpuLost(Exception):
    def __init__(self, code: int):
        self.code = code


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass
class _Gpm:
    """Two alternating GPM sample buffers of one device or MIG instance."""

    prev: Any  # holds the last sample taken once primed
    cur: Any  # receives the next sample
    primed: bool = False


@dataclass
class _Gpu:
    index: int
    handle: Any
    uuid: str
    name: str
    gpm_supported: bool = False
    xid_registered: bool = False
    lost: bool = False
    lost_at: float | None = None  # tick time it was found lost (None: at start)
    gpm: dict[int | None, _Gpm] = field(default_factory=dict)  # key: GPU-instance id or None
    mig_profiles: dict[int, str] | None = None  # GPU-instance profile id -> "1g.10gb"
    pending_xid: dict[int | None, int] = field(default_factory=dict)


@dataclass
class _Target:
    """One sample to produce this tick: a physical GPU, or one GPU instance of it."""

    gpu: _Gpu
    handle: Any  # device handle, or the MIG device handle of the instance
    instance: int | None = None
    profile: str | None = None
    carrier: bool = True  # carries the device-level fields


class NvmlSource:
    """Samples every GPU of this node through NVML (see the module docstring)."""

    def __init__(self, node: str | None = None, cluster: str | None = None, lib: Any = None, *,
                 proc_root: str | Path = "/proc", gpm_warmup_s: float = 0.2,
                 lost_retry_s: float = 60.0, sleep: Callable[[float], None] = time.sleep):
        if lib is None:
            try:
                import pynvml as lib
            except ImportError as exc:
                raise NvmlUnavailable(
                    f"NVML library not found: the nvidia-ml-py package is missing ({exc}); "
                    "install it, or use --source dcgm/sim") from None
        self.lib = lib
        self.node = node or socket.gethostname()
        self.cluster = cluster
        self.proc_root = proc_root
        self.gpm_warmup_s = max(gpm_warmup_s, 0.11)  # NVML: samples must be > 100 ms apart
        self.lost_retry_s = lost_retry_s
        self._sleep = sleep
        self._counters: dict[str, int] = {}
        self._gauges: dict[str, int] = {}
        self._skip: set[tuple[str, str]] = set()  # (uuid, call) not to ask again
        self._events = None
        self._closed = False
        self._init()
        try:
            self.gpus = self._enumerate()
            self._setup_events()
        except BaseException:
            self._shutdown()
            raise

    # -- setup -----------------------------------------------------------------------------
    def _init(self) -> None:
        try:
            self.lib.nvmlInit()
        except self.lib.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == LIBRARY_NOT_FOUND:
                raise NvmlUnavailable(
                    "NVML library not found: libnvidia-ml.so.1 cannot be loaded on this host; "
                    "install the NVIDIA driver or use --source dcgm/sim") from None
            if code == DRIVER_NOT_LOADED:
                raise NvmlUnavailable(
                    "NVML: the NVIDIA driver is not loaded; load it or use --source dcgm/sim"
                ) from None
            if code == LIB_RM_VERSION_MISMATCH:
                raise NvmlUnavailable(
                    "NVML: driver library and kernel module versions differ (driver upgraded "
                    "without reboot?); reboot the node or use --source dcgm/sim") from None
            raise NvmlUnavailable(f"NVML initialisation failed: {exc} (code {code})") from None

    def _enumerate(self) -> list[_Gpu]:
        lib = self.lib
        gpus = []
        try:
            count = lib.nvmlDeviceGetCount()
        except lib.NVMLError as exc:
            raise NvmlUnavailable(f"NVML: cannot count GPUs: {exc}") from None
        for i in range(count):
            try:
                gpus.append(self._open(i, lib.nvmlDeviceGetHandleByIndex(i)))
            except lib.NVMLError as exc:
                self._count_error(exc)
                if exc.value not in _LOST:
                    raise NvmlUnavailable(f"NVML: cannot open GPU {i}: {exc}") from None
                # Present on the bus but lost already: keep its slot, re-try it later.
                gpu = _Gpu(i, None, "", "", lost=True)
                self._inc("gpus_lost")
                log.warning("nvml: GPU %d is unavailable at start (%s)", i, exc)
                gpus.append(gpu)
        return gpus

    def _open(self, index: int, handle: Any) -> _Gpu:
        lib = self.lib
        gpu = _Gpu(index, handle, _text(lib.nvmlDeviceGetUUID(handle)),
                   _text(lib.nvmlDeviceGetName(handle)))
        gpu.gpm_supported = self._gpm_supported(gpu)
        return gpu

    def _gpm_supported(self, gpu: _Gpu) -> bool:
        fn = getattr(self.lib, "nvmlGpmQueryDeviceSupport", None)
        if fn is None:
            return False
        try:
            return bool(fn(gpu.handle).isSupportedDevice)
        except self.lib.NVMLError as exc:
            self._count_error(exc)
            if exc.value in _LOST:
                raise
            return False

    def _setup_events(self) -> None:
        lib = self.lib
        try:
            self._events = lib.nvmlEventSetCreate()
        except (lib.NVMLError, AttributeError) as exc:
            if isinstance(exc, lib.NVMLError):
                self._count_error(exc)
            log.warning("nvml: no event set, XID events will not be reported (%s)", exc)
            self._events = None
            return
        for gpu in self.gpus:
            if gpu.lost:
                continue
            try:
                self._register_xid(gpu)
            except lib.NVMLError:  # lost between enumeration and here
                gpu.lost = True
                self._inc("gpus_lost")

    def _register_xid(self, gpu: _Gpu) -> None:
        lib = self.lib
        if self._events is None:
            return
        mask = getattr(lib, "nvmlEventTypeXidCriticalError", XID_EVENT)
        try:
            if not lib.nvmlDeviceGetSupportedEventTypes(gpu.handle) & mask:
                self._inc("xid_unsupported_gpus")
                return
            lib.nvmlDeviceRegisterEvents(gpu.handle, mask, self._events)
            gpu.xid_registered = True
        except lib.NVMLError as exc:
            self._count_error(exc)
            if exc.value in _LOST:
                raise
            self._inc("xid_unsupported_gpus")

    # -- public API ------------------------------------------------------------------------
    def collect(self, t: float, interval_s: float) -> list[tuple[str, list[dict]]]:
        self._inc("ticks")
        self._retry_lost(t)
        self._poll_xid()
        layouts: list[tuple[_Gpu, list[_Target]]] = []
        warmup = False
        for gpu in self.gpus:
            if gpu.lost:
                continue
            try:
                targets = self._layout(gpu)
                warmup |= self._gpm_first_samples(gpu, targets)
                layouts.append((gpu, targets))
            except _GpuLost as exc:
                self._mark_lost(gpu, exc.code, t)
        if warmup:
            self._inc("gpm_warmups")
            self._sleep(self.gpm_warmup_s)
        samples: list[dict] = []
        for gpu, targets in layouts:
            if gpu.lost:
                continue
            try:
                samples.extend(self._sample_gpu(gpu, targets, t, interval_s))
                self._read_ras(gpu)
            except _GpuLost as exc:
                self._mark_lost(gpu, exc.code, t)
        self._gauges["gpus"] = len(self.gpus)
        self._gauges["gpus_unavailable"] = sum(g.lost for g in self.gpus)
        self._inc("samples", len(samples))
        return [(self.node, samples)]

    def counters(self) -> dict[str, int]:
        """Counts since start (errors by class, GPUs lost, XID events, ...) and gauges
        (GPUs now unavailable, per-GPU ECC / retired-page / remapped-row counts)."""
        return {**self._counters, **self._gauges}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for gpu in self.gpus:
            self._free_gpm(gpu)
        if self._events is not None:
            try:
                self.lib.nvmlEventSetFree(self._events)
            except self.lib.NVMLError as exc:
                self._count_error(exc)
            self._events = None
        self._shutdown()

    def _shutdown(self) -> None:
        try:
            self.lib.nvmlShutdown()
        except self.lib.NVMLError as exc:
            self._count_error(exc)

    # -- bookkeeping -----------------------------------------------------------------------
    def _inc(self, key: str, n: int = 1) -> None:
        self._counters[key] = self._counters.get(key, 0) + n

    def _count_error(self, exc: Exception) -> None:
        name = type(exc).__name__
        if name.startswith("NVMLError_"):
            name = _snake(name[len("NVMLError_"):])
        else:
            name = f"code_{getattr(exc, 'value', 'unknown')}"
        self._inc(f"nvml_errors_{name}")

    def _call(self, gpu: _Gpu, what: str, fn_name: str, *args: Any) -> Any:
        """One NVML read; None when unsupported or failed (see the module docstring)."""
        key = (gpu.uuid, what)
        if key in self._skip:
            return None
        fn = getattr(self.lib, fn_name, None)
        if fn is None:  # binding older than the call
            self._skip.add(key)
            return None
        try:
            return fn(*args)
        except self.lib.NVMLError as exc:
            self._count_error(exc)
            code = exc.value
            if code in _LOST:
                raise _GpuLost(code) from None
            if code in _UNSUPPORTED:
                self._skip.add(key)
                if code == NO_PERMISSION:
                    log.warning("nvml: no permission for %s on GPU %d; reported as null",
                                what, gpu.index)
            return None

    def _mark_lost(self, gpu: _Gpu, code: int, t: float) -> None:
        gpu.lost = True
        gpu.lost_at = t
        self._free_gpm(gpu)
        gpu.xid_registered = False
        self._inc("gpus_lost")
        log.warning("nvml: GPU %d (%s) is unavailable (%s); sampling the others",
                    gpu.index, gpu.uuid, "lost" if code == GPU_IS_LOST else "reset required")

    def _retry_lost(self, t: float) -> None:
        """Ask again for GPUs lost at least lost_retry_s (tick time) ago (a reset GPU comes
        back under the same UUID with a new handle)."""
        lib = self.lib
        for gpu in self.gpus:
            if not gpu.lost or (gpu.lost_at is not None and t - gpu.lost_at < self.lost_retry_s):
                continue
            gpu.lost_at = t
            try:
                handle = (lib.nvmlDeviceGetHandleByUUID(gpu.uuid) if gpu.uuid
                          else lib.nvmlDeviceGetHandleByIndex(gpu.index))
                fresh = self._open(gpu.index, handle)
                lib.nvmlDeviceGetMemoryInfo(handle)  # a real read, not only identity
            except lib.NVMLError as exc:
                self._count_error(exc)
                continue
            if gpu.uuid and fresh.uuid != gpu.uuid:
                continue
            gpu.handle, gpu.uuid, gpu.name = fresh.handle, fresh.uuid, fresh.name
            gpu.gpm_supported, gpu.lost, gpu.mig_profiles = fresh.gpm_supported, False, None
            try:
                self._register_xid(gpu)
            except lib.NVMLError:
                gpu.lost = True
                continue
            self._inc("gpus_recovered")
            log.warning("nvml: GPU %d (%s) is available again", gpu.index, gpu.uuid)

    # -- XID -------------------------------------------------------------------------------
    def _poll_xid(self) -> None:
        lib = self.lib
        if self._events is None or not any(g.xid_registered for g in self.gpus):
            return
        by_uuid = {g.uuid: g for g in self.gpus if g.uuid}
        for _ in range(MAX_EVENTS_PER_TICK):
            try:
                ev = lib.nvmlEventSetWait(self._events, 0)  # never blocks the sampling loop
            except lib.NVMLError as exc:
                if exc.value != TIMEOUT:  # Timeout: no event pending, the normal case
                    self._count_error(exc)
                return
            if not ev.eventType & XID_EVENT:
                continue
            code = int(ev.eventData)
            self._inc("xid_events")
            try:
                uuid = _text(lib.nvmlDeviceGetUUID(ev.device))
            except lib.NVMLError as exc:  # e.g. XID 79: the GPU is already gone
                self._count_error(exc)
                uuid = None
            gpu = by_uuid.get(uuid) if uuid else self._gpu_by_handle(ev.device)
            if gpu is None:
                self._inc("xid_events_unmatched")
                log.warning("nvml: XID %d from an unknown device", code)
                continue
            gi = int(ev.gpuInstanceId)
            gpu.pending_xid[None if gi == NO_INSTANCE else gi] = code
            self._gauges[f"gpu{gpu.index}_last_xid"] = code
            log.warning("nvml: XID %d on GPU %d (%s)", code, gpu.index, gpu.uuid)

    def _gpu_by_handle(self, handle: Any) -> _Gpu | None:
        for g in self.gpus:
            if g.handle is handle or _same_handle(g.handle, handle):
                return g
        return None

    # -- layout: physical GPU or MIG instances ---------------------------------------------
    def _layout(self, gpu: _Gpu) -> list[_Target]:
        lib = self.lib
        mode = self._call(gpu, "mig_mode", "nvmlDeviceGetMigMode", gpu.handle)
        if not mode or mode[0] != getattr(lib, "NVML_DEVICE_MIG_ENABLE", 1):
            return [_Target(gpu, gpu.handle)]
        count = self._call(gpu, "mig_count", "nvmlDeviceGetMaxMigDeviceCount", gpu.handle) or 0
        by_gi: dict[int, Any] = {}
        for i in range(count):
            try:
                mig = lib.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, i)
            except lib.NVMLError as exc:
                if exc.value == NOT_FOUND:  # empty slot
                    continue
                self._count_error(exc)
                if exc.value in _LOST:
                    raise _GpuLost(exc.value) from None
                continue
            gi = self._call(gpu, "mig_gi_id", "nvmlDeviceGetGpuInstanceId", mig)
            if gi is not None and gi not in by_gi:  # several compute instances: one GI
                by_gi[gi] = mig
        if not by_gi:  # MIG on, no instance yet: the GPU itself, device-level fields only
            return [_Target(gpu, gpu.handle)]
        targets = []
        for n, gi in enumerate(sorted(by_gi)):
            targets.append(_Target(gpu, by_gi[gi], gi, self._mig_profile(gpu, gi, by_gi[gi]),
                                   carrier=n == 0))
        for gone in [k for k in gpu.gpm if k is not None and k not in by_gi]:
            self._free_buffers(gpu.gpm.pop(gone))
        return targets

    def _mig_profile(self, gpu: _Gpu, gi: int, mig: Any) -> str | None:
        lib = self.lib
        if gpu.mig_profiles is None:
            gpu.mig_profiles = {}
            for p in range(getattr(lib, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0)):
                info = self._call(gpu, f"gi_profile_{p}", "nvmlDeviceGetGpuInstanceProfileInfo",
                                  gpu.handle, p)
                if info is not None:
                    gpu.mig_profiles[int(info.id)] = _profile_name(info.name)
        gi_handle = self._call(gpu, "gi_by_id", "nvmlDeviceGetGpuInstanceById", gpu.handle, gi)
        if gi_handle is not None:
            info = self._call(gpu, "gi_info", "nvmlGpuInstanceGetInfo", gi_handle)
            if info is not None and int(info.profileId) in gpu.mig_profiles:
                return gpu.mig_profiles[int(info.profileId)]
        # Fallback: a MIG device's name ends with its profile ("... MIG 1g.10gb").
        name = self._call(gpu, "mig_name", "nvmlDeviceGetName", mig)
        return _profile_name(name.rsplit(" MIG ", 1)[-1]) if name and " MIG " in name else None

    # -- GPM -------------------------------------------------------------------------------
    def _gpm_get(self, gpu: _Gpu, target: _Target, buf: Any) -> bool:
        """Fill buf with a GPM sample of the target; False when GPM does not work here."""
        if target.instance is None:
            ok = self._call(gpu, "gpm_sample", "nvmlGpmSampleGet", gpu.handle, buf)
        else:
            ok = self._call(gpu, "gpm_mig_sample", "nvmlGpmMigSampleGet", gpu.handle,
                            target.instance, buf)
        return ok is not None

    def _gpm_first_samples(self, gpu: _Gpu, targets: list[_Target]) -> bool:
        """Take a first GPM sample for targets that have none; True if any was taken."""
        if not gpu.gpm_supported:
            return False
        took = False
        for target in targets:
            state = gpu.gpm.get(target.instance)
            if state is None:
                try:
                    first = self.lib.nvmlGpmSampleAlloc()
                    second = self.lib.nvmlGpmSampleAlloc()
                except self.lib.NVMLError as exc:
                    self._count_error(exc)
                    if exc.value in _LOST:
                        raise _GpuLost(exc.value) from None
                    return took
                state = gpu.gpm[target.instance] = _Gpm(first, second)
            if not state.primed and self._gpm_get(gpu, target, state.prev):
                state.primed = took = True
        return took

    def _gpm_metrics(self, gpu: _Gpu, target: _Target) -> dict[str, float | None]:
        """GPM ratios between the previous sample and one taken now ({} when unavailable)."""
        state = gpu.gpm.get(target.instance)
        if state is None or not state.primed or not self._gpm_get(gpu, target, state.cur):
            return {}
        prev, cur = state.prev, state.cur
        state.prev, state.cur = cur, prev  # this sample starts the next interval
        lib = self.lib
        mg = lib.c_nvmlGpmMetricsGet_t()
        mg.version = getattr(lib, "NVML_GPM_METRICS_GET_VERSION", 1)
        mg.numMetrics = len(GPM_METRICS)
        mg.sample1 = prev
        mg.sample2 = cur
        for i, metric_id in enumerate(GPM_METRICS):
            mg.metrics[i].metricId = metric_id
        if self._call(gpu, "gpm_metrics", "nvmlGpmMetricsGet", mg) is None:
            return {}
        out: dict[str, float | None] = {}
        for i in range(len(GPM_METRICS)):
            m = mg.metrics[i]
            name = GPM_METRICS.get(int(m.metricId))
            if name is None:
                continue
            if m.nvmlReturn != 0:  # per-metric status: this unit is missing on this SKU
                self._inc(f"gpm_metric_errors_{name}")
                out[name] = None
            else:
                out[name] = _ratio(m.value)
        return out

    def _free_buffers(self, state: _Gpm) -> None:
        for buf in (state.prev, state.cur):
            try:
                self.lib.nvmlGpmSampleFree(buf)
            except self.lib.NVMLError as exc:
                self._count_error(exc)
        state.primed = False

    def _free_gpm(self, gpu: _Gpu) -> None:
        for state in gpu.gpm.values():
            self._free_buffers(state)
        gpu.gpm.clear()

    # -- samples ---------------------------------------------------------------------------
    def _sample_gpu(self, gpu: _Gpu, targets: list[_Target], t: float,
                    interval_s: float) -> list[dict]:
        lib = self.lib
        h = gpu.handle
        device: dict[str, Any] = {
            "power_w": _scaled(self._call(gpu, "power", "nvmlDeviceGetPowerUsage", h), 1000),
            "energy_j": _scaled(self._call(gpu, "energy", "nvmlDeviceGetTotalEnergyConsumption",
                                           h), 1000),
            "temp_c": _num(self._call(gpu, "temp", "nvmlDeviceGetTemperature", h,
                                      getattr(lib, "NVML_TEMPERATURE_GPU", 0))),
            "sm_clock_mhz": _num(self._call(gpu, "sm_clock", "nvmlDeviceGetClockInfo", h,
                                            getattr(lib, "NVML_CLOCK_SM", 1))),
            "throttle": self._throttle(gpu),
            # mW; tells apart SKUs that share a name (H200 SXM 700 W vs NVL 600 W)
            "power_limit_w": _scaled(self._call(gpu, "power_limit",
                                                "nvmlDeviceGetEnforcedPowerLimit", h), 1000),
        }
        procs = self._attribution(gpu, mig=targets[0].instance is not None)
        out = []
        for target in targets:
            s = dict.fromkeys(FIELD_NAMES)
            s.update(v=SCHEMA_VERSION, ts=t, interval_s=interval_s, node=self.node,
                     gpu=gpu.index, uuid=gpu.uuid, model=gpu.name, cluster=self.cluster,
                     mig_profile=target.profile, mig_instance=target.instance)
            if target.carrier:
                s.update(device)
            if target.instance is None:
                util = self._call(gpu, "util", "nvmlDeviceGetUtilizationRates", h)
                s["gpu_util"] = _num(getattr(util, "gpu", None))
            mem = self._call(gpu, f"memory_{target.instance}", "nvmlDeviceGetMemoryInfo",
                             target.handle)
            if mem is not None:
                s["fb_used_mib"] = _scaled(mem.used, MIB)
                s["fb_total_mib"] = _scaled(mem.total, MIB)
            s.update(self._gpm_metrics(gpu, target))
            who = procs.get(target.instance)
            if who is not None:
                s["pod"], s["job_id"] = who.pod_uid, who.job_id
            out.append(s)
        # XIDs only once every sample of the GPU is built: a GPU lost half-way keeps them.
        # The named instance's sample first; device-wide ones, and those of an instance that
        # no longer exists, go to the carrier (out[0]) when it has none of its own.
        by_instance = {s["mig_instance"]: s for s in out}
        pending = sorted(gpu.pending_xid.items(), key=lambda kv: kv[0] not in by_instance)
        gpu.pending_xid.clear()
        for key, code in pending:
            target_sample = by_instance.get(key, out[0])
            if target_sample["xid"] is None:
                target_sample["xid"] = code
        return out

    def _throttle(self, gpu: _Gpu) -> int | None:
        for name in ("nvmlDeviceGetCurrentClocksEventReasons",
                     "nvmlDeviceGetCurrentClocksThrottleReasons"):
            if hasattr(self.lib, name):
                value = self._call(gpu, "throttle", name, gpu.handle)
                return None if value is None or value == _ULL_NA else int(value)
        return None

    def _attribution(self, gpu: _Gpu, mig: bool) -> dict[int | None, Attribution]:
        """Per GPU-instance id (None for a whole GPU): who uses it. With several owners the
        process holding the most GPU memory wins (counted as attribution_ambiguous)."""
        procs = self._call(gpu, "processes", "nvmlDeviceGetComputeRunningProcesses", gpu.handle)
        best: dict[int | None, tuple[int, Attribution]] = {}
        owners: dict[int | None, set[Attribution]] = {}
        for p in procs or ():
            who = attribute_pid(p.pid, self.proc_root)
            if who is None:
                self._inc("attribution_pid_unreadable")
                continue
            if not who.known:
                continue
            key = int(p.gpuInstanceId) if mig else None
            mem = p.usedGpuMemory if isinstance(p.usedGpuMemory, int) else 0
            owners.setdefault(key, set()).add(who)
            if key not in best or mem > best[key][0]:
                best[key] = (mem, who)
        self._inc("attribution_ambiguous", sum(len(w) > 1 for w in owners.values()))
        return {k: v[1] for k, v in best.items()}

    def _read_ras(self, gpu: _Gpu) -> None:
        """ECC / retired pages / remapped rows: no schema field, kept as gauges."""
        lib = self.lib
        g, h = f"gpu{gpu.index}_", gpu.handle
        ecc = getattr(lib, "NVML_VOLATILE_ECC", 0)
        for kind, err in (("corrected", getattr(lib, "NVML_MEMORY_ERROR_TYPE_CORRECTED", 0)),
                          ("uncorrected", getattr(lib, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1))):
            v = self._call(gpu, f"ecc_{kind}", "nvmlDeviceGetTotalEccErrors", h, err, ecc)
            if v is not None and v != _ULL_NA:
                self._gauges[f"{g}ecc_{kind}_volatile"] = int(v)
        rows = self._call(gpu, "remapped_rows", "nvmlDeviceGetRemappedRows", h)
        if rows is not None:
            for name, v in zip(("correctable", "uncorrectable", "pending", "failure"), rows,
                               strict=False):
                self._gauges[f"{g}remapped_rows_{name}"] = int(v)
        for name, cause in (("sbe", 0), ("dbe", 1)):
            pages = self._call(gpu, f"retired_{name}", "nvmlDeviceGetRetiredPages", h, cause)
            if pages is not None:
                self._gauges[f"{g}retired_pages_{name}"] = len(pages)


# -- value helpers --------------------------------------------------------------------------
def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _profile_name(v: Any) -> str:
    name = _text(v).strip()
    return name[4:] if name.startswith("MIG ") else name


def _num(v: Any) -> float | None:
    """A reading as float; None for missing values and NVML's 'not available' sentinels."""
    if v is None or isinstance(v, bool) or v in (_UINT_NA, _ULL_NA):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _scaled(v: Any, divisor: float) -> float | None:
    """A reading in a smaller unit (mW, mJ, bytes) converted: W, J, MiB."""
    v = _num(v)
    return None if v is None else v / divisor


def _ratio(percent: Any) -> float | None:
    """GPM percent (0-100) -> schema ratio (0-1), clamped: GPM can overshoot by rounding."""
    v = _num(percent)
    return None if v is None or v < 0 else min(v / 100.0, 1.0)


def _same_handle(a: Any, b: Any) -> bool:
    """ctypes device handles compare by the address they hold, not by identity."""
    try:
        return a is not None and (ctypes.cast(a, ctypes.c_void_p).value
                                  == ctypes.cast(b, ctypes.c_void_p).value)
    except (TypeError, ctypes.ArgumentError):
        return False
