"""Shared fixtures: the real Elasticsearch node for the session, a private index prefix per test
(or per module, for data a module's tests only read).

When LIANFANG_ES_URL is set, that cluster is used. Otherwise the local node is started
if it is not running, and stopped at the end if this session started it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from lianfang import local_node
from lianfang.settings import Settings, load_settings
from lianfang.store import EventStore, IndexNames, connect, delete_prefix

TEST_MASKING_KEY = "test-masking-key-not-a-secret"
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    """The URL of the Elasticsearch the integration tests use."""
    settings = load_settings()
    if settings.es_url:
        yield settings.es_url
        return
    state, started = local_node.start(settings, log=lambda _: None)
    try:
        yield state.url
    finally:
        if started:
            local_node.stop(settings)


def _private_settings(cluster_url: str, home: Path) -> Settings:
    """Settings pointing at the test cluster, with a fresh index prefix and this home."""
    return load_settings(
        es_url=cluster_url,
        index_prefix=f"lftest-{uuid.uuid4().hex[:10]}",
        home_dir=home / "home",
        masking_key=TEST_MASKING_KEY,
    )


@contextmanager
def _client_for(settings: Settings) -> Iterator[Elasticsearch]:
    """A client that deletes the prefix's indices and templates when the block ends."""
    es = connect(settings)
    try:
        yield es
    finally:
        prefix = settings.index_prefix
        delete_prefix(es, prefix)
        es.close()


@pytest.fixture
def settings(cluster_url: str, tmp_path: Path) -> Settings:
    """Settings pointing at the test cluster, with a private index prefix and home directory."""
    return _private_settings(cluster_url, tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[Elasticsearch]:
    """A client for the test cluster; deletes this test's indices and templates afterwards."""
    with _client_for(settings) as es:
        yield es


@pytest.fixture(scope="module")
def module_settings(cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Like `settings`, but one prefix for all tests of a module: for data they only read."""
    return _private_settings(cluster_url, tmp_path_factory.mktemp("module"))


@pytest.fixture(scope="module")
def module_client(module_settings: Settings) -> Iterator[Elasticsearch]:
    """Like `client`, for `module_settings`; deletes the module's indices after its last test."""
    with _client_for(module_settings) as es:
        yield es


@pytest.fixture
def store(client: Elasticsearch, settings: Settings) -> EventStore:
    """An EventStore with this test's private prefix."""
    return EventStore(client, IndexNames(settings.index_prefix))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the cluster are marked `integration` automatically."""
    for item in items:
        if "cluster_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
