"""Alerting configuration: one TOML file (``--alerts FILE``), validated completely at start.

Every problem stops the program with one line that names the file, the table and the key
(``alerts.toml: [rules.gpu_idle] for = "5x" is not a duration like "90s", "30m", "4h"``):
a typo in a threshold must never fall back to a default silently. The reference of every
key, with its default, is docs/alerting.md and deploy/alerts.example.toml.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetlens.config import ConfigError

SEVERITIES = ("critical", "error", "warning", "info")
FORMATS = ("alertmanager", "slack", "pagerduty", "json")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """'90s', '30m', '1h30m', '2d' or a number of seconds -> seconds. ValueError if not."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(value)
        return float(value)
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            raise ValueError(value)
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(value)
    return total


def format_duration(seconds: float) -> str:
    """Seconds -> '1h30m', '45m', '90s' (for annotations and messages)."""
    s = int(round(seconds))
    if s == 0:
        return "0s"
    out = []
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= n:
            out.append(f"{s // n}{unit}")
            s %= n
    return "".join(out)


# -- value kinds -------------------------------------------------------------------------------
# Each key of a rule or receiver has a kind: a function (where, value) -> checked value that
# raises ConfigError with a one-line message.

def _duration(where: str, v: Any) -> float:
    try:
        return parse_duration(v)
    except ValueError:
        raise ConfigError(f'{where} = {v!r} is not a duration like "90s", "30m", "4h"') from None


def _bool(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{where} must be true or false, got {v!r}")
    return v


def _number(lo: float | None = None, hi: float | None = None, integer: bool = False):
    def check(where: str, v: Any) -> float | int:
        if isinstance(v, bool) or not isinstance(v, int | float) \
                or (integer and not isinstance(v, int)):
            kind = "an integer" if integer else "a number"
            raise ConfigError(f"{where} must be {kind}, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"within {lo}..{hi}" if hi is not None else f">= {lo}"
            raise ConfigError(f"{where} = {v!r} must be {rng}")
        return v if integer else float(v)
    return check


def _choice(*options: str):
    def check(where: str, v: Any) -> str:
        if v not in options:
            raise ConfigError(f"{where} = {v!r} is not one of {', '.join(options)}")
        return v
    return check


def _str(where: str, v: Any) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{where} must be a string, got {v!r}")
    return v


def _str_list(where: str, v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{where} must be a list of strings, got {v!r}")
    return list(v)


def _int_list(where: str, v: Any) -> list[int]:
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                          for x in v):
        raise ConfigError(f"{where} must be a list of integers, got {v!r}")
    return list(v)


def _severity_list(where: str, v: Any) -> list[str]:
    out = _str_list(where, v)
    for s in out:
        if s not in SEVERITIES:
            raise ConfigError(f"{where}: {s!r} is not one of {', '.join(SEVERITIES)}")
    return out


def _headers(where: str, v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise ConfigError(f"{where} must be a table of strings")
    return dict(v)


_severity = _choice(*SEVERITIES)
_ratio = _number(0.0, 1.0)

# -- rules -------------------------------------------------------------------------------------
# rule -> {key: (kind, default)}. `tenants` tables may override any key except those listed in
# NOT_PER_TENANT; rules whose subject has no tenant take no `tenants` table at all.
RULE_SPECS: dict[str, dict[str, tuple[Any, Any]]] = {
    "gpu_idle": {
        "enabled": (_bool, True),
        "for": (_duration, 1800.0),            # idle this long (event time) -> firing
        "min_idle_ratio": (_ratio, 0.9),       # share of a minute's seconds that must be idle
        "severity": (_severity, "warning"),    # GpuIdleWhileAllocated (memory released)
        "held_severity": (_severity, "warning"),  # GpuIdleHeldWhileAllocated (memory held)
    },
    "low_mfu": {
        "enabled": (_bool, True),
        "threshold": (_ratio, 0.2),            # fire when the window's MFU is below this
        "window": (_duration, 3600.0),         # sliding window (event time)
        "min_basis": (_duration, 1800.0),      # GPU-seconds of known MFU the window needs
        "basis": (_choice("allocated", "busy"), "allocated"),
        "for": (_duration, 0.0),
        "severity": (_severity, "info"),
    },
    "xid": {
        "enabled": (_bool, True),
        "clear_after": (_duration, 1800.0),    # resolved after this long without that XID
        "severity": (_severity, "warning"),
        "critical_codes": (_int_list, None),   # None: the built-in list (fleetlens.alerts.xid)
        "ignore_codes": (_int_list, []),
    },
    "throttle": {
        "enabled": (_bool, True),
        "min_ratio": (_ratio, 0.5),            # share of a busy minute spent throttled
        "for": (_duration, 600.0),
        "severity": (_severity, "warning"),
    },
    "stale": {
        "enabled": (_bool, True),
        "intervals": (_number(1.0), 5.0),      # stale after this many sample intervals ...
        "min_after": (_duration, 180.0),       # ... but never sooner than this
        "forget_after": (_duration, 86400.0),  # resolve and forget a node/GPU silent this long
        "severity": (_severity, "warning"),
    },
    "pipeline": {
        "enabled": (_bool, True),
        "max_lag": (_number(1, integer=True), 100_000),  # messages behind the high watermark
        "lag_for": (_duration, 600.0),
        "max_dead_letter_ratio": (_ratio, 0.01),
        "min_dead_letters": (_number(1, integer=True), 10),
        "dead_letter_window": (_duration, 300.0),
        "dead_letter_for": (_duration, 0.0),
        "severity": (_severity, "critical"),
    },
}
TENANT_RULES = ("gpu_idle", "low_mfu", "xid", "throttle")
NOT_PER_TENANT = {"window"}  # the MFU window is shared state; thresholds may differ


@dataclass
class RuleConfig:
    name: str
    values: dict[str, Any]
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def get(self, key: str, tenant: str | None = None) -> Any:
        if tenant is not None:
            over = self.tenants.get(tenant)
            if over and key in over:
                return over[key]
        return self.values[key]

    @property
    def enabled(self) -> bool:
        return bool(self.values["enabled"]) or any(
            t.get("enabled") for t in self.tenants.values())


# -- receivers ---------------------------------------------------------------------------------
RECEIVER_KEYS: dict[str, tuple[Any, Any]] = {
    "name": (_str, None),
    "url": (_str, ""),
    "url_env": (_str, ""),
    "format": (_choice(*FORMATS), "json"),
    "timeout": (_duration, 10.0),
    "send_resolved": (_bool, True),
    "tenants": (_str_list, []),       # route: only alerts of these tenants ([] = any)
    "severities": (_severity_list, []),
    "alertnames": (_str_list, []),
    "group_by": (_str_list, None),    # None: [alerts] group_by; pagerduty: one alert each
    "hmac_secret": (_str, ""),
    "hmac_secret_env": (_str, ""),
    "bearer_token": (_str, ""),
    "bearer_token_env": (_str, ""),
    "bearer_token_file": (_str, ""),
    "routing_key": (_str, ""),        # pagerduty integration key
    "routing_key_env": (_str, ""),
    "headers": (_headers, {}),
    "max_alerts": (_number(0, integer=True), 0),  # alertmanager format: 0 = all
    "retry_initial": (_duration, 1.0),
    "retry_max": (_duration, 300.0),
    "max_age": (_duration, 86400.0),  # give up on a notification this old
}


@dataclass
class Receiver:
    name: str
    url: str
    format: str = "json"
    timeout: float = 10.0
    send_resolved: bool = True
    tenants: list[str] = field(default_factory=list)
    severities: list[str] = field(default_factory=list)
    alertnames: list[str] = field(default_factory=list)
    group_by: list[str] | None = None
    hmac_secret: str = ""
    bearer_token: str = ""
    routing_key: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    max_alerts: int = 0
    retry_initial: float = 1.0
    retry_max: float = 300.0
    max_age: float = 86400.0

    def matches(self, labels: dict[str, str]) -> bool:
        """Routing: does an alert with these labels go to this receiver?"""
        if self.tenants and labels.get("tenant") not in self.tenants:
            return False
        if self.severities and labels.get("severity") not in self.severities:
            return False
        return not (self.alertnames and labels.get("alertname") not in self.alertnames)


# -- the whole file ----------------------------------------------------------------------------
ALERTS_KEYS: dict[str, tuple[Any, Any]] = {
    "state_dir": (_str, ""),          # default <store>/alerts
    "group_by": (_str_list, ["alertname", "tenant"]),
    "group_interval": (_duration, 60.0),
    "repeat_interval": (_duration, 4 * 3600.0),
    "outbox_max": (_number(1, integer=True), 10_000),
    "external_url": (_str, "http://localhost/fleetlens"),
    "shutdown_drain": (_duration, 5.0),
}


@dataclass
class AlertsConfig:
    rules: dict[str, RuleConfig]
    receivers: list[Receiver]
    state_dir: str = ""
    group_by: list[str] = field(default_factory=lambda: ["alertname", "tenant"])
    group_interval: float = 60.0
    repeat_interval: float = 4 * 3600.0
    outbox_max: int = 10_000
    external_url: str = "http://localhost/fleetlens"
    shutdown_drain: float = 5.0
    origin: str = "<defaults>"

    def receiver(self, name: str) -> Receiver:
        return next(r for r in self.receivers if r.name == name)


def _table(origin: str, where: str, data: Any) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: {where} must be a table")
    return data


def _check_keys(origin: str, where: str, data: dict, spec: dict, extra: tuple = ()) -> None:
    for key in data:
        if key not in spec and key not in extra:
            known = ", ".join([*spec, *extra])
            raise ConfigError(f"{origin}: unknown key {where} {key} (known: {known})")


def _rule(origin: str, name: str, data: dict) -> RuleConfig:
    spec = RULE_SPECS[name]
    where = f"[rules.{name}]"
    extra = ("tenants",) if name in TENANT_RULES else ()
    _check_keys(origin, where, data, spec, extra)
    values = {k: default for k, (_, default) in spec.items()}
    for key, value in data.items():
        if key != "tenants":
            values[key] = spec[key][0](f"{origin}: {where} {key}", value)
    tenants: dict[str, dict[str, Any]] = {}
    for tenant, over in _table(origin, f"{where} tenants", data.get("tenants", {})).items():
        twhere = f"[rules.{name}.tenants.{tenant}]"
        over = _table(origin, twhere, over)
        _check_keys(origin, twhere, over, {k: v for k, v in spec.items()
                                           if k not in NOT_PER_TENANT})
        tenants[tenant] = {k: spec[k][0](f"{origin}: {twhere} {k}", v) for k, v in over.items()}
    rc = RuleConfig(name, values, tenants)
    _check_rule(origin, rc)
    return rc


def _check_rule(origin: str, rc: RuleConfig) -> None:
    if rc.name == "low_mfu":
        for tenant in [None, *rc.tenants]:
            if rc.get("min_basis", tenant) > rc.values["window"] * 1000:
                raise ConfigError(f"{origin}: [rules.low_mfu] min_basis cannot exceed "
                                  "window x 1000 GPUs")
        if rc.values["window"] < 60:
            raise ConfigError(f"{origin}: [rules.low_mfu] window must be at least 1m")


def _secret(origin: str, where: str, data: dict, key: str) -> str:
    literal = data.get(key, "")
    env = data.get(f"{key}_env", "")
    if literal and env:
        raise ConfigError(f"{origin}: {where} give {key} or {key}_env, not both")
    if env:
        if env.startswith("FLEETLENS_"):
            raise ConfigError(f"{origin}: {where} {key}_env = {env!r}: FLEETLENS_* variables "
                              "are config overrides; use another name")
        value = os.environ.get(env, "")
        if not value:
            raise ConfigError(f"{origin}: {where} {key}_env names {env}, which is not set")
        return value
    return literal


def _receiver(origin: str, index: int, data: dict, names: set[str]) -> Receiver:
    data = _table(origin, f"[[receivers]] #{index}", data)
    name = data.get("name")
    where = f"[[receivers]] #{index}" + (f" ({name})" if isinstance(name, str) else "")
    _check_keys(origin, where, data, RECEIVER_KEYS)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ConfigError(f"{origin}: {where} name must be 1-64 letters, digits, '_', '.', '-' "
                          "(starting with a letter or digit)")
    if name in names:
        raise ConfigError(f"{origin}: {where} name {name!r} is used twice")
    names.add(name)
    v = {k: default for k, (_, default) in RECEIVER_KEYS.items()}
    for key, value in data.items():
        v[key] = RECEIVER_KEYS[key][0](f"{origin}: {where} {key}", value)
    url = _secret(origin, where, v, "url")
    if not url:
        raise ConfigError(f"{origin}: {where} url is required (or url_env)")
    if not re.match(r"https?://[^/\s]+", url):
        raise ConfigError(f"{origin}: {where} url {url!r} must start with http:// or https://")
    token = _secret(origin, where, v, "bearer_token")
    if v["bearer_token_file"]:
        if token:
            raise ConfigError(f"{origin}: {where} give one of bearer_token, bearer_token_env, "
                              "bearer_token_file")
        try:
            token = Path(v["bearer_token_file"]).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{origin}: {where} bearer_token_file: {exc.strerror}: "
                              f"{v['bearer_token_file']}") from None
    routing_key = _secret(origin, where, v, "routing_key")
    if v["format"] == "pagerduty" and not routing_key:
        raise ConfigError(f"{origin}: {where} format pagerduty needs routing_key "
                          "(or routing_key_env)")
    if v["timeout"] <= 0:
        raise ConfigError(f"{origin}: {where} timeout must be > 0")
    if v["retry_initial"] <= 0 or v["retry_max"] < v["retry_initial"]:
        raise ConfigError(f"{origin}: {where} retry_initial must be > 0 and <= retry_max")
    group_by = v["group_by"]
    if v["format"] == "pagerduty" and group_by is not None:
        raise ConfigError(f"{origin}: {where} group_by: pagerduty receivers get one event "
                          "per alert")
    return Receiver(name=name, url=url, format=v["format"], timeout=v["timeout"],
                    send_resolved=v["send_resolved"], tenants=v["tenants"],
                    severities=v["severities"], alertnames=v["alertnames"], group_by=group_by,
                    hmac_secret=_secret(origin, where, v, "hmac_secret"), bearer_token=token,
                    routing_key=routing_key, headers=v["headers"], max_alerts=v["max_alerts"],
                    retry_initial=v["retry_initial"], retry_max=v["retry_max"],
                    max_age=v["max_age"])


def parse(data: dict, origin: str = "<alerts config>") -> AlertsConfig:
    top = {"alerts", "rules", "receivers"}
    for section in data:
        if section not in top:
            raise ConfigError(f"{origin}: unknown section [{section}] (known: alerts, rules, "
                              "receivers)")
    alerts = _table(origin, "[alerts]", data.get("alerts", {}))
    _check_keys(origin, "[alerts]", alerts, ALERTS_KEYS)
    a = {k: default for k, (_, default) in ALERTS_KEYS.items()}
    for key, value in alerts.items():
        a[key] = ALERTS_KEYS[key][0](f"{origin}: [alerts] {key}", value)
    if not a["group_by"]:
        raise ConfigError(f"{origin}: [alerts] group_by must name at least one label")
    rules_data = _table(origin, "[rules]", data.get("rules", {}))
    for name in rules_data:
        if name not in RULE_SPECS:
            raise ConfigError(f"{origin}: unknown rule [rules.{name}] (known: "
                              f"{', '.join(RULE_SPECS)})")
    rules = {name: _rule(origin, name, _table(origin, f"[rules.{name}]",
                                              rules_data.get(name, {})))
             for name in RULE_SPECS}
    receivers_data = data.get("receivers", [])
    if not isinstance(receivers_data, list):
        raise ConfigError(f"{origin}: receivers must be an array of tables ([[receivers]])")
    names: set[str] = set()
    receivers = [_receiver(origin, i + 1, r, names) for i, r in enumerate(receivers_data)]
    return AlertsConfig(rules=rules, receivers=receivers, state_dir=a["state_dir"],
                        group_by=a["group_by"], group_interval=a["group_interval"],
                        repeat_interval=a["repeat_interval"], outbox_max=a["outbox_max"],
                        external_url=a["external_url"].rstrip("/"),
                        shutdown_drain=a["shutdown_drain"], origin=origin)


def load(path: str | os.PathLike[str]) -> AlertsConfig:
    """Read and validate an alerts TOML file, or raise ConfigError (one line)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"alerts config {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"alerts config {p} is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"alerts config {p} is not valid TOML: {exc}") from None
    return parse(data, str(p))
