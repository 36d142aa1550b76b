"""Query-parameter parsing and validation for the API.

Every function raises ApiError (HTTP 400 with a one-line message) on bad input, so a hostile or
mistyped parameter never reaches DuckDB as anything but a validated, bound value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fleetlens.pipeline.query import range_params

# Rollups are per minute, so a bucket is a whole number of minutes.
MIN_STEP = timedelta(minutes=1)
MAX_RANGE = timedelta(days=3660)  # as `fleetlens report range`
# Times the API accepts: far enough apart for any fleet, inside what every layer can represent.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)

_STEP_RE = re.compile(r"^(\d{1,9})(s|m|h|d|w)?$")
_STEP_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 1}
_EPOCH_MS_RE = re.compile(r"^\d{1,16}$")

# Series metrics (columns of sql/api_series.sql) a caller may ask for.
SERIES_METRICS = (
    "gpus", "gpu_hours_observed", "gpu_hours_allocated", "gpu_hours_unallocated",
    "gpu_hours_busy", "gpu_hours_idle", "gpu_hours_idle_held", "mfu_allocated", "mfu_busy",
    "gpu_util_mean", "tensor_active_mean", "power_w_mean", "energy_kwh", "xid_count",
)
FORMATS = ("json", "csv", "html")


class ApiError(Exception):
    """A request the API refuses; `status` is the HTTP status, `message` says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def bad(message: str) -> ApiError:
    return ApiError(400, message)


def parse_time(text: str | None, name: str) -> datetime:
    """RFC 3339 time, YYYY-MM-DD (midnight UTC) or epoch milliseconds (all digits, as Grafana's
    ${__timeFrom}/${__timeTo} send) -> aware UTC datetime."""
    if text is None or not text.strip():
        raise bad(f"'{name}' is required: an RFC 3339 time, YYYY-MM-DD or epoch milliseconds")
    s = text.strip()
    if _EPOCH_MS_RE.match(s):
        ms = int(s)
        if ms >= (LATEST - EARLIEST).total_seconds() * 1000:
            raise bad(f"'{name}' {s} epoch milliseconds is out of range")
        dt = EARLIEST + timedelta(milliseconds=ms)
    else:
        try:
            dt = datetime.fromisoformat(s.replace("z", "Z"))
        except ValueError:
            raise bad(f"'{name}' {s!r} is not an RFC 3339 time, YYYY-MM-DD or epoch "
                      "milliseconds") from None
        if dt.tzinfo is None:
            if len(s) > 10:
                raise bad(f"'{name}' {s!r} has no UTC offset (append 'Z' for UTC)")
            dt = dt.replace(tzinfo=UTC)
        try:
            dt = dt.astimezone(UTC)
        except OverflowError:
            raise bad(f"'{name}' {s!r} is out of range") from None
    if not EARLIEST <= dt < LATEST:
        raise bad(f"'{name}' must be between 1970 and 2200, got {s!r}")
    return dt


def parse_range(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    t0, t1 = parse_time(start, "from"), parse_time(end, "to")
    if t1 <= t0:
        raise bad("'to' must be after 'from'")
    if t1 - t0 > MAX_RANGE:
        raise bad("the range is longer than ten years")
    return t0, t1


def parse_step(text: str | None) -> timedelta:
    """'1h', '5m', '1d', '1w', '3600s' or plain seconds; a whole number of minutes, >= 1m."""
    if text is None or not text.strip():
        raise bad("'step' is required, e.g. 5m, 1h, 1d")
    s = text.strip().lower()
    m = _STEP_RE.match(s)
    if not m:
        raise bad(f"'step' {text!r} is not a duration like 5m, 1h, 1d, 1w or 3600s")
    seconds = int(m.group(1)) * _STEP_UNITS[m.group(2)]
    if seconds < MIN_STEP.total_seconds() or seconds % 60:
        raise bad(f"'step' {text!r} must be a whole number of minutes, at least 1m "
                  "(rollups are per minute; in Grafana set the query's min interval to 1m)")
    if seconds > MAX_RANGE.total_seconds():
        raise bad(f"'step' {text!r} is longer than the longest range")
    return timedelta(seconds=seconds)


def bucket_count(t0: datetime, t1: datetime, step: timedelta) -> int:
    return math.ceil((t1 - t0) / step)


def check_points(t0: datetime, t1: datetime, step: timedelta, max_points: int) -> None:
    n = bucket_count(t0, t1, step)
    if n > max_points:
        raise bad(f"{n} buckets requested; at most {max_points} per query (raise 'step' or "
                  "shorten the range)")


def parse_metrics(values: list[str] | None) -> list[str]:
    """Repeated and/or comma-separated metric names; none = all of them."""
    names = [n.strip() for v in values or [] for n in v.split(",") if n.strip()]
    if not names:
        return list(SERIES_METRICS)
    unknown = [n for n in names if n not in SERIES_METRICS]
    if unknown:
        raise bad(f"unknown metric {unknown[0][:80]!r} (known: {', '.join(SERIES_METRICS)})")
    return list(dict.fromkeys(names))


def parse_format(text: str | None) -> str:
    fmt = (text or "json").strip().lower()
    if fmt not in FORMATS:
        raise bad(f"unknown format {text[:40]!r} (json, csv, html)")
    return fmt


def parse_choice(text: str | None, name: str, choices: tuple[str, ...], default: str) -> str:
    value = (text or default).strip().lower()
    if value not in choices:
        raise bad(f"unknown {name} {text[:40]!r} ({', '.join(choices)})")
    return value


def parse_name(text: str | None, name: str) -> str | None:
    """An optional identifier filter (tenant, node, uuid): printable, at most 200 chars."""
    if text is None or text == "":
        return None
    if len(text) > 200 or not text.isprintable():
        raise bad(f"'{name}' must be at most 200 printable characters")
    return text


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    def bind(self) -> dict[str, datetime]:
        """DuckDB parameters: [t_from, t_to) and its whole hours [h_from, h_to), naive UTC
        like the rollups' minute column (pipeline/query.py range_params)."""
        return range_params(self.start, self.end)
