"""Principals (users and API keys), their roles and departments, and how credentials are checked.

Users authenticate with a password (HTTP Basic, for TAXII peers) or with an API key
(`Authorization: Bearer lf_<key id>_<secret>`, also accepted as a Basic password). Only
hashes are stored: scrypt for passwords, HMAC-SHA256 for the high-entropy key secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from elasticsearch import ConflictError, Elasticsearch, NotFoundError

from lianfang.schema import format_timestamp
from lianfang.store import IndexNames, install_index

KEY_PREFIX = "lf"
SCRYPT_COST = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
# Verified credentials are remembered briefly so scrypt does not run on every request.
VERIFIED_CACHE_SECONDS = 60.0

PRINCIPAL_FIELDS = {
    "kind": "keyword",
    "name": "keyword",
    "role": "keyword",
    "department": "keyword",
    "display_name": "keyword",
    "user": "keyword",
    "key_id": "keyword",
    "hash": "keyword",
    "salt": "keyword",
    "disabled": "boolean",
    "created_at": "date",
    "created_by": "keyword",
    "revoked_at": "date",
    "revoked_by": "keyword",
}


class Role(StrEnum):
    """What a principal may do; department roles see only their own department."""

    ADMINISTRATOR = "administrator"
    PROVINCE_ANALYST = "province_analyst"
    DEPARTMENT_ANALYST = "department_analyst"
    SHARING_PARTNER = "sharing_partner"


class AuthenticationFailed(PermissionError):
    """Credentials missing, malformed, unknown or wrong (the reason is never shown to clients)."""


class PrincipalError(ValueError):
    """A principal that cannot be created or changed as asked; carries the name."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (or the user behind an API key), with role and department."""

    name: str
    role: Role
    department: str | None = None
    display_name: str | None = None
    via_key: str | None = None

    @property
    def sees_all_departments(self) -> bool:
        """Administrators and province analysts see the whole province."""
        return self.role in (Role.ADMINISTRATOR, Role.PROVINCE_ANALYST)

    @property
    def organization_scope(self) -> tuple[str, ...] | None:
        """The departments whose data this principal may read; None means all."""
        if self.sees_all_departments:
            return None
        return (self.department,) if self.department else ()


def hash_password(password: str, salt: bytes) -> str:
    """scrypt hash of a password, hex."""
    return hashlib.scrypt(password.encode(), salt=salt, **SCRYPT_COST).hex()


def hash_key_secret(key_id: str, secret: str) -> str:
    """HMAC-SHA256 of an API key's secret (high entropy, so no slow hash is needed)."""
    return hmac.new(key_id.encode(), secret.encode(), hashlib.sha256).hexdigest()


def parse_api_key(token: str) -> tuple[str, str]:
    """Split `lf_<key id>_<secret>` into (key id, secret)."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        raise AuthenticationFailed("malformed API key")
    return parts[1], parts[2]


class PrincipalStore:
    """Users and API keys in the `<prefix>-principals` index."""

    def __init__(self, client: Elasticsearch, prefix: str) -> None:
        self.client = client
        self.index = IndexNames(prefix).principals
        self._verified: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def install(self) -> None:
        """Create the index with explicit mappings if missing."""
        install_index(self.client, self.index, PRINCIPAL_FIELDS)

    # ---------------------------------------------------------------- users

    def add_user(
        self,
        name: str,
        role: Role,
        department: str | None,
        password: str | None = None,
        display_name: str | None = None,
        created_by: str = "cli",
    ) -> Principal:
        """Create a user; department roles must name their department."""
        if role in (Role.DEPARTMENT_ANALYST, Role.SHARING_PARTNER) and not department:
            raise PrincipalError(name, f"role {role} needs a department")
        if not name or any(c.isspace() or c == ":" for c in name):
            raise PrincipalError(name, "user names have no spaces or colons")
        if password is not None and len(password) < 12:
            raise PrincipalError(name, "passwords have at least 12 characters")
        salt = secrets.token_bytes(16)
        document: dict[str, Any] = {
            "kind": "user",
            "name": name,
            "role": str(role),
            "department": department,
            "display_name": display_name,
            "salt": salt.hex(),
            "hash": hash_password(password, salt) if password else None,
            "disabled": False,
            "created_at": format_timestamp(datetime.now(UTC)),
            "created_by": created_by,
        }
        try:
            self.client.create(
                index=self.index, id=f"user:{name}", document=document, refresh="wait_for"
            )
        except ConflictError as error:
            raise PrincipalError(name, "a user with this name exists") from error
        return Principal(name, role, department, display_name)

    def user(self, name: str) -> dict[str, Any] | None:
        """The stored user, or None."""
        try:
            return self.client.get(index=self.index, id=f"user:{name}")["_source"]
        except NotFoundError:
            return None

    def list(self, kind: str) -> list[dict[str, Any]]:
        """Users or keys (without hashes)."""
        response = self.client.search(
            index=self.index, query={"term": {"kind": kind}}, size=1000, sort=[{"name": "asc"}]
        )
        return [
            {k: v for k, v in hit["_source"].items() if k not in ("hash", "salt")}
            for hit in response["hits"]["hits"]
        ]

    # ---------------------------------------------------------------- keys

    def create_key(self, user: str, name: str = "", created_by: str = "cli") -> str:
        """A new API key for a user; the full key is returned once and never stored."""
        if self.user(user) is None:
            raise PrincipalError(user, "no such user")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        document = {
            "kind": "key",
            "name": name or key_id,
            "key_id": key_id,
            "user": user,
            "hash": hash_key_secret(key_id, secret),
            "disabled": False,
            "created_at": format_timestamp(datetime.now(UTC)),
            "created_by": created_by,
        }
        self.client.create(
            index=self.index, id=f"key:{key_id}", document=document, refresh="wait_for"
        )
        return f"{KEY_PREFIX}_{key_id}_{secret}"

    def revoke_key(self, key_id: str, revoked_by: str = "cli") -> bool:
        """Disable a key; it stays listed as revoked."""
        try:
            self.client.update(
                index=self.index,
                id=f"key:{key_id}",
                doc={
                    "disabled": True,
                    "revoked_at": format_timestamp(datetime.now(UTC)),
                    "revoked_by": revoked_by,
                },
                refresh="wait_for",
            )
        except NotFoundError:
            return False
        with self._lock:
            self._verified.clear()
        return True

    # ---------------------------------------------------------------- checks

    def authenticate_key(self, token: str) -> Principal:
        """The principal behind an API key, or AuthenticationFailed."""
        key_id, secret = parse_api_key(token)
        cached = self._cached(token)
        if cached:
            return cached
        try:
            stored = self.client.get(index=self.index, id=f"key:{key_id}")["_source"]
        except NotFoundError as error:
            raise AuthenticationFailed("unknown key") from error
        if stored.get("disabled") or not hmac.compare_digest(
            stored["hash"], hash_key_secret(key_id, secret)
        ):
            raise AuthenticationFailed("wrong or revoked key")
        principal = self._principal_of(stored["user"], via_key=key_id)
        self._remember(token, principal)
        return principal

    def authenticate_password(self, name: str, password: str) -> Principal:
        """The user with this password, or AuthenticationFailed."""
        cache_key = f"{name}\x00{password}"
        cached = self._cached(cache_key)
        if cached:
            return cached
        stored = self.user(name)
        # Hash even for unknown users so timing does not reveal which names exist.
        salt = bytes.fromhex(stored["salt"]) if stored else b"\x00" * 16
        candidate = hash_password(password, salt)
        if stored is None or not stored.get("hash") or stored.get("disabled"):
            raise AuthenticationFailed("unknown user")
        if not hmac.compare_digest(stored["hash"], candidate):
            raise AuthenticationFailed("wrong password")
        principal = self._principal_of(name)
        self._remember(cache_key, principal)
        return principal

    def _principal_of(self, name: str, via_key: str | None = None) -> Principal:
        stored = self.user(name)
        if stored is None or stored.get("disabled"):
            raise AuthenticationFailed("user gone or disabled")
        return Principal(
            name=name,
            role=Role(stored["role"]),
            department=stored.get("department"),
            display_name=stored.get("display_name"),
            via_key=via_key,
        )

    def _cache_key(self, secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def _cached(self, secret: str) -> Principal | None:
        with self._lock:
            entry = self._verified.get(self._cache_key(secret))
        if entry and time.monotonic() - entry[0] < VERIFIED_CACHE_SECONDS:
            return entry[1]
        return None

    def _remember(self, secret: str, principal: Principal) -> None:
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[self._cache_key(secret)] = (time.monotonic(), principal)
