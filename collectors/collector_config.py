"""The collector configuration: the `[collector]` tables of a settings file (TOML).

`lianfang collect run --config FILE` reads FILE twice: as the platform settings (masking,
asset inventory, spool size, Elasticsearch, ... exactly as `LIANFANG_CONFIG=FILE` would)
and for its `[collector]` tables, described here:

    [collector.departments.<id>]     name, sector: the departments inputs and peers name
    [[collector.files]]              name, paths (files or globs), format, department, follow
    [[collector.syslog]]             name, transport (udp | tcp | tls), host, port, format,
                                     department, tls_cert, tls_key, tls_client_ca,
                                     max_connections, max_message_bytes, idle_timeout_seconds
    [collector.peers]                "<CIDR>" = "<department id>" for syslog senders

Unknown keys, undefined departments, malformed networks, unknown formats, TLS without a
certificate and two listeners on one port are refused with the file and the reason.
Relative paths are taken from the working directory, like every other setting.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, TomlConfigSettingsSource

from collectors.formats import UnknownFormat, get_format
from collectors.longest_match import parse_network
from collectors.normalise import Department
from lianfang.settings import Settings

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_IDLE_TIMEOUT_SECONDS = 600.0
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


class CollectorConfigError(ValueError):
    """A collector configuration that cannot be used; carries the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class DepartmentEntry(BaseModel):
    """A department that inputs and peer networks refer to by its id."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    sector: str | None = None


class FileInputConfig(BaseModel):
    """Files and globs read with one format on behalf of one department."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    paths: list[str] = Field(min_length=1)
    format: str | None = None  # None: detected per file
    department: str | None = None
    follow: bool = True


class SyslogListenerConfig(BaseModel):
    """One syslog listener: a UDP port, or a TCP port with or without TLS."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    transport: Literal["udp", "tcp", "tls"] = "udp"
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)  # 0: any free port (tests)
    format: str | None = None  # None: detected per peer
    department: str | None = None  # for peers outside `[collector.peers]`
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: clients must present a certificate it signed
    max_connections: int = Field(default=DEFAULT_MAX_CONNECTIONS, ge=1, le=100_000)
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=480, le=16 * 1024**2)
    idle_timeout_seconds: float = Field(default=DEFAULT_IDLE_TIMEOUT_SECONDS, gt=0)

    @model_validator(mode="after")
    def _tls_needs_a_certificate(self) -> SyslogListenerConfig:
        has_tls_files = any((self.tls_cert, self.tls_key, self.tls_client_ca))
        if self.transport == "tls" and not (self.tls_cert and self.tls_key):
            raise ValueError("a tls listener needs tls_cert and tls_key")
        if self.transport != "tls" and has_tls_files:
            raise ValueError(
                f"tls_cert, tls_key and tls_client_ca need transport = 'tls', not {self.transport!r}"
            )
        return self

    @property
    def label(self) -> str:
        """The listener's name, or `syslog-<transport>-<port>`."""
        return self.name or f"syslog-{self.transport}-{self.port}"


class CollectorConfig(BaseModel):
    """Every input of one collector, and the departments they collect for."""

    model_config = ConfigDict(extra="forbid")

    departments: dict[str, DepartmentEntry] = Field(default_factory=dict)
    files: list[FileInputConfig] = Field(default_factory=list)
    syslog: list[SyslogListenerConfig] = Field(default_factory=list)
    peers: dict[str, str] = Field(default_factory=dict)  # CIDR -> department id

    @model_validator(mode="after")
    def _consistent(self) -> CollectorConfig:
        problems = [*self._reference_problems(), *self._listener_problems()]
        for item in [*self.files, *self.syslog]:
            if item.format is not None:
                try:
                    get_format(item.format)
                except UnknownFormat as error:
                    problems.append(str(error))
        for network in self.peers:
            try:
                parse_network(network)
            except ValueError as error:
                problems.append(f"peers: {network!r} is not a network: {error}")
        names = [name for name in self.input_names if name]
        doubles = sorted({name for name in names if names.count(name) > 1})
        if doubles:
            problems.append(f"input names used twice: {', '.join(doubles)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _reference_problems(self) -> list[str]:
        problems = []
        known = set(self.departments)
        references = [
            *((f"files[{i}]", item.department) for i, item in enumerate(self.files)),
            *((f"syslog[{i}]", item.department) for i, item in enumerate(self.syslog)),
            *((f"peers[{network!r}]", department) for network, department in self.peers.items()),
        ]
        for where, department in references:
            if department is not None and department not in known:
                problems.append(
                    f"{where}: department {department!r} is not in [collector.departments]"
                )
        return problems

    def _listener_problems(self) -> list[str]:
        taken: dict[tuple[str, str, int], str] = {}
        problems = []
        for listener in self.syslog:
            if listener.port == 0:
                continue
            family = "udp" if listener.transport == "udp" else "tcp"
            key = (family, listener.host, listener.port)
            if key in taken:
                problems.append(
                    f"{listener.label} and {taken[key]} both listen on {family} {listener.host}:{listener.port}"
                )
            taken[key] = listener.label
        return problems

    @property
    def input_names(self) -> list[str]:
        """The name of every input, in order (files first)."""
        return [
            *(item.name or f"files-{index}" for index, item in enumerate(self.files)),
            *(item.label for item in self.syslog),
        ]

    def department(self, department_id: str | None) -> Department | None:
        """The `Department` record of an id defined under `[collector.departments]`."""
        if department_id is None:
            return None
        entry = self.departments[department_id]
        return Department(department_id, entry.name, entry.sector)

    def peer_networks(self) -> dict[str, Department]:
        """`[collector.peers]` with the departments resolved."""
        networks = {}
        for network, department_id in self.peers.items():
            entry = self.departments[department_id]
            networks[network] = Department(department_id, entry.name, entry.sector)
        return networks


def load_collector_config(path: Path) -> CollectorConfig:
    """The `[collector]` tables of a TOML file; CollectorConfigError when unusable."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CollectorConfigError(path, f"cannot read it: {error.strerror or error}") from error
    except tomllib.TOMLDecodeError as error:
        raise CollectorConfigError(path, f"not valid TOML: {error}") from error
    table = data.get("collector")
    if not isinstance(table, dict):
        raise CollectorConfigError(path, "no [collector] table")
    try:
        config = CollectorConfig.model_validate(table)
    except ValidationError as error:
        reasons = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'collector'}: "
            f"{item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        )
        raise CollectorConfigError(path, reasons) from error
    if not config.files and not config.syslog:
        raise CollectorConfigError(path, "[collector] defines no input (files or syslog)")
    return config


def settings_from_file(path: Path, **overrides: Any) -> Settings:
    """The settings in a TOML file, as `LIANFANG_CONFIG=<path>` gives them (the environment wins)."""
    if not path.is_file():
        raise CollectorConfigError(path, "no such file")

    class FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=path),
            )

    try:
        return FileSettings(**overrides)
    except ValidationError as error:
        reasons = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: "
            f"{item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        )
        raise CollectorConfigError(path, reasons) from error
    except tomllib.TOMLDecodeError as error:
        raise CollectorConfigError(path, f"not valid TOML: {error}") from error
