"""What request handlers receive: the settings, the Elasticsearch client, the index names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch
from fastapi import Request

from lianfang.principals import PrincipalStore
from lianfang.settings import Settings
from lianfang.store import EventStore, IndexNames


@dataclass
class AppServices:
    """Created once at start-up and shared by every request."""

    settings: Settings
    client: Elasticsearch
    store: EventStore
    principals: PrincipalStore
    failure_limiter: Any
    audit: Any
    webhooks: Any
    # Counts dead letters for the situation overview (lianfang/collection_health.py).
    dead_letter_counter: Any = None

    @property
    def names(self) -> IndexNames:
        return self.store.names


def services(request: Request) -> AppServices:
    """The app's services (a FastAPI dependency)."""
    return request.app.state.services
