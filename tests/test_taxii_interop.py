"""The official OASIS client (taxii2-client, v21) holds a full conversation with our server,
served by uvicorn on a free loopback port: discovery, API root, collections, add objects and
poll the status, get objects with each filter and with paging, manifest, versions, delete."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import uvicorn
from taxii2client.v21 import ApiRoot, Server, as_pages

from api.app import create_app
from lianfang.principals import PrincipalStore, Role
from lianfang.settings import Settings
from sharing.tlp import TLP_2_IDS, TlpLevel, marking_definition

PASSWORD = "finance-password-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def base_url(settings: Settings, client: Any) -> Iterator[str]:
    """Our server on a loopback port, in a background thread, with a finance analyst."""
    principals = PrincipalStore(client, settings.index_prefix)
    principals.install()
    principals.add_user("fin", Role.DEPARTMENT_ANALYST, "finance", password=PASSWORD)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def indicator(modified: str = "2024-01-01T00:00:00.000Z", **extra: Any) -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{uuid.uuid4()}",
        "created": "2024-01-01T00:00:00.000Z",
        "modified": modified,
        "pattern": "[domain-name:value = 'c2.example.net']",
        "pattern_type": "stix",
        "valid_from": "2024-01-01T00:00:00Z",
        "object_marking_refs": [TLP_2_IDS[TlpLevel.AMBER]],
        **extra,
    }


def test_taxii2_client_full_conversation(base_url: str) -> None:
    server = Server(f"{base_url}/taxii2/", user="fin", password=PASSWORD)
    assert server.title == "Lianfang TAXII 2.1"
    assert len(server.api_roots) == 1
    api_root: ApiRoot = server.default
    assert api_root.url == f"{base_url}/taxii2/lianfang/"
    assert "application/taxii+json;version=2.1" in api_root.versions
    assert api_root.max_content_length > 0
    collections = {c.alias: c for c in api_root.collections}
    assert set(collections) == {"community", "finance"}  # only what finance may use
    collection = collections["finance"]
    assert collection.can_read and collection.can_write

    # Add objects without waiting, then poll the status the way the client does.
    first = indicator()
    others = [indicator() for _ in range(20)]
    marking = marking_definition(TlpLevel.AMBER)
    envelope = {"objects": [first, *others, {"type": "indicator", "id": "bad"}]}
    status = collection.add_objects(envelope, wait_for_completion=False)
    status.wait_until_final(poll_interval=0.2, timeout=30)
    assert status.status == "complete"
    assert status.total_count == 22 and status.success_count == 21 and status.failure_count == 1
    status.refresh()
    assert status.failures[0]["id"] == "bad"
    again = api_root.get_status(status.id)
    assert again.success_count == 21
    # Two more versions of the first indicator and the AMBER marking definition itself.
    later = {**first, "modified": "2024-02-01T00:00:00.000Z"}
    latest = {**first, "modified": "2024-03-01T00:00:00.000Z"}
    done = collection.add_objects({"objects": [later, latest, json.loads(marking.serialize())]})
    assert done.status == "complete" and done.success_count == 3

    # Get objects with each filter.
    def modified(**filters: Any) -> list[str]:
        envelope = collection.get_objects(id=first["id"], **filters)
        return sorted(o["modified"] for o in envelope.get("objects", []))

    assert modified() == ["2024-03-01T00:00:00.000Z"]
    assert modified(version="first") == ["2024-01-01T00:00:00.000Z"]
    assert modified(version="last") == ["2024-03-01T00:00:00.000Z"]
    assert len(modified(version="all")) == 3
    assert modified(version="2024-02-01T00:00:00.000Z") == ["2024-02-01T00:00:00.000Z"]
    assert modified(spec_version="2.1") == ["2024-03-01T00:00:00.000Z"]
    assert modified(spec_version="2.0") == []
    typed = collection.get_objects(type="marking-definition")["objects"]
    assert [o["id"] for o in typed] == [marking.id]
    manifest = collection.get_manifest(version="all")["objects"]
    first_added = manifest[0]["date_added"]
    newer = collection.get_objects(added_after=first_added, version="all")["objects"]
    assert {o["modified"] for o in newer if o["id"] == first["id"]} == {
        "2024-02-01T00:00:00.000Z",
        "2024-03-01T00:00:00.000Z",
    }

    # Paging with the client's own helper: every object once, in date-added order.
    pages = list(as_pages(collection.get_objects, per_request=4))
    ids = [o["id"] for page in pages for o in page.get("objects", [])]
    assert len(ids) == len(set(ids)) == 22 and len(pages) == 6
    records = [
        r
        for page in as_pages(collection.get_manifest, per_request=5, version="all")
        for r in page.get("objects", [])
    ]
    assert len(records) == 24
    assert [r["date_added"] for r in records] == sorted(r["date_added"] for r in records)

    # One object, its versions, delete.
    one = collection.get_object(first["id"], version="all")["objects"]
    assert len(one) == 3
    versions = collection.object_versions(first["id"])["versions"]
    assert sorted(versions) == [
        "2024-01-01T00:00:00.000Z",
        "2024-02-01T00:00:00.000Z",
        "2024-03-01T00:00:00.000Z",
    ]
    collection.delete_object(first["id"], version="2024-03-01T00:00:00.000Z")
    assert (
        collection.get_object(first["id"])["objects"][0]["modified"] == "2024-02-01T00:00:00.000Z"
    )
    collection.delete_object(first["id"])
    with pytest.raises(requests.HTTPError) as gone:
        collection.get_object(first["id"])
    assert gone.value.response.status_code == 404
    assert gone.value.response.json()["http_status"] == "404"
