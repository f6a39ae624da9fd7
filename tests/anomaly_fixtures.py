"""Events and runs shared by the anomaly tests: a baseline day and a scored day of finance
flows (with an exfiltration at night), indexed into the real node, trained and scored."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.helpers import bulk

from detection.alerts import AlertStore
from detection.anomaly_models import ModelRepository
from detection.anomaly_scoring import (
    AnomalyRunReport,
    score_elasticsearch_window,
    train_from_elasticsearch,
)
from detection.feature_sets import FeatureSet
from lianfang.schema import format_timestamp
from lianfang.store import EventStore

BASELINE = datetime(2026, 11, 26, tzinfo=UTC)
SCORED = BASELINE + timedelta(days=1)
EXFILTRATING = "10.20.1.14"


def flows(day: datetime, seed: int, exfiltration: bool) -> list[dict[str, Any]]:
    """A day of flows from 30 finance hosts; optionally 2.4 GB out from one at 03:00 local."""
    rng = random.Random(seed)
    documents = []
    for host in range(30):
        source = f"10.20.1.{host + 1}"
        for hour in range(24):
            busy = 1 <= hour <= 10  # 09:00-18:00 in Shanghai
            for _ in range(rng.randint(8, 20) if busy else rng.randint(0, 3)):
                moment = day + timedelta(hours=hour, seconds=rng.uniform(0, 3599))
                documents.append(flow(moment, source, int(rng.lognormvariate(8, 1)), rng))
    if exfiltration:
        start = day + timedelta(hours=19, minutes=5)  # 03:05 local the next morning
        for number in range(24):
            documents.append(
                flow(
                    start + timedelta(minutes=2 * number),
                    EXFILTRATING,
                    100_000_000,
                    rng,
                    "185.220.101.9",
                )
            )
    return documents


def flow(
    moment: datetime, source: str, sent: int, rng: random.Random, destination: str | None = None
) -> dict[str, Any]:
    """One finance flow of `sent` bytes (to a random internal host unless `destination`)."""
    return {
        "@timestamp": format_timestamp(moment),
        "event": {
            "kind": "event",
            "category": ["network"],
            "outcome": "success",
            "dataset": "flow",
        },
        "organization": {"id": "finance"},
        "source": {"ip": source, "bytes": sent},
        "destination": {
            "ip": destination or f"10.20.9.{rng.randint(1, 50)}",
            "port": rng.choice([443, 80, 22]),
        },
    }


def index_events(client: Elasticsearch, store: EventStore, documents: list[dict[str, Any]]) -> None:
    """Index these documents into their daily event indices and refresh."""
    store.install_templates()
    bulk(
        client,
        (
            {
                "_index": store.index_for(
                    datetime.fromisoformat(d["@timestamp"].replace("Z", "+00:00"))
                ),
                "_op_type": "create",
                "_source": d,
            }
            for d in documents
        ),
    )
    store.refresh()


def train_on_baseline(
    client: Elasticsearch,
    store: EventStore,
    feature_set: FeatureSet,
    repository: ModelRepository,
    end: datetime = SCORED,
    **options: Any,
) -> AnomalyRunReport:
    """Train the feature set's models on [BASELINE, end) of the indexed events."""
    return train_from_elasticsearch(
        client, store.names.events_alias, [feature_set], BASELINE, end, repository, **options
    )


def score_scored_day(
    client: Elasticsearch,
    store: EventStore,
    feature_set: FeatureSet,
    repository: ModelRepository,
    alerts: AlertStore,
) -> AnomalyRunReport:
    """Score the whole SCORED day with the trained models, raising alerts."""
    return score_elasticsearch_window(
        client,
        store.names.events_alias,
        [feature_set],
        SCORED,
        SCORED + timedelta(days=1),
        repository,
        alerts,
    )
