"""Configuration: one TOML file, overridden by environment variables, validated at start.

Lookup order (later wins): built-in defaults -> the TOML file (``--config`` or
``$FLEETLENS_CONFIG``) -> ``FLEETLENS_<SECTION>_<KEY>`` environment variables -> command-line
flags (applied by the CLI). Any unknown section or key, or a value of the wrong type, stops
the program with a one-line error that names it: a typo in a threshold must not silently
fall back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """Bad configuration; the message is meant for the operator, one line."""


@dataclass
class KafkaConfig:
    bootstrap: str = "127.0.0.1:9092"
    samples_topic: str = "fleetlens.samples"
    deadletter_topic: str = "fleetlens.deadletter"
    workload_topic: str = "fleetlens.workload"  # workload-reported MFU (pipeline/workload.py)
    partitions: int = 4
    replication_factor: int = 1
    group_id: str = "fleetlens-pipeline"
    # zstd: samples are repetitive JSON, ~10x smaller on the wire and in the broker.
    compression: str = "zstd"
    # Tansu holds a JoinGroup for half the session timeout; 6000 ms is also Apache Kafka's
    # group.min.session.timeout.ms, so the value is legal on both.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 300000
    max_poll_records: int = 5000


@dataclass
class Definitions:
    """How a sample is classified; see README 'Definitions'."""

    idle_gpu_util_max: float = 1.0
    idle_sm_active_max: float = 0.01
    idle_held_fb_mib: float = 1024.0
    # Busy, but SMs mostly empty: busy-low-efficiency.
    low_efficiency_sm_active: float = 0.15
    # XIDs after which the GPU is down until reset: their samples count as unavailable.
    # 48 DBE ECC, 62/64 internal/ECC-retirement failures, 74 NVLink, 79 fallen off the bus,
    # 95 uncontained ECC, 119/120 GSP errors.
    unavailable_xids: list[int] = field(default_factory=lambda: [48, 62, 64, 74, 79, 95,
                                                                 119, 120])
    # GPUs of a node with a whole-node ('*') allocation that never reported a sample.
    gpus_per_node: int = 8
    # A silence longer than this many sample intervals, between two samples of the same
    # (non-ledger) tenant, counts as unavailable time of that tenant (pipeline/gaps.py).
    gap_intervals: float = 3.0


@dataclass
class TenancyConfig:
    """How samples without a ledger allocation find their tenant (see pipeline/tenancy.py)."""

    # Kubernetes namespace -> tenant. Namespaces not listed count as a tenant of their own
    # name when namespace_fallback = "namespace", or as unallocated when "unallocated".
    namespace_tenants: dict[str, str] = field(default_factory=dict)
    namespace_fallback: str = "namespace"
    # Slurm job id -> account (the tenant).
    slurm_accounts: dict[str, str] = field(default_factory=dict)


@dataclass
class PipelineConfig:
    window_s: int = 60
    # A node's window closes once that node has sent a sample this many seconds past its end.
    # One agent sends a node's samples in order, so this only absorbs jitter; a sample later
    # than this is not lost but merged as a correction at the next flush (README). 5 s keeps
    # sample-to-report freshness under 70 s at p99 (docs/benchmarks.md).
    lateness_s: float = 5.0
    # A window also closes when its node has sent nothing for this long (processing time),
    # so one silent node cannot hold back offset commits forever.
    idle_close_s: float = 120.0
    # Closed windows are written (and offsets committed) at most this often.
    flush_interval_s: float = 5.0
    # A partition's newest minute rollup files are summed into the hourly tier (range reports
    # read it: pipeline/compact.py) once this many are uncompacted, and all of them when the
    # job stops or goes idle.
    compact_min_files: int = 60


@dataclass
class StoreConfig:
    dir: str = "var/store"


@dataclass
class AgentConfig:
    source: str = "sim"
    interval_s: float = 10.0
    node: str = ""  # default: this host's name
    cluster: str = ""  # the `cluster` field of NVML/dcgm samples; empty: null
    # Every message passes through this on-disk spool on its way to Kafka (docs/agent.md).
    spool_dir: str = "var/agent/spool"
    # Cap on the bytes of messages waiting in the spool; beyond it the oldest are dropped.
    spool_max_mb: float = 256.0
    # Prometheus metrics of the agent on this port (all interfaces); 0 = not served.
    metrics_port: int = 0
    # On SIGTERM/SIGINT, keep sending what is spooled for at most this long, then exit.
    flush_timeout_s: float = 5.0


@dataclass
class SimConfig:
    seed: int = 42
    nodes: int = 32
    gpus_per_node: int = 8
    tenants: int = 5
    cluster: str = "sim-1"


@dataclass
class MetricsConfig:
    """The pipeline's Prometheus endpoint (`fleetlens pipeline --metrics-port`)."""

    host: str = "127.0.0.1"  # 0.0.0.0 in a container, so Prometheus can reach it
    port: int = 0  # 0 = no metrics endpoint
    # A GPU with no closed minute for this long (event or wall-clock time) is 'unavailable'.
    gpu_stale_s: float = 300.0


@dataclass
class ApiConfig:
    """`fleetlens serve`. tokens: [{hash = "sha256:<hex>", tenant = "*" | "<tenant>"}, ...]
    ("*" = admin); `fleetlens api hash-token` makes an entry. Set in the file only."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_points: int = 10000  # time buckets one series query may ask for
    tokens: list = field(default_factory=list)


@dataclass
class PricingConfig:
    """Prices for the weekly report's Money section (docs/weekly-report.md)."""

    currency: str = "USD"
    # Price of one GPU-hour of a model that `models` does not list (and of allocated hours
    # that no sample tells the model of).
    default_usd_per_gpu_hour: float = 2.0
    # GPU catalog model_key -> price per GPU-hour, e.g. { h100_sxm5_80gb = 2.5 }.
    models: dict[str, float] = field(default_factory=dict)


@dataclass
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    definitions: Definitions = field(default_factory=Definitions)
    tenancy: TenancyConfig = field(default_factory=TenancyConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    pricing: PricingConfig = field(default_factory=PricingConfig)


def _coerce(section: str, key: str, typ: Any, value: Any, origin: str) -> Any:
    where = f"{origin}: [{section}] {key}"
    container = get_origin(typ)
    if container is list:
        (item,) = get_args(typ)
        if isinstance(value, str):  # from the environment: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        return [_coerce(section, f"{key}[{i}]", item, v, origin) for i, v in enumerate(value)]
    if container is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        _, item = get_args(typ)
        return {str(k): _coerce(section, f"{key}.{k}", item, v, origin)
                for k, v in value.items()}
    if isinstance(value, str) and typ is not str:
        try:
            value = {int: int, float: float}[typ](value) if typ in (int, float) else value
        except (KeyError, ValueError):
            raise ConfigError(f"{where} = {value!r} is not a valid {typ.__name__}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {typ.__name__}, got {type(value).__name__}")
    return value


def _apply(cfg: Config, data: dict[str, Any], origin: str) -> None:
    for section, values in data.items():
        if not hasattr(cfg, section):
            known = ", ".join(f.name for f in dataclasses.fields(cfg))
            raise ConfigError(f"{origin}: unknown section [{section}] (known: {known})")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        target = getattr(cfg, section)
        hints = get_type_hints(type(target))
        for key, value in values.items():
            if key not in hints:
                known = ", ".join(hints)
                raise ConfigError(f"{origin}: unknown key [{section}] {key} (known: {known})")
            setattr(target, key, _coerce(section, key, hints[key], value, origin))


def _env_overrides(cfg: Config, environ: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    sections = {f.name for f in dataclasses.fields(cfg)}
    for name, value in environ.items():
        if not name.startswith("FLEETLENS_") or name == "FLEETLENS_CONFIG":
            continue
        rest = name[len("FLEETLENS_"):].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(f"environment: {name} names no config section")
        out.setdefault(section, {})[rest[len(section) + 1:]] = value
    return out


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    k, p, d = cfg.kafka, cfg.pipeline, cfg.definitions
    if ":" not in k.bootstrap:
        raise ConfigError(f"[kafka] bootstrap must be HOST:PORT, got {k.bootstrap!r}")
    if k.partitions < 1:
        raise ConfigError("[kafka] partitions must be >= 1")
    if k.compression not in ("none", "gzip", "snappy", "lz4", "zstd"):
        raise ConfigError(f"[kafka] compression {k.compression!r} is not one of "
                          "none, gzip, snappy, lz4, zstd")
    if k.heartbeat_interval_ms * 3 > k.session_timeout_ms:
        raise ConfigError("[kafka] heartbeat_interval_ms must be at most a third of "
                          "session_timeout_ms")
    if p.window_s != 60:
        raise ConfigError("[pipeline] window_s: only 60-second windows are supported in v1")
    if p.compact_min_files < 1:
        raise ConfigError("[pipeline] compact_min_files must be >= 1")
    if p.lateness_s < 0 or p.idle_close_s <= 0 or p.flush_interval_s < 0:
        raise ConfigError("[pipeline] lateness_s, flush_interval_s must be >= 0 and "
                          "idle_close_s > 0")
    if not 0 <= d.idle_gpu_util_max <= 100:
        raise ConfigError("[definitions] idle_gpu_util_max must be within 0..100")
    if not 0 <= d.idle_sm_active_max <= 1:
        raise ConfigError("[definitions] idle_sm_active_max must be within 0..1")
    if d.gap_intervals <= 1:
        raise ConfigError("[definitions] gap_intervals must be > 1")
    if not 0 <= d.low_efficiency_sm_active <= 1:
        raise ConfigError("[definitions] low_efficiency_sm_active must be within 0..1")
    if cfg.tenancy.namespace_fallback not in ("namespace", "unallocated"):
        raise ConfigError("[tenancy] namespace_fallback must be 'namespace' or 'unallocated'")
    a = cfg.agent
    if a.interval_s <= 0:
        raise ConfigError("[agent] interval_s must be > 0")
    if a.spool_max_mb <= 0:
        raise ConfigError("[agent] spool_max_mb must be > 0")
    if not 0 <= a.metrics_port <= 65535:
        raise ConfigError("[agent] metrics_port must be within 0..65535 (0 = off)")
    if a.flush_timeout_s < 0:
        raise ConfigError("[agent] flush_timeout_s must be >= 0")
    if not a.spool_dir:
        raise ConfigError("[agent] spool_dir must not be empty")
    if not 0 <= cfg.metrics.port <= 65535:
        raise ConfigError("[metrics] port must be within 0..65535 (0 = off)")
    if cfg.metrics.gpu_stale_s <= 0:
        raise ConfigError("[metrics] gpu_stale_s must be > 0")
    if cfg.sim.nodes < 1 or cfg.sim.gpus_per_node < 1 or cfg.sim.tenants < 1:
        raise ConfigError("[sim] nodes, gpus_per_node and tenants must be >= 1")
    validate_api(cfg.api)
    _validate_pricing(cfg.pricing)


_TOKEN_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def validate_api(api: ApiConfig) -> None:
    if not 0 < api.port < 65536:
        raise ConfigError("[api] port must be within 1..65535")
    if api.max_points < 1:
        raise ConfigError("[api] max_points must be >= 1")
    seen: set[str] = set()
    for i, entry in enumerate(api.tokens):
        where = f"[api] tokens[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"hash", "tenant"}:
            raise ConfigError(f"{where} must be a table with exactly the keys hash and tenant")
        h, tenant = entry["hash"], entry["tenant"]
        if not isinstance(h, str) or not _TOKEN_HASH.match(h):
            raise ConfigError(f"{where} hash must be 'sha256:' + 64 lowercase hex digits "
                              "(make one with `fleetlens api hash-token`)")
        if not isinstance(tenant, str) or not tenant.strip():
            raise ConfigError(f"{where} tenant must be a tenant name or \"*\" (admin)")
        if h in seen:
            raise ConfigError(f"{where} repeats a hash already listed")
        seen.add(h)


def _validate_pricing(pr: PricingConfig) -> None:
    if pr.default_usd_per_gpu_hour < 0:
        raise ConfigError("[pricing] default_usd_per_gpu_hour must be >= 0")
    if not pr.currency.strip():
        raise ConfigError("[pricing] currency must not be empty")
    if pr.models:
        from fleetlens.pipeline.catalog import load_catalog  # csv only: no Polars/DuckDB

        known = load_catalog()
        for key, price in pr.models.items():
            if key not in known:
                raise ConfigError(f"[pricing] models: {key!r} is not a GPU catalog model_key "
                                  f"(e.g. {', '.join(sorted(known)[:3])}, ...)")
            if price < 0:
                raise ConfigError(f"[pricing] models.{key} must be >= 0")


def load(path: str | os.PathLike[str] | None = None,
         environ: dict[str, str] | None = None) -> Config:
    """Build the effective configuration, or raise ConfigError."""
    environ = dict(os.environ) if environ is None else environ
    cfg = Config()
    path = path or environ.get("FLEETLENS_CONFIG")
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        _apply(cfg, data, str(p))
    _apply(cfg, _env_overrides(cfg, environ), "environment")
    validate(cfg)
    return cfg
