"""Settings, loaded once from `LIANFANG_*` environment variables and an optional TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from lianfang.versions import ELASTICSEARCH_VERSION

CONFIG_FILE_VARIABLE = "LIANFANG_CONFIG"
DEFAULT_CONFIG_FILE = "lianfang.toml"


class Settings(BaseSettings):
    """Every tunable of the platform; see the configuration table in README.md."""

    model_config = SettingsConfigDict(env_prefix="LIANFANG_", extra="ignore")

    # Elasticsearch: an existing cluster when es_url is set, otherwise the local node.
    es_url: str | None = None
    es_api_key: SecretStr | None = None
    es_username: str | None = None
    es_password: SecretStr | None = None
    es_ca_certs: Path | None = None
    es_verify_certs: bool = True
    es_request_timeout: float = 30.0

    # The local node provisioned by `lianfang es start`.
    es_version: str = ELASTICSEARCH_VERSION
    es_port: int = 0  # 0: the first free port from 9200
    es_heap: str = "1g"
    es_min_heap: str = "512m"
    es_start_timeout: float = 180.0
    es_run_user: str = "lianfang-es"
    java_home: Path | None = None
    maven_command: str = "mvn"
    allow_jdk_download: bool = True

    # Runtime state: caches, node data, dead letters, spool, checkpoints.
    home_dir: Path = Path(".lianfang")
    index_prefix: str = "lianfang"

    # Normalisation.
    timezone: str = "Asia/Shanghai"
    keep_original: bool = True

    # BulkWriter.
    bulk_max_documents: int = 2000
    bulk_max_bytes: int = 8 * 1024 * 1024
    bulk_max_retries: int = 6
    bulk_backoff_seconds: float = 0.5

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_page_cap: int = 1000

    demo_seed: int = Field(default=20261128)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit arguments win over the environment, which wins over the TOML file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = Path(os.environ.get(CONFIG_FILE_VARIABLE, DEFAULT_CONFIG_FILE))
        if config_file.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def cache_dir(self) -> Path:
        """Downloads and unpacked distributions, shared by every node."""
        return self.home_dir / "cache"

    @property
    def node_dir(self) -> Path:
        """The local Elasticsearch node's configuration, data, logs and pid file."""
        return self.home_dir / "node"

    @property
    def dead_letter_dir(self) -> Path:
        """Where rejected input and documents are written, never dropped."""
        return self.home_dir / "dead-letter"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; callers pass the result down explicitly."""
    return Settings(**overrides)
