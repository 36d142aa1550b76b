"""A fake `pynvml` at the library boundary, for testing the NVML source without a GPU.

`FakeNvml(gpus)` is used in place of the module: it has the same function names, constants
and exception classes as PyPI nvidia-ml-py 13.615.71 and reproduces the documented behaviour
the source depends on (docs.nvidia.com/deploy/nvml-api, ../shared/reference/nvml.md):

* units: power in mW, energy in mJ since driver load, memory in bytes, clocks in MHz;
* errors: `NVMLError(code)` builds the subclass for the code (`NVMLError_NotSupported` = 3,
  `NVMLError_GpuIsLost` = 15, ...), `.value` holds the code; every call before `nvmlInit`
  or after `nvmlShutdown` raises `NVMLError_Uninitialized`;
* a GPU can be lost (or need a reset) mid-run: every call on its handles then fails;
* NotSupported: any call can be made to fail per GPU (`FakeGpu.errors`); utilization and
  power on MIG device handles are NotSupported, as documented;
* MIG: `nvmlDeviceGetMigDeviceHandleByIndex` over `nvmlDeviceGetMaxMigDeviceCount` slots,
  NotFound for empty slots, one MIG device per compute instance (a GPU instance with two
  compute instances shows up twice with the same GPU-instance id), profiles through
  `nvmlDeviceGetGpuInstanceProfileInfo` / `nvmlDeviceGetGpuInstanceById` / `nvmlGpuInstanceGetInfo`;
* GPM: samples snapshot cumulative per-metric activity (percent x seconds) on a fake clock
  that the test moves with `advance()`; `nvmlGpmMetricsGet` returns the mean percent between
  sample1 and sample2, so a metric is right only if the two samples bound the interval;
  per-metric `nvmlReturn` for units the SKU lacks; pre-Hopper parts report
  `isSupportedDevice = 0` and NotSupported on sampling;
* XID: events queue on every event set the GPU registered for; `nvmlEventSetWait` pops one
  or raises `NVMLError_Timeout`, and records the timeout it was called with.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from types import SimpleNamespace

# -- constants (values of pynvml 13.615.71) ------------------------------------------------
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_NO_DATA = 21
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_NOT_READY = 27
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_GPU_INSTANCE_PROFILE_1_SLICE = 0x0
NVML_GPU_INSTANCE_PROFILE_2_SLICE = 0x1
NVML_GPU_INSTANCE_PROFILE_3_SLICE = 0x2
NVML_GPU_INSTANCE_PROFILE_4_SLICE = 0x3
NVML_GPU_INSTANCE_PROFILE_7_SLICE = 0x4
NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12
NVML_VALUE_NOT_AVAILABLE_UINT = 0xFFFFFFFF

nvmlEventTypeSingleBitEccError = 0x1
nvmlEventTypeDoubleBitEccError = 0x2
nvmlEventTypePState = 0x4
nvmlEventTypeXidCriticalError = 0x8
nvmlEventTypeClock = 0x10
nvmlEventTypeNone = 0x0
nvmlEventTypeAll = 0xFF9F

nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonSwPowerCap = 0x4
nvmlClocksEventReasonSwThermalSlowdown = 0x20
nvmlClocksEventReasonHwThermalSlowdown = 0x40

NVML_GPM_METRICS_GET_VERSION = 1
NVML_GPM_SUPPORT_VERSION = 1
NVML_GPM_METRIC_GRAPHICS_UTIL = 1
NVML_GPM_METRIC_SM_UTIL = 2
NVML_GPM_METRIC_SM_OCCUPANCY = 3
NVML_GPM_METRIC_INTEGER_UTIL = 4
NVML_GPM_METRIC_ANY_TENSOR_UTIL = 5
NVML_GPM_METRIC_DFMA_TENSOR_UTIL = 6
NVML_GPM_METRIC_HMMA_TENSOR_UTIL = 7
NVML_GPM_METRIC_IMMA_TENSOR_UTIL = 9
NVML_GPM_METRIC_DRAM_BW_UTIL = 10
NVML_GPM_METRIC_FP64_UTIL = 11
NVML_GPM_METRIC_FP32_UTIL = 12
NVML_GPM_METRIC_FP16_UTIL = 13
NVML_GPM_METRIC_MAX = 477

NO_ID = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId of a non-MIG process or event


# -- errors, built the way pynvml builds them ----------------------------------------------
class NVMLError(Exception):
    _valClassMapping: dict[int, type] = {}

    def __new__(cls, value):
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value=None):
        super().__init__(self.value)

    def __str__(self):
        return f"NVML error {self.value}"


def _make_error_classes() -> dict[str, type]:
    made = {}
    for name, code in list(globals().items()):
        if not name.startswith("NVML_ERROR_"):
            continue
        cls_name = "NVMLError_" + string.capwords(name[len("NVML_ERROR_"):], "_").replace("_", "")

        def new(cls, *args, _code=code):
            return NVMLError.__new__(cls, _code)

        cls = type(cls_name, (NVMLError,), {"__new__": new})
        NVMLError._valClassMapping[code] = cls
        made[cls_name] = cls
    return made


globals().update(_make_error_classes())


def err(code: int) -> NVMLError:
    return NVMLError(code)


# -- the simulated hardware ------------------------------------------------------------------
@dataclass
class FakeProcess:
    pid: int
    usedGpuMemory: int | None = 1 << 30  # noqa: N815  (pynvml's field name)
    gpuInstanceId: int = NO_ID  # noqa: N815
    computeInstanceId: int = NO_ID  # noqa: N815


@dataclass
class FakeMig:
    gi: int  # GPU-instance id
    profile: str  # e.g. "1g.18gb"
    profile_enum: int  # NVML_GPU_INSTANCE_PROFILE_* this profile is
    profile_id: int  # nvmlGpuInstanceProfileInfo.id (what nvmlGpuInstanceGetInfo names)
    fb_total: int
    fb_used: int
    compute_instances: int = 1
    gpm: dict[int, float] = field(default_factory=dict)  # metric id -> percent now


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    fb_total: int = 81559 * 1024 * 1024  # bytes
    fb_used: int = 40 * 1024**3
    power_mw: int = 350_123
    energy_mj: int = 123_456_789
    temp_c: int = 61
    sm_clock_mhz: int = 1755
    util_pct: int = 97
    throttle: int = 0x4
    gpm: dict[int, float] | None = None  # None: not a GPM device (pre-Hopper)
    gpm_metric_errors: set[int] = field(default_factory=set)
    mig: list[FakeMig] | None = None  # None: MIG disabled
    mig_capable: bool = True
    processes: list[FakeProcess] = field(default_factory=list)
    ecc: tuple[int, int] | None = (3, 0)  # (corrected, uncorrected) volatile; None: ECC off
    remapped_rows: tuple[int, int, int, int] | None = (2, 0, 0, 0)
    retired_pages: tuple[list[int], list[int]] | None = None  # (sbe, dbe) page lists
    supported_events: int = 0x1 | 0x2 | 0x8 | 0x10
    errors: dict[str, int] = field(default_factory=dict)  # function name -> error code
    lost: bool = False
    reset_required: bool = False


class Handle:
    def __init__(self, gpu: FakeGpu, index: int):
        self.gpu, self.index = gpu, index


class MigHandle:
    def __init__(self, parent: Handle, mig: FakeMig, ci: int):
        self.parent, self.mig, self.ci = parent, mig, ci
        self.gpu = parent.gpu


class GpuInstance:
    def __init__(self, parent: Handle, mig: FakeMig):
        self.parent, self.mig = parent, mig


class GpmSample:
    """Opaque buffer; filled by nvmlGpmSampleGet / nvmlGpmMigSampleGet."""

    def __init__(self):
        self.filled = False
        self.key = None
        self.t = None
        self.acc: dict[int, float] = {}
        self.freed = False


class EventSet:
    def __init__(self):
        self.registered: dict[int, int] = {}  # gpu index -> mask
        self.queue: list[SimpleNamespace] = []
        self.freed = False


class c_nvmlGpmMetricsGet_t:  # noqa: N801  (pynvml's struct name)
    def __init__(self):
        self.version = 0
        self.numMetrics = 0  # noqa: N815
        self.sample1 = None
        self.sample2 = None
        self.metrics = [SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0,
                                        metricInfo=None) for _ in range(NVML_GPM_METRIC_MAX)]


# -- the module ------------------------------------------------------------------------------
class FakeNvml:
    """Stands in for the `pynvml` module (pass it as NvmlSource(lib=...))."""

    NVMLError = NVMLError
    c_nvmlGpmMetricsGet_t = c_nvmlGpmMetricsGet_t

    def __init__(self, gpus: list[FakeGpu], library_missing: bool = False,
                 init_error: int | None = None):
        self.gpus = gpus
        self.library_missing = library_missing
        self.init_error = init_error
        self.initialized = 0
        self.shutdowns = 0
        self.now = 1000.0  # the fake clock (seconds) GPM samples read
        self.handles = [Handle(g, i) for i, g in enumerate(gpus)]
        self.event_sets: list[EventSet] = []
        self.wait_timeouts: list[int] = []
        self.gpm_allocated: list[GpmSample] = []
        self.gpm_intervals: list[float] = []
        self.calls: list[str] = []
        self._gpm_acc: dict[tuple, dict[int, float]] = {}

    # test controls -----------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Let `seconds` pass on the fake clock: activity and energy accumulate."""
        for i, g in enumerate(self.gpus):
            g.energy_mj += round(g.power_mw * seconds)  # mW x s = mJ
            targets = [((i, None), g.gpm)] if g.mig is None else \
                [((i, m.gi), m.gpm) for m in g.mig]
            for key, pct in targets:
                acc = self._gpm_acc.setdefault(key, {})
                for metric, value in (pct or {}).items():
                    acc[metric] = acc.get(metric, 0.0) + value * seconds
        self.now += seconds

    def xid(self, gpu_index: int, code: int, gpu_instance: int = NO_ID) -> None:
        """The driver reports XID `code` on a GPU (delivered to sets registered for XIDs)."""
        for es in self.event_sets:
            if not es.freed and es.registered.get(gpu_index, 0) & nvmlEventTypeXidCriticalError:
                es.queue.append(SimpleNamespace(
                    device=self.handles[gpu_index], eventType=nvmlEventTypeXidCriticalError,
                    eventData=code, gpuInstanceId=gpu_instance, computeInstanceId=NO_ID))

    # plumbing ----------------------------------------------------------------------------
    def _enter(self, fn: str, handle=None) -> FakeGpu | None:
        self.calls.append(fn)
        if not self.initialized:
            raise err(NVML_ERROR_UNINITIALIZED)
        if handle is None:
            return None
        if isinstance(handle, GpuInstance):
            handle = handle.parent
        if not isinstance(handle, (Handle, MigHandle)):
            raise err(NVML_ERROR_INVALID_ARGUMENT)
        gpu = handle.gpu
        if gpu.lost:
            raise err(NVML_ERROR_GPU_IS_LOST)
        if gpu.reset_required:
            raise err(NVML_ERROR_RESET_REQUIRED)
        if fn in gpu.errors:
            raise err(gpu.errors[fn])
        return gpu

    # init ----------------------------------------------------------------------------------
    def nvmlInit(self):
        if self.library_missing:
            raise err(NVML_ERROR_LIBRARY_NOT_FOUND)
        if self.init_error is not None:
            raise err(self.init_error)
        self.initialized += 1

    def nvmlShutdown(self):
        self._enter("nvmlShutdown")
        self.initialized -= 1
        self.shutdowns += 1

    # enumeration ---------------------------------------------------------------------------
    def nvmlDeviceGetCount(self):
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise err(NVML_ERROR_INVALID_ARGUMENT)
        self._enter("nvmlDeviceGetHandleByIndex", self.handles[index])  # fails if lost
        return self.handles[index]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self._enter("nvmlDeviceGetHandleByUUID")
        for h in self.handles:
            if h.gpu.uuid == uuid:
                self._enter("nvmlDeviceGetHandleByUUID", h)
                return h
        raise err(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetUUID(self, handle):
        self._enter("nvmlDeviceGetUUID", handle)
        if isinstance(handle, MigHandle):
            return f"MIG-{handle.gpu.uuid[4:12]}-{handle.mig.gi:04d}-{handle.ci:04d}"
        return handle.gpu.uuid

    def nvmlDeviceGetName(self, handle):
        gpu = self._enter("nvmlDeviceGetName", handle)
        if isinstance(handle, MigHandle):
            return f"{gpu.name} MIG {handle.mig.profile}"
        return gpu.name

    # readings ------------------------------------------------------------------------------
    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        gpu = self._enter("nvmlDeviceGetMemoryInfo", handle)
        if isinstance(handle, MigHandle):
            total, used = handle.mig.fb_total, handle.mig.fb_used
        else:
            total, used = gpu.fb_total, gpu.fb_used
        return SimpleNamespace(total=total, free=total - used, used=used)

    def _device_only(self, fn: str, handle) -> FakeGpu:
        gpu = self._enter(fn, handle)
        if isinstance(handle, MigHandle):  # device-level readings do not exist per instance
            raise err(NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._device_only("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self._device_only("nvmlDeviceGetTotalEnergyConsumption", handle).energy_mj

    def nvmlDeviceGetTemperature(self, handle, sensor):
        gpu = self._device_only("nvmlDeviceGetTemperature", handle)
        if sensor != NVML_TEMPERATURE_GPU:
            raise err(NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temp_c

    def nvmlDeviceGetClockInfo(self, handle, type):  # noqa: A002  (pynvml's argument name)
        gpu = self._device_only("nvmlDeviceGetClockInfo", handle)
        if type in (NVML_CLOCK_SM, NVML_CLOCK_GRAPHICS):
            return gpu.sm_clock_mhz
        if type == NVML_CLOCK_MEM:
            return 2619
        raise err(NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetUtilizationRates(self, handle):
        gpu = self._device_only("nvmlDeviceGetUtilizationRates", handle)
        if gpu.mig is not None:  # MIG mode: no device-wide utilization either
            raise err(NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=gpu.util_pct, memory=30)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self._device_only("nvmlDeviceGetCurrentClocksEventReasons", handle).throttle

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return self._device_only("nvmlDeviceGetCurrentClocksThrottleReasons", handle).throttle

    def nvmlDeviceGetTotalEccErrors(self, handle, errorType, counterType):  # noqa: N803
        gpu = self._device_only("nvmlDeviceGetTotalEccErrors", handle)
        if gpu.ecc is None:
            raise err(NVML_ERROR_NOT_SUPPORTED)
        return gpu.ecc[errorType]

    def nvmlDeviceGetRemappedRows(self, handle):
        gpu = self._device_only("nvmlDeviceGetRemappedRows", handle)
        if gpu.remapped_rows is None:
            raise err(NVML_ERROR_NOT_SUPPORTED)
        return gpu.remapped_rows

    def nvmlDeviceGetRetiredPages(self, handle, sourceFilter):  # noqa: N803
        gpu = self._device_only("nvmlDeviceGetRetiredPages", handle)
        if gpu.retired_pages is None:
            raise err(NVML_ERROR_NOT_SUPPORTED)
        return list(gpu.retired_pages[sourceFilter])

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        gpu = self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
        return list(gpu.processes)

    # MIG -----------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, handle):
        gpu = self._device_only("nvmlDeviceGetMigMode", handle)
        if not gpu.mig_capable:
            raise err(NVML_ERROR_NOT_SUPPORTED)
        on = NVML_DEVICE_MIG_ENABLE if gpu.mig is not None else NVML_DEVICE_MIG_DISABLE
        return [on, on]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        gpu = self._device_only("nvmlDeviceGetMaxMigDeviceCount", handle)
        return 7 if gpu.mig_capable else 0

    def _mig_devices(self, handle: Handle) -> list[MigHandle | None]:
        slots: list[MigHandle | None] = []
        for m in handle.gpu.mig or []:
            slots.extend(MigHandle(handle, m, ci) for ci in range(m.compute_instances))
        slots.insert(1, None)  # an empty slot between instances
        return (slots + [None] * 7)[:7]

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, index):
        gpu = self._device_only("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        if gpu.mig is None or not 0 <= index < 7:
            raise err(NVML_ERROR_INVALID_ARGUMENT if gpu.mig is None else NVML_ERROR_NOT_FOUND)
        mig = self._mig_devices(handle)[index]
        if mig is None:
            raise err(NVML_ERROR_NOT_FOUND)
        return mig

    def nvmlDeviceGetGpuInstanceId(self, handle):
        self._enter("nvmlDeviceGetGpuInstanceId", handle)
        if not isinstance(handle, MigHandle):
            raise err(NVML_ERROR_INVALID_ARGUMENT)
        return handle.mig.gi

    def nvmlDeviceGetComputeInstanceId(self, handle):
        self._enter("nvmlDeviceGetComputeInstanceId", handle)
        if not isinstance(handle, MigHandle):
            raise err(NVML_ERROR_INVALID_ARGUMENT)
        return handle.ci

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        self._enter("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
        return handle.parent

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle, profile, version=2):
        gpu = self._device_only("nvmlDeviceGetGpuInstanceProfileInfo", handle)
        for m in gpu.mig or []:
            if m.profile_enum == profile:
                return SimpleNamespace(id=m.profile_id, sliceCount=int(m.profile[0]),
                                       memorySizeMB=m.fb_total // (1 << 20),
                                       name=f"MIG {m.profile}".encode())
        raise err(NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetGpuInstanceById(self, handle, gpuInstanceId):  # noqa: N803
        gpu = self._device_only("nvmlDeviceGetGpuInstanceById", handle)
        for m in gpu.mig or []:
            if m.gi == gpuInstanceId:
                return GpuInstance(handle, m)
        raise err(NVML_ERROR_NOT_FOUND)

    def nvmlGpuInstanceGetInfo(self, gpuInstance):  # noqa: N803
        self._enter("nvmlGpuInstanceGetInfo", gpuInstance)
        return SimpleNamespace(device=gpuInstance.parent, id=gpuInstance.mig.gi,
                               profileId=gpuInstance.mig.profile_id, placement=None)

    # GPM -----------------------------------------------------------------------------------
    def nvmlGpmQueryDeviceSupport(self, handle):
        gpu = self._device_only("nvmlGpmQueryDeviceSupport", handle)
        return SimpleNamespace(version=NVML_GPM_SUPPORT_VERSION,
                               isSupportedDevice=int(gpu.gpm is not None))

    def nvmlGpmSampleAlloc(self):
        self._enter("nvmlGpmSampleAlloc")
        s = GpmSample()
        self.gpm_allocated.append(s)
        return s

    def nvmlGpmSampleFree(self, sample):
        self._enter("nvmlGpmSampleFree")
        if not isinstance(sample, GpmSample) or sample.freed:
            raise err(NVML_ERROR_INVALID_ARGUMENT)
        sample.freed = True

    def _fill(self, sample: GpmSample, key: tuple) -> GpmSample:
        if not isinstance(sample, GpmSample) or sample.freed:
            raise err(NVML_ERROR_INVALID_ARGUMENT)
        sample.filled, sample.key, sample.t = True, key, self.now
        sample.acc = dict(self._gpm_acc.get(key, {}))
        return sample

    def nvmlGpmSampleGet(self, handle, sample):
        gpu = self._device_only("nvmlGpmSampleGet", handle)
        if gpu.gpm is None or gpu.mig is not None:
            raise err(NVML_ERROR_NOT_SUPPORTED)
        return self._fill(sample, (handle.index, None))

    def nvmlGpmMigSampleGet(self, handle, gpuInstanceId, sample):  # noqa: N803
        gpu = self._device_only("nvmlGpmMigSampleGet", handle)
        if gpu.gpm is None:
            raise err(NVML_ERROR_NOT_SUPPORTED)
        if not any(m.gi == gpuInstanceId for m in gpu.mig or []):
            raise err(NVML_ERROR_NOT_FOUND)
        return self._fill(sample, (handle.index, gpuInstanceId))

    def nvmlGpmMetricsGet(self, mg):
        self._enter("nvmlGpmMetricsGet")
        if mg.version != NVML_GPM_METRICS_GET_VERSION:
            raise err(NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        s1, s2 = mg.sample1, mg.sample2
        for s in (s1, s2):
            if not isinstance(s, GpmSample) or not s.filled or s.freed:
                raise err(NVML_ERROR_INVALID_ARGUMENT)
        if s1.key != s2.key or s2.t <= s1.t:
            raise err(NVML_ERROR_INVALID_ARGUMENT)
        dt = s2.t - s1.t
        self.gpm_intervals.append(dt)
        gpu = self.gpus[s1.key[0]]
        for i in range(mg.numMetrics):
            m = mg.metrics[i]
            if m.metricId in gpu.gpm_metric_errors:
                m.nvmlReturn, m.value = NVML_ERROR_NOT_SUPPORTED, 0.0
                continue
            m.nvmlReturn = NVML_SUCCESS
            m.value = (s2.acc.get(m.metricId, 0.0) - s1.acc.get(m.metricId, 0.0)) / dt
        return mg

    # events --------------------------------------------------------------------------------
    def nvmlEventSetCreate(self):
        self._enter("nvmlEventSetCreate")
        es = EventSet()
        self.event_sets.append(es)
        return es

    def nvmlDeviceGetSupportedEventTypes(self, handle):
        return self._device_only("nvmlDeviceGetSupportedEventTypes", handle).supported_events

    def nvmlDeviceRegisterEvents(self, handle, eventTypes, eventSet):  # noqa: N803
        gpu = self._device_only("nvmlDeviceRegisterEvents", handle)
        if eventTypes & ~gpu.supported_events:
            raise err(NVML_ERROR_NOT_SUPPORTED)
        eventSet.registered[handle.index] = eventSet.registered.get(handle.index, 0) | eventTypes

    def nvmlEventSetWait(self, eventSet, timeoutms):  # noqa: N803
        self._enter("nvmlEventSetWait")
        self.wait_timeouts.append(timeoutms)
        if eventSet.freed:
            raise err(NVML_ERROR_INVALID_ARGUMENT)
        if not eventSet.queue:
            raise err(NVML_ERROR_TIMEOUT)
        return eventSet.queue.pop(0)

    def nvmlEventSetFree(self, eventSet):  # noqa: N803
        self._enter("nvmlEventSetFree")
        eventSet.freed = True


for _name, _value in list(globals().items()):
    if _name.startswith(("NVML_", "nvmlEventType", "nvmlClocksEventReason", "NVMLError_")):
        setattr(FakeNvml, _name, _value)
