"""How fleetlens writes instants: RFC 3339 in UTC with 'Z', to the second."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(when: datetime | float) -> str:
    """An epoch-seconds number, an aware datetime, or a naive one taken as UTC."""
    if isinstance(when, (int, float)):
        when = datetime.fromtimestamp(when, UTC)
    elif when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
