"""Workload-reported MFU: what a training job says it achieved, against the same catalog.

The counter estimate (tensor_active x clock ratio) is a hardware view: it cannot tell useful
model FLOPs from recomputation or padding, and FP8 and BF16 share the tensor pipes. A job
that knows its model can publish the real figure to the `fleetlens.workload` topic, one JSON
object per message:

    {"ts": 1794787200, "interval_s": 60, "job_id": "llm-7b-run3", "tenant": "acme-ai",
     "gpus": ["GPU-...", ...], "dtype": "bf16",
     "achieved_tflops": 2480.0}                                  # total over its GPUs, or
     "tokens_per_s": 31000, "model_params": 7e9,                 # PaLM model FLOPs:
     "layers": 32, "hidden": 4096, "seq_len": 4096}              # 6N + 12 L H S per token

True MFU (PaLM, Chowdhery et al. 2022, appendix B) = achieved FLOP/s / (GPUs x dense peak of
the declared dtype on that SKU). Reports with bad fields, an unknown dtype or GPUs whose
model the catalog does not know go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
from fleetlens.pipeline.catalog import GpuSpec, lookup

DTYPE_PEAK = {"bf16": "bf16_dense_tflops", "fp16": "fp16_dense_tflops",
              "tf32": "tf32_dense_tflops", "fp8": "fp8_dense_tflops",
              "fp4": "fp4_dense_tflops", "int8": "int8_dense_tops", "fp64": "fp64_tensor_tflops",
              "fp32": "fp32_tflops"}

WORKLOAD_SCHEMA = {"minute": pl.Datetime("us"), "job_id": pl.String, "tenant": pl.String,
                   "gpus": pl.Int64, "gpu_s": pl.Float64, "mfu_x_gpu_s": pl.Float64,
                   "mfu": pl.Float64, "achieved_tflops": pl.Float64, "dtype": pl.String,
                   "model_key": pl.String, "uuids": pl.List(pl.String)}


class InvalidReport(ValueError):
    """A report that cannot be used; `retryable` when only the GPUs' samples are missing so
    far (they may arrive on the samples topic a moment later)."""

    def __init__(self, reason: str, retryable: bool = False):
        super().__init__(reason)
        self.retryable = retryable


@dataclass(frozen=True)
class WorkloadReport:
    ts: float
    interval_s: float
    job_id: str
    tenant: str | None
    gpus: tuple[str, ...]
    dtype: str
    achieved_tflops: float  # total over the job's GPUs

    @property
    def minute(self) -> datetime:
        return datetime.fromtimestamp(self.ts // 60 * 60, UTC).replace(tzinfo=None)


def _number(obj: dict, key: str, required: bool = True) -> float | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise InvalidReport(f"missing field '{key}'")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise InvalidReport(f"field '{key}' must be a non-negative number")
    return float(value)


def model_flops_per_token(params: float, layers: float | None, hidden: float | None,
                          seq_len: float | None) -> float:
    """PaLM model FLOPs per token: 6N for the dense weights (forward and backward), plus
    12 L H S for attention when the shape is given."""
    flops = 6.0 * params
    if layers and hidden and seq_len:
        flops += 12.0 * layers * hidden * seq_len
    return flops


def parse_report(value: bytes) -> WorkloadReport:
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidReport(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidReport("a workload report must be a JSON object")
    job_id = obj.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise InvalidReport("missing field 'job_id'")
    gpus = obj.get("gpus")
    if not isinstance(gpus, list) or not gpus or not all(isinstance(g, str) for g in gpus):
        raise InvalidReport("field 'gpus' must be a non-empty list of GPU UUIDs")
    dtype = str(obj.get("dtype", "bf16")).lower()
    if dtype not in DTYPE_PEAK:
        raise InvalidReport(f"unknown dtype {dtype!r} (one of {', '.join(DTYPE_PEAK)})")
    ts = _number(obj, "ts")
    interval = _number(obj, "interval_s", required=False) or 60.0
    achieved = _number(obj, "achieved_tflops", required=False)
    if achieved is None:
        tokens = _number(obj, "tokens_per_s")
        params = _number(obj, "model_params")
        flops = model_flops_per_token(params, _number(obj, "layers", False),
                                      _number(obj, "hidden", False),
                                      _number(obj, "seq_len", False))
        achieved = tokens * flops / 1e12
    tenant = obj.get("tenant")
    return WorkloadReport(ts, interval, job_id, tenant if isinstance(tenant, str) else None,
                          tuple(dict.fromkeys(gpus)), dtype, achieved)


def true_mfu(report: WorkloadReport, spec: GpuSpec) -> float:
    peak = getattr(spec, DTYPE_PEAK[report.dtype])
    if not peak:
        raise InvalidReport(f"{spec.model_key} has no published {report.dtype} peak")
    return report.achieved_tflops / (len(report.gpus) * peak)


def report_row(report: WorkloadReport, uuid_models: dict[str, str]) -> dict:
    """The stored row for one report; raises InvalidReport when the GPUs cannot be resolved."""
    models = {uuid_models.get(u) for u in report.gpus}
    if None in models:
        missing = [u for u in report.gpus if u not in uuid_models]
        raise InvalidReport(f"no samples seen for GPU(s) {', '.join(missing[:3])}: model unknown",
                            retryable=True)
    specs = {lookup(m) for m in models}
    if None in specs:
        raise InvalidReport(f"GPU model(s) not in the catalog: {sorted(models)}")
    if len(specs) > 1:
        raise InvalidReport("a job spanning several GPU models is not supported")
    spec = specs.pop()
    mfu = true_mfu(report, spec)
    gpu_s = len(report.gpus) * report.interval_s
    return {"minute": report.minute, "job_id": report.job_id, "tenant": report.tenant,
            "gpus": len(report.gpus), "gpu_s": gpu_s, "mfu_x_gpu_s": mfu * gpu_s, "mfu": mfu,
            "achieved_tflops": report.achieved_tflops, "dtype": report.dtype,
            "model_key": spec.model_key, "uuids": list(report.gpus)}


def rows_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=WORKLOAD_SCHEMA)
