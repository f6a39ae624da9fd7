"""The TAXII server's configuration: server limits, the API root and its collections.

Read from the TOML (or YAML) file named by the `taxii_collections_path` setting, or from the
packaged `taxii_collections.default.toml` (one community collection, one per demo
department), which documents the shape. Who may read and write a collection is decided here;
what TLP level may be published into it is decided by `sharing.tlp`.
"""

from __future__ import annotations

import re
import tomllib
import uuid
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lianfang.principals import Principal, Role
from sharing.object_validation import VALIDATORS
from sharing.tlp import PublicationTarget, TlpLevel, parse_level

DEFAULT_CONFIG = Path(__file__).with_name("taxii_collections.default.toml")
_ENTRY = re.compile(r"\*|(department|partner):[A-Za-z0-9._-]+|role:[a-z_]+")
_ROLES = {str(role) for role in Role}


class TaxiiConfigError(ValueError):
    """A TAXII configuration file that cannot be used; carries the path and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _check_entries(entries: list[str]) -> list[str]:
    for entry in entries:
        if not _ENTRY.fullmatch(entry):
            raise ValueError(
                f"{entry!r} is not an access entry (department:<id>, partner:<id>, role:<role>, *)"
            )
        if entry.startswith("role:") and entry[5:] not in _ROLES:
            raise ValueError(f"{entry!r} names no role; roles are {sorted(_ROLES)}")
    return entries


class ServerSettings(BaseModel):
    """The `[server]` table: discovery information and limits."""

    model_config = ConfigDict(extra="forbid")

    title: str = "Lianfang TAXII 2.1"
    description: str | None = None
    contact: str | None = None
    page_cap: int = Field(default=1000, ge=1, le=10_000)
    max_content_length: int = Field(default=100 * 1024 * 1024, ge=1024)
    post_batch_size: int = Field(default=1000, ge=1, le=10_000)
    post_wait_seconds: float = Field(default=30.0, ge=0)
    unmarked_tlp: str = "amber"
    validator: str = "minimal"

    @field_validator("unmarked_tlp")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return parse_level(value).value

    @field_validator("validator")
    @classmethod
    def _known_validator(cls, value: str) -> str:
        if value not in VALIDATORS:
            raise ValueError(f"no STIX validator named {value!r}; known: {sorted(VALIDATORS)}")
        return value

    @property
    def unmarked_level(self) -> TlpLevel:
        """The level objects without a TLP marking are treated as."""
        return TlpLevel(self.unmarked_tlp)


class ApiRootSettings(BaseModel):
    """The `[api_root]` table: the one API root, served at /taxii2/<name>/."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="lianfang", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    title: str = "Lianfang threat sharing"
    description: str | None = None


class CollectionConfig(BaseModel):
    """One collection: identity, access lists, named members and whether it is communal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str
    description: str | None = None
    alias: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    community: bool = False
    department: str | None = None
    members: list[str] = Field(default_factory=list)
    can_read: list[str] = Field(default_factory=list)
    can_write: list[str] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _uuid4(cls, value: str) -> str:
        try:
            parsed = uuid.UUID(value)
        except ValueError as error:
            raise ValueError(f"{value!r} is not a UUID") from error
        if parsed.version != 4 or str(parsed) != value:
            raise ValueError(f"{value!r} must be a lowercase version 4 UUID (TAXII identifier)")
        return value

    @field_validator("members", "can_read", "can_write")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        return _check_entries(value)

    @field_validator("members")
    @classmethod
    def _named(cls, value: list[str]) -> list[str]:
        if any(not entry.startswith(("department:", "partner:")) for entry in value):
            raise ValueError("members are named organisations: department:<id> or partner:<id>")
        return value

    def _matches(self, entries: list[str], principal: Principal) -> bool:
        for entry in entries:
            if entry == "*":
                return True
            kind, _, name = entry.partition(":")
            if kind == "role" and principal.role == name:
                return True
            if principal.department != name:
                continue
            if kind == "partner" and principal.role is Role.SHARING_PARTNER:
                return True
            if kind == "department" and principal.role is not Role.SHARING_PARTNER:
                return True
        return False

    def can_read_for(self, principal: Principal) -> bool:
        """May this principal get objects, the manifest and versions?"""
        if principal.role in (Role.ADMINISTRATOR, Role.PROVINCE_ANALYST):
            return True
        return self._matches(self.can_read, principal)

    def can_write_for(self, principal: Principal) -> bool:
        """May this principal add objects?"""
        if principal.role is Role.ADMINISTRATOR:
            return True
        return self._matches(self.can_write, principal)

    def visible_to(self, principal: Principal) -> bool:
        """A collection the principal can neither read nor write is not even listed."""
        return self.can_read_for(principal) or self.can_write_for(principal)

    @property
    def publication_target(self) -> PublicationTarget:
        """The collection as the TLP policy sees it."""
        return PublicationTarget(
            community=self.community,
            department=self.department,
            members=frozenset(self.members),
            readers=frozenset(self.can_read),
        )


class TaxiiConfig(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid")

    server: ServerSettings = Field(default_factory=ServerSettings)
    api_root: ApiRootSettings = Field(default_factory=ApiRootSettings)
    collections: list[CollectionConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> TaxiiConfig:
        ids = [c.id for c in self.collections]
        aliases = [c.alias for c in self.collections if c.alias]
        if len(set(ids)) != len(ids):
            raise ValueError("collection ids must be unique")
        if len(set(aliases)) != len(aliases):
            raise ValueError("collection aliases must be unique within the API root")
        if set(aliases) & set(ids):
            raise ValueError("an alias may not equal another collection's id")
        return self

    def collection(self, id_or_alias: str) -> CollectionConfig | None:
        """The collection with this id or alias."""
        for collection in self.collections:
            if id_or_alias in (collection.id, collection.alias):
                return collection
        return None


def load_taxii_config(path: Path | None = None) -> TaxiiConfig:
    """Read and check the configuration file (the packaged default when path is None)."""
    source = path or DEFAULT_CONFIG
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise TaxiiConfigError(source, f"cannot be read: {error.strerror or error}") from error
    try:
        if source.suffix.lower() in (".yaml", ".yml"):
            data: Any = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise TaxiiConfigError(source, f"is not valid TOML/YAML: {error}") from error
    try:
        return TaxiiConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise TaxiiConfigError(source, problems) from error
