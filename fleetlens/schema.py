"""Message schema v1: the one contract between node agents and the pipeline.

A Kafka message carries the samples of one node for one sampling tick:

* key   = the node name (UTF-8), so that all samples of a node land in one partition, in order;
* value = NDJSON, one JSON object per GPU (or MIG instance) sample.

Both sides import this module: the agent to build and check samples, the pipeline to decode
batches (with Polars, using ``polars_schema()``) and to explain why a line was rejected
(``validate_sample``). It must stay importable without Polars or DuckDB, because the agent
runs on GPU nodes and has to stay small.

Unmeasured fields are ``null``, never 0: a zero would read as "measured and idle".
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "int" | "float" | "str"
    required: bool = False
    lo: float | None = None  # inclusive bounds, checked when the value is not null
    hi: float | None = None
    doc: str = ""


FIELDS: tuple[Field, ...] = (
    Field("v", "int", True, doc="schema version, always 1"),
    Field("ts", "float", True, lo=0, doc="sample time, epoch seconds UTC"),
    Field("interval_s", "float", True, lo=0, doc="seconds of GPU time this sample stands for"),
    Field("node", "str", True, doc="host name of the node"),
    Field("gpu", "int", True, lo=0, doc="GPU index on the node"),
    Field("uuid", "str", True, doc="GPU UUID (the parent GPU's for MIG instances)"),
    Field("model", "str", True, doc="model name as NVML/DCGM report it"),
    Field("cluster", "str", doc="cluster the node belongs to"),
    Field("mig_profile", "str", doc="MIG profile, e.g. 1g.10gb"),
    Field("mig_instance", "int", lo=0, doc="MIG GPU-instance id"),
    Field("gpu_util", "float", lo=0, hi=100, doc="percent of time a kernel ran (0-100)"),
    Field("sm_active", "float", lo=0, hi=1, doc="ratio of cycles an SM had a warp resident"),
    Field("sm_occupancy", "float", lo=0, hi=1, doc="resident warps / max warps"),
    Field("tensor_active", "float", lo=0, hi=1, doc="ratio of cycles any tensor pipe was busy"),
    Field("dram_active", "float", lo=0, hi=1, doc="ratio of cycles DRAM was busy"),
    Field("fp64_active", "float", lo=0, hi=1, doc="FP64 pipe activity ratio"),
    Field("fp32_active", "float", lo=0, hi=1, doc="FP32 pipe activity ratio"),
    Field("fp16_active", "float", lo=0, hi=1, doc="FP16 pipe activity ratio"),
    Field("power_w", "float", lo=0, doc="board power, watts"),
    Field("energy_j", "float", lo=0, doc="cumulative energy counter, joules"),
    Field("temp_c", "float", doc="GPU temperature, Celsius"),
    Field("sm_clock_mhz", "float", lo=0, doc="SM clock, MHz"),
    Field("fb_used_mib", "float", lo=0, doc="framebuffer used, MiB"),
    Field("fb_total_mib", "float", lo=0, doc="framebuffer total, MiB"),
    Field("xid", "int", lo=0, doc="last XID error code seen in the interval"),
    Field("throttle", "int", lo=0, doc="clock-event (throttle) reasons bitmask"),
    Field("namespace", "str", doc="Kubernetes namespace of the workload"),
    Field("pod", "str", doc="Kubernetes pod of the workload"),
    Field("job_id", "str", doc="batch-scheduler (Slurm) job id"),
    Field("tenant", "str", doc="tenant, when the node knows it"),
    # Added after the first release, hence last: optional, so older agents stay valid.
    Field("power_limit_w", "float", lo=0, doc="enforced power limit, watts (tells apart SKUs "
          "that report the same name, e.g. H200 SXM and NVL)"),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
REQUIRED: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)
_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}


class InvalidSample(ValueError):
    """A sample that does not follow schema v1; the message says which field and why."""


def _check_value(f: Field, value: Any) -> Any:
    if f.kind == "str":
        # Polars' NDJSON reader turns a JSON number into its text for a string column;
        # the validator accepts the same so that both decode paths agree.
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InvalidSample(f"field '{f.name}' must be a string, got {type(value).__name__}")
        return str(value)
    if isinstance(value, bool):
        raise InvalidSample(f"field '{f.name}' must be a number, got bool")
    if f.kind == "int":
        if not isinstance(value, int):
            raise InvalidSample(
                f"field '{f.name}' must be an integer, got {type(value).__name__}")
    elif not isinstance(value, (int, float)):
        raise InvalidSample(f"field '{f.name}' must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidSample(f"field '{f.name}' must be finite, got {value}")
    if f.lo is not None and value < f.lo:
        raise InvalidSample(f"field '{f.name}'={value} is below {f.lo:g}")
    if f.hi is not None and value > f.hi:
        raise InvalidSample(f"field '{f.name}'={value} is above {f.hi:g}")
    return value


def validate_sample(obj: Any) -> dict[str, Any]:
    """Return the sample with every schema field present (missing optionals as None).

    Raises InvalidSample naming the first problem. Unknown extra keys are dropped: they may
    come from a newer agent, and rejecting them would make rolling upgrades lose data.
    """
    if not isinstance(obj, Mapping):
        raise InvalidSample(f"sample must be a JSON object, got {type(obj).__name__}")
    out: dict[str, Any] = {}
    for f in FIELDS:
        value = obj.get(f.name)
        if value is None:
            if f.required:
                raise InvalidSample(f"missing required field '{f.name}'")
            out[f.name] = None
            continue
        out[f.name] = _check_value(f, value)
    if out["v"] != SCHEMA_VERSION:
        raise InvalidSample(f"unsupported schema version v={out['v']} (expected {SCHEMA_VERSION})")
    if out["interval_s"] <= 0:
        raise InvalidSample("field 'interval_s' must be > 0")
    return out


def parse_line(line: bytes | str) -> dict[str, Any]:
    """Parse and validate one NDJSON line (raises InvalidSample with the reason)."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSample(f"not valid JSON: {exc}") from None
    return validate_sample(obj)


def encode_sample(sample: Mapping[str, Any]) -> str:
    """One NDJSON line (no newline) with the fields in schema order; nulls are kept explicit."""
    if tuple(sample) != FIELD_NAMES:  # re-order only when needed: the simulator's are ready
        sample = {name: sample.get(name) for name in FIELD_NAMES}
    return json.dumps(sample, separators=(",", ":"))


def encode_message(samples: Iterable[Mapping[str, Any]]) -> bytes:
    """The Kafka message value for one node's tick."""
    return ("\n".join(encode_sample(s) for s in samples) + "\n").encode()


def split_lines(value: bytes) -> list[bytes]:
    """The non-empty lines of a message value (tolerates CRLF and a missing final newline)."""
    return [line for line in value.replace(b"\r\n", b"\n").split(b"\n") if line.strip()]


def group_by_node_tick(samples: Iterable[dict[str, Any]]) -> Iterator[tuple[str, list[dict]]]:
    """Group consecutive samples of the same (node, ts) into one message's worth."""
    current_key: tuple[str, float] | None = None
    batch: list[dict] = []
    for s in samples:
        key = (s["node"], s["ts"])
        if key != current_key and batch:
            yield batch[0]["node"], batch
            batch = []
        current_key = key
        batch.append(s)
    if batch:
        yield batch[0]["node"], batch


def polars_schema() -> dict[str, Any]:
    """The explicit Polars schema used to decode batches (imports Polars lazily)."""
    import polars as pl

    kinds = {"int": pl.Int64, "float": pl.Float64, "str": pl.String}
    return {f.name: kinds[f.kind] for f in FIELDS}


def field(name: str) -> Field:
    return _BY_NAME[name]
