"""The Elasticsearch store: connection, index template, time-based indices and retention.

Only core Elasticsearch features are used (composable templates, aliases, bulk, search,
aggregations), so the same code runs on the core-only integ-test-zip and on a full
distribution or a managed cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch, TransportError
from elasticsearch import NotFoundError as ElasticsearchNotFound

from lianfang import local_node
from lianfang.schema import ECS_FIELDS
from lianfang.settings import Settings

TEMPLATE_VERSION = 3
DAY_SUFFIX = "%Y.%m.%d"
# Long PowerShell script blocks and command lines must stay matchable by detection rules;
# 8191 characters keeps a keyword term under Lucene's 32 KiB limit even in 4-byte UTF-8.
LONG_KEYWORD = 8191
CASELESS_NORMALIZER = "lianfang_caseless"


class StoreUnavailable(RuntimeError):
    """No Elasticsearch is configured or reachable."""


def elasticsearch_url(settings: Settings) -> str:
    """The configured cluster, or the running local node."""
    if settings.es_url:
        return settings.es_url
    url = local_node.local_url(settings)
    if url is None:
        raise StoreUnavailable(
            "no Elasticsearch: set LIANFANG_ES_URL or run `lianfang es start` for a local node"
        )
    return url


def connect(settings: Settings) -> Elasticsearch:
    """A client for the configured cluster, with the configured credentials and CA."""
    options: dict[str, Any] = {
        "request_timeout": settings.es_request_timeout,
        "max_retries": 2,
        "retry_on_timeout": True,
    }
    if settings.es_api_key is not None:
        options["api_key"] = settings.es_api_key.get_secret_value()
    elif settings.es_username and settings.es_password is not None:
        options["basic_auth"] = (settings.es_username, settings.es_password.get_secret_value())
    if settings.es_ca_certs is not None:
        options["ca_certs"] = str(settings.es_ca_certs)
    if not settings.es_verify_certs:
        options["verify_certs"] = False
    return Elasticsearch(elasticsearch_url(settings), **options)


def mapping_properties(fields: dict[str, str]) -> dict[str, Any]:
    """Nested `properties` for a flat field -> type table."""
    root: dict[str, Any] = {}
    for dotted, kind in sorted(fields.items()):
        *parents, leaf = dotted.split(".") if dotted != "@timestamp" else ["@timestamp"]
        level = root
        for part in parents:
            level = level.setdefault(part, {"properties": {}})["properties"]
        level[leaf] = _mapping_for(kind)
    return root


def _mapping_for(kind: str) -> dict[str, Any]:
    if kind == "keyword":
        return {"type": "keyword", "ignore_above": LONG_KEYWORD}
    if kind == "caseless_keyword":
        return {
            "type": "keyword",
            "ignore_above": LONG_KEYWORD,
            "fields": {"caseless": {"type": "keyword", "normalizer": CASELESS_NORMALIZER}},
        }
    if kind == "text":
        return {
            "type": "text",
            "fields": {"keyword": {"type": "keyword", "ignore_above": LONG_KEYWORD}},
        }
    if kind == "original":
        # ECS keeps event.original unindexed: retrievable, never searched or aggregated.
        return {"type": "keyword", "index": False, "doc_values": False}
    return {"type": kind}


def install_index(client: Elasticsearch, index: str, fields: dict[str, str]) -> bool:
    """Create a single (non time-based) index with explicit mappings if missing.

    Only the listed fields are indexed; everything else is kept in _source unindexed, so
    free-form parts of a record (timelines, histories) can never conflict in the mapping.
    """
    if client.indices.exists(index=index):
        return False
    client.indices.create(
        index=index,
        settings={"number_of_shards": 1, "number_of_replicas": 0},
        mappings={"dynamic": False, "properties": mapping_properties(fields)},
    )
    return True


def delete_prefix(client: Elasticsearch, prefix: str) -> None:
    """Delete every index and index template of a prefix (throwaway deployments: tests, benchmarks).

    The indices are listed and deleted by name, since clusters refuse wildcard deletes
    (`action.destructive_requires_name`), a few dozen per request so that the URL stays short
    when a backfill left hundreds of daily indices.
    """
    indices = list(client.indices.get(index=f"{prefix}-*", expand_wildcards="all"))
    for start in range(0, len(indices), 50):
        client.indices.delete(index=",".join(indices[start : start + 50]))
    try:
        templates = client.indices.get_index_template(name=f"{prefix}-*")["index_templates"]
    except ElasticsearchNotFound:
        templates = []
    for template in templates:
        client.indices.delete_index_template(name=template["name"])


@dataclass(frozen=True)
class IndexNames:
    """Every index, alias and template name of one deployment, derived from its prefix.

    The one place a name is spelled: stores are given the prefix and ask here for theirs.
    """

    prefix: str

    @property
    def every_index(self) -> str:
        """Every index of the deployment (document counts, clean-up of a throw-away prefix)."""
        return f"{self.prefix}-*"

    @property
    def events_alias(self) -> str:
        """The alias over all daily events indices: what every events search reads."""
        return f"{self.prefix}-events"

    @property
    def events_pattern(self) -> str:
        """The daily events indices (the events template applies to these)."""
        return f"{self.prefix}-events-*"

    @property
    def events_template(self) -> str:
        """The composable index template of the daily events indices."""
        return f"{self.prefix}-events"

    def events_index_for(self, day: date) -> str:
        """The daily index an event of `day` (UTC) is written to."""
        return f"{self.prefix}-events-{day.strftime(DAY_SUFFIX)}"

    def day_of_events_index(self, index: str) -> date | None:
        """The day encoded in a daily events index name, or None for any other index."""
        match = re.fullmatch(re.escape(self.prefix) + r"-events-(\d{4}\.\d{2}\.\d{2})", index)
        if match is None:
            return None
        return datetime.strptime(match.group(1), DAY_SUFFIX).date()

    @property
    def alerts(self) -> str:
        """Alerts, one mutable document per alert id (detection/alerts.py)."""
        return f"{self.prefix}-alerts"

    @property
    def exceptions(self) -> str:
        """Alert exceptions and their suppression records (detection/alert_exceptions.py)."""
        return f"{self.prefix}-exceptions"

    @property
    def incidents(self) -> str:
        """Joint incidents with their timelines and tasks (lianfang/incidents.py)."""
        return f"{self.prefix}-incidents"

    @property
    def principals(self) -> str:
        """Users and API keys (lianfang/principals.py)."""
        return f"{self.prefix}-principals"

    @property
    def audit_template(self) -> str:
        """The index template of the monthly API audit indices (api/audit_trail.py)."""
        return f"{self.prefix}-audit"

    @property
    def audit_pattern(self) -> str:
        """All monthly API audit indices."""
        return f"{self.prefix}-audit-*"

    def audit_index_for(self, timestamp: str) -> str:
        """The monthly audit index of a record stamped `timestamp` (ISO 8601: YYYY-MM-...)."""
        return f"{self.prefix}-audit-{timestamp[:7].replace('-', '.')}"

    @property
    def disclosures(self) -> str:
        """Who was given which shared object, when (sharing/disclosure_audit.py)."""
        return f"{self.prefix}-disclosures"

    @property
    def intel(self) -> str:
        """Received indicators, one document per indicator id (sharing/intel_store.py)."""
        return f"{self.prefix}-intel"

    @property
    def intel_objects(self) -> str:
        """Every valid STIX object version received or published."""
        return f"{self.prefix}-intel-objects"

    @property
    def intel_sightings(self) -> str:
        """The latest version of every STIX sighting."""
        return f"{self.prefix}-intel-sightings"

    @property
    def intel_quarantine(self) -> str:
        """Inbound STIX objects refused by validation, with the reasons."""
        return f"{self.prefix}-intel-quarantine"

    @property
    def intel_outbox(self) -> str:
        """STIX object versions queued for sharing (sharing/stix_outbox.py)."""
        return f"{self.prefix}-intel-outbox"

    @property
    def taxii_objects(self) -> str:
        """STIX objects of the TAXII collections (sharing/object_store.py)."""
        return f"{self.prefix}-taxii-objects"

    @property
    def taxii_status(self) -> str:
        """Status resources of TAXII POST requests (sharing/taxii_status.py)."""
        return f"{self.prefix}-taxii-status"

    @property
    def detection_state(self) -> str:
        """Where the detection scheduler keeps its last completed window (detection/scheduler.py)."""
        return f"{self.prefix}-detection-state"

    def rule_test_names(self, token: str) -> IndexNames:
        """A throw-away deployment for testing a rule on a file; under `every_index`."""
        return IndexNames(f"{self.prefix}-ruletest-{token}")


def events_template_body(names: IndexNames) -> dict[str, Any]:
    """The composable index template for the daily events indices."""
    return {
        "index_patterns": [names.events_pattern],
        "priority": 200,
        "version": TEMPLATE_VERSION,
        "_meta": {"managed_by": "lianfang", "description": "normalised ECS events"},
        "template": {
            "settings": {
                "number_of_shards": 1,
                "number_of_replicas": 0,
                "refresh_interval": "1s",
                "mapping.total_fields.limit": 2000,
                "mapping.total_fields.ignore_dynamic_beyond_limit": True,
                "mapping.depth.limit": 20,
                "mapping.nested_objects.limit": 1000,
                # The lowercase filter is part of the core server (no analysis-common needed).
                "analysis": {
                    "normalizer": {CASELESS_NORMALIZER: {"type": "custom", "filter": ["lowercase"]}}
                },
            },
            "mappings": {
                "dynamic": True,
                "date_detection": False,
                "numeric_detection": False,
                "dynamic_templates": [
                    {
                        "strings_as_keywords": {
                            "match_mapping_type": "string",
                            "mapping": {"type": "keyword", "ignore_above": LONG_KEYWORD},
                        }
                    }
                ],
                "properties": mapping_properties(ECS_FIELDS),
            },
            "aliases": {names.events_alias: {}},
        },
    }


class EventStore:
    """Index lifecycle for events: template installation, index routing and retention."""

    def __init__(self, client: Elasticsearch, names: IndexNames) -> None:
        self.client = client
        self.names = names

    @classmethod
    def from_settings(cls, settings: Settings) -> EventStore:
        """Connect with the settings and use their index prefix."""
        return cls(connect(settings), IndexNames(settings.index_prefix))

    def install_templates(self) -> bool:
        """Install or upgrade the events template; returns True when it was (re)written."""
        try:
            try:
                current = self.client.indices.get_index_template(name=self.names.events_template)
                templates = current.get("index_templates", [])
                if templates and templates[0]["index_template"].get("version") == TEMPLATE_VERSION:
                    return False
            except ElasticsearchNotFound:
                pass
            self.client.indices.put_index_template(
                name=self.names.events_template, **events_template_body(self.names)
            )
        except TransportError as error:
            raise StoreUnavailable(f"Elasticsearch is not reachable: {error}") from error
        return True

    def index_for(self, moment: datetime) -> str:
        """The daily index an event at `moment` belongs to."""
        return self.names.events_index_for(moment.astimezone(UTC).date())

    def events_indices(self) -> list[str]:
        """Every daily events index of this deployment, oldest first."""
        response = self.client.indices.get(
            index=self.names.events_pattern, expand_wildcards="open,closed"
        )
        return sorted(name for name in response if self.names.day_of_events_index(name))

    def delete_older_than(self, days: int, today: date | None = None) -> list[str]:
        """Delete whole daily indices whose day is more than `days` before today."""
        if days < 0:
            raise ValueError(f"retention must be zero or more days, not {days}")
        cutoff = (today or datetime.now(UTC).date()) - timedelta(days=days)
        expired = [
            name
            for name in self.events_indices()
            if (day := self.names.day_of_events_index(name)) is not None and day < cutoff
        ]
        for name in expired:
            self.client.indices.delete(index=name)
        return expired

    def refresh(self) -> None:
        """Make everything written so far searchable (tests and the demo use it)."""
        self.client.indices.refresh(index=self.names.events_pattern, allow_no_indices=True)

    def server_version(self) -> tuple[str, str]:
        """Cluster name and Elasticsearch version.

        Read from the nodes info API because `GET /` lives in the rest-root module, which
        the core-only distribution does not ship.
        """
        info = self.client.nodes.info(
            node_id="_local", metric="_none", filter_path="cluster_name,nodes.*.version"
        )
        versions = sorted({node["version"] for node in info.get("nodes", {}).values()})
        return info["cluster_name"], ",".join(versions)

    def counts_by_index(self) -> dict[str, int]:
        """Document count per index of this deployment."""
        rows = self.client.cat.indices(
            index=self.names.every_index, format="json", h="index,docs.count"
        )
        return {row["index"]: int(row.get("docs.count") or 0) for row in rows}
