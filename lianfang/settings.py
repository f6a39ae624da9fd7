"""Settings, loaded once from `LIANFANG_*` environment variables and an optional TOML file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from lianfang.versions import ELASTICSEARCH_VERSION

CONFIG_FILE_VARIABLE = "LIANFANG_CONFIG"
DEFAULT_CONFIG_FILE = "lianfang.toml"

MaskingDetector = Literal["id_number", "mobile", "bank_card", "email"]
ALL_MASKING_DETECTORS: tuple[MaskingDetector, ...] = ("id_number", "mobile", "bank_card", "email")


class TaxiiPeerCollection(BaseModel):
    """One collection of a TAXII peer and which way objects flow through it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    direction: Literal["pull", "push", "both"] = "pull"


class TaxiiPeer(BaseModel):
    """A TAXII 2.1 server this platform exchanges intelligence with (sharing/taxii_sync.py)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    api_root: str  # e.g. https://cert.example/taxii2/api1/
    username: str | None = None
    # Secrets never live in the file: the names of environment variables holding them.
    password_env: str | None = None
    verify_tls: bool = True
    collections: list[TaxiiPeerCollection] = Field(default_factory=list)
    max_tlp: str = "amber"  # the most restrictive TLP level this peer may be sent
    page_size: int = Field(default=500, ge=1, le=10_000)


class IntelSettings(BaseModel):
    """The `[intel]` table: STIX production, feeds, TAXII peers, matching and retro-hunt."""

    model_config = ConfigDict(extra="forbid")

    province_name: str = "省网络安全联防平台"  # the platform's own STIX identity
    default_tlp: str = "amber"  # TLP of published alerts and incidents
    department_tlp: dict[str, str] = Field(default_factory=dict)  # organization.id -> level
    publish_min_severity: Literal["low", "medium", "high", "critical"] = "medium"
    # Indicator validity when an alert becomes an indicator, per STIX observable type.
    validity_days: dict[str, int] = Field(
        default_factory=lambda: {
            "ipv4-addr": 30,
            "ipv6-addr": 30,
            "domain-name": 90,
            "url": 30,
            "email-addr": 90,
            "file": 365,
        }
    )
    # Addresses never published as indicators besides the private/special ranges.
    internal_networks: list[str] = Field(default_factory=list)
    # Matching: indicators at or above this effective confidence are active.
    confidence_threshold: int = Field(default=30, ge=0, le=100)
    default_confidence: int = Field(default=50, ge=0, le=100)  # feeds that state none
    sighting_bonus: int = Field(default=5, ge=0, le=100)  # per distinct sighting
    sighting_bonus_cap: int = Field(default=30, ge=0, le=100)
    decay_grace_days: float = Field(default=30.0, ge=0)  # no decay this long after activity
    decay_half_life_days: float = Field(default=30.0, gt=0)
    match_at_ingest: bool = True
    # Long-running inputs (collector, syslog, HTTP ingest) reload the active indicators
    # at most this often, in the background, so new and revoked ones count without a restart.
    ingest_refresh_seconds: float = Field(default=60.0, gt=0)
    retro_hunt_days: int = Field(default=30, ge=0)
    retro_hunt_budget_seconds: float = Field(default=120.0, gt=0)
    retro_hunt_batch_size: int = Field(default=5000, ge=1, le=65_000)
    matcher_max_candidates: int = Field(default=5000, ge=1)
    # TAXII client.
    peers: list[TaxiiPeer] = Field(default_factory=list)
    sync_retries: int = Field(default=4, ge=0)
    sync_backoff_seconds: float = Field(default=1.0, ge=0)
    sync_timeout_seconds: float = Field(default=30.0, gt=0)
    # Offline exchange: public keys (PEM) whose signed bundles `intel import` accepts.
    trusted_keys_dir: Path | None = None


class MaskingOverride(BaseModel):
    """One department's masking policy; a key left out keeps the `[masking]` value."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    detectors: list[MaskingDetector] | None = None
    fields: list[str] | None = None
    redact_fields: list[str] | None = None


class MaskingSettings(BaseModel):
    """The `[masking]` table: personal-data masking at ingest (collectors/masking.py)."""

    # Typos in a privacy policy must fail loudly, not silently switch a detector off.
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Without `masking_key`, masking refuses to run unless this allows a random per-run key.
    ephemeral_key: bool = False
    detectors: list[MaskingDetector] = Field(default_factory=lambda: list(ALL_MASKING_DETECTORS))
    fields: list[str] = Field(default_factory=list)  # scanned besides the built-in text fields
    redact_fields: list[str] = Field(default_factory=list)  # replaced whole by a token
    departments: dict[str, MaskingOverride] = Field(default_factory=dict)


class RuleOverride(BaseModel):
    """Changes to one behavioural rule (globally or for one department); unset keys keep the rule's."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    severity: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class DetectionRuleSettings(BaseModel):
    """The `[detection_rules]` table: behavioural rules, their overrides and `detect run`."""

    model_config = ConfigDict(extra="forbid")

    rules_dirs: list[Path] = Field(default_factory=list)  # extra YAML rules; same id replaces
    overrides_file: Path | None = None  # YAML with `rules:` and `departments:` like below
    rules: dict[str, RuleOverride] = Field(default_factory=dict)  # rule id -> override
    departments: dict[str, dict[str, RuleOverride]] = Field(default_factory=dict)  # org id -> ...
    every: str = "5m"  # `detect run` interval
    window: str = "1h"  # first run (no saved state) and catch-up chunk length
    overlap: str = "10m"  # re-read before the last completed end, for late events
    # `lianfang serve` also runs the scheduler (pending windows every `every`) in the background.
    schedule_in_serve: bool = False


class AnomalySettings(BaseModel):
    """The `[anomaly]` table: feature sets, detector and alert threshold of anomaly detection."""

    model_config = ConfigDict(extra="forbid")

    feature_sets_dir: Path | None = None  # extra YAML feature sets; same name replaces
    detector: str = "ensemble"  # detection/anomaly_detectors.py registry name
    threshold_quantile: float = 0.999  # alert above this quantile of the baseline's scores
    per_department: bool = True  # one model per department (else one pooled model)


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

    # Enrichment at ingest (collectors/enrichment.py).
    asset_inventory_path: Path | None = None
    masking: MaskingSettings = Field(default_factory=MaskingSettings)
    masking_key: SecretStr = SecretStr("")

    # BulkWriter.
    bulk_max_documents: int = 2000
    bulk_max_bytes: int = 8 * 1024 * 1024
    bulk_max_retries: int = 6
    bulk_backoff_seconds: float = 0.5

    # Collector runtime: the most unacknowledged data the disk spool may hold (bytes)
    # before inputs are slowed down (files) or must drop (datagrams); 1 GiB by default.
    spool_max_bytes: int = 1024 * 1024 * 1024

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_page_cap: int = 1000
    # Largest request body of the API (413 above); the TAXII server has its own
    # `max_content_length` (TAXII configuration) and is exempt from this one.
    api_max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Origins allowed to call the API from a browser (CORS); empty: same-origin only.
    api_cors_origins: list[str] = Field(default_factory=list)
    # POST /api/v1/ingest (api/routes/ingest.py): largest body (413 above; it replaces
    # api_max_body_bytes there), most records in one batch (413 above), and records per
    # minute per principal (429 above; 0: no limit).
    api_ingest_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    api_ingest_max_records: int = Field(default=50_000, ge=1)
    api_ingest_records_per_minute: int = Field(default=600_000, ge=0)
    # Joint incidents: where assignment and escalation notifications are POSTed.
    webhook_urls: list[str] = Field(default_factory=list)
    # TAXII 2.1 server (sharing/taxii_collections.py): server, API root, limits and collections;
    # unset means the packaged default (one community collection, one per demo department).
    taxii_collections_path: Path | None = None
    # Threat intelligence: STIX production, feeds, TAXII peers, matching (sharing/).
    intel: IntelSettings = Field(default_factory=IntelSettings)

    # Behavioural rules and the detection scheduler (detection/).
    detection_rules: DetectionRuleSettings = Field(default_factory=DetectionRuleSettings)
    # Anomaly detection (detection/anomaly_*.py): models live under home_dir/models.
    anomaly: AnomalySettings = Field(default_factory=AnomalySettings)
    # Sigma rules (detection/sigma/): a SigmaHQ-layout folder; unset until the user names one.
    sigma_rules_dir: Path | None = None

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

    @property
    def spool_dir(self) -> Path:
        """The collector's disk spool: parsed events waiting for Elasticsearch."""
        return self.home_dir / "spool"

    @property
    def checkpoint_dir(self) -> Path:
        """The collector's per-file checkpoints."""
        return self.home_dir / "checkpoints"

    @property
    def collector_status_file(self) -> Path:
        """Where a running collector writes its counters for `lianfang collect status`."""
        return self.home_dir / "collector-status.json"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; callers pass the result down explicitly."""
    return Settings(**overrides)
