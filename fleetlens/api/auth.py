"""Bearer tokens, stored as SHA-256 hashes in the [api] config section.

    [api]
    tokens = [
      {hash = "sha256:<64 hex>", tenant = "*"},         # admin: the whole fleet
      {hash = "sha256:<64 hex>", tenant = "acme-ai"},   # sees acme-ai only
    ]

Tokens are random (`fleetlens api hash-token` makes one), so an unsalted SHA-256 is enough to
make a leaked config file useless for calling the API, and lets the check be a constant-time
comparison of digests. A request authenticates with `Authorization: Bearer <token>` or, for a
browser, HTTP Basic with any user name and the token as the password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fleetlens.api.params import ApiError

ADMIN = "*"
PREFIX = "sha256:"


def hash_token(token: str) -> str:
    """The config form of a token: 'sha256:' + hex digest of its UTF-8 bytes."""
    return PREFIX + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "flt_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who is asking: tenant None = admin (the whole fleet)."""

    tenant: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant is None

    def scope(self, requested: str | None) -> str | None:
        """The tenant a query is limited to. A tenant token asking for another tenant -> 403;
        a tenant token asking for nothing gets its own tenant."""
        if self.is_admin:
            return requested
        if requested is not None and requested != self.tenant:
            raise ApiError(403, "this token may only read its own tenant's data")
        return self.tenant

    def require_admin(self, what: str) -> None:
        if not self.is_admin:
            raise ApiError(403, f"{what} is fleet-wide: it needs an admin token")


class TokenTable:
    def __init__(self, entries: list[dict]):
        self._by_digest: list[tuple[bytes, str | None]] = []
        for e in entries:
            digest = bytes.fromhex(e["hash"].removeprefix(PREFIX))
            tenant = e["tenant"]
            self._by_digest.append((digest, None if tenant == ADMIN else tenant))

    def __len__(self) -> int:
        return len(self._by_digest)

    @property
    def tenants(self) -> set[str]:
        return {t for _, t in self._by_digest if t is not None}

    def lookup(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for d, tenant in self._by_digest:  # compare every entry: constant time in the match
            if hmac.compare_digest(d, digest):
                found = Principal(tenant)
        return found

    def authenticate(self, authorization: str | None) -> Principal:
        token = _token_from_header(authorization)
        principal = self.lookup(token) if token else None
        if principal is None:
            raise ApiError(401, "missing or invalid token (Authorization: Bearer <token>)")
        return principal


def _token_from_header(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None
