"""The TAXII 2.1 server against the real node: every endpoint, filter, paging, errors,
rights per department and partner, the TLP policy and the disclosure audit."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes.taxii import MOUNT_PATH, TaxiiServices
from lianfang.principals import Principal, PrincipalStore, Role
from lianfang.settings import load_settings
from lianfang.store import connect
from sharing.object_store import ObjectQuery
from sharing.taxii_intake import AddObjectsJob, IntakeLimits
from sharing.taxii_status import StatusHeader
from sharing.taxii_timestamps import now_micros
from sharing.tlp import TLP_2_IDS, TlpLevel

ROOT = "/taxii2/lianfang"
TAXII = "application/taxii+json;version=2.1"
COMMUNITY = "aa46b726-f70f-46db-ad03-e5ad46538be3"
CONFIG = """
[server]
page_cap = 50
max_content_length = 8388608
post_batch_size = 1000
post_wait_seconds = {wait}

[api_root]
name = "lianfang"
title = "test root"

[[collections]]
id = "aa46b726-f70f-46db-ad03-e5ad46538be3"
alias = "community"
title = "Community"
community = true
can_read = ["*"]
can_write = ["role:department_analyst", "role:sharing_partner"]

[[collections]]
id = "130ad1e7-633b-4e13-b5fe-ccde1e74e591"
alias = "finance"
title = "Finance"
department = "finance"
members = ["department:finance"]
can_read = ["department:finance"]
can_write = ["department:finance"]

[[collections]]
id = "2c1081ef-2441-4689-88f1-80bc8074bbbd"
alias = "energy"
title = "Energy"
department = "energy"
members = ["department:energy"]
can_read = ["department:energy"]
can_write = ["department:energy"]

[[collections]]
id = "5b0a5a3e-8f0c-4b59-9a43-3c1f6d1b7e01"
alias = "grid-group"
title = "Finance and the grid operator"
members = ["department:finance", "partner:grid"]
can_read = ["department:finance", "partner:grid"]
can_write = ["department:finance", "partner:grid"]

[[collections]]
id = "0d7c2a58-2b7e-4a4f-8f65-8e7b1c2d3e4f"
alias = "drop-box"
title = "Write-only drop box"
department = "finance"
members = ["department:finance"]
can_write = ["department:finance"]

[[collections]]
id = "9a3f1e2d-4c5b-4a69-8b7c-1d2e3f4a5b6c"
alias = "paging"
title = "Paging"
members = ["department:finance"]
can_read = ["department:finance"]
can_write = ["department:finance"]
"""


def indicator(
    modified: str = "2024-01-01T00:00:00.000Z", tlp: TlpLevel | None = None, **extra: Any
) -> dict[str, Any]:
    stix: dict[str, Any] = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{uuid.uuid4()}",
        "created": "2024-01-01T00:00:00.000Z",
        "modified": modified,
        "pattern": "[ipv4-addr:value = '203.0.113.77']",
        "pattern_type": "stix",
        "valid_from": "2024-01-01T00:00:00Z",
    }
    if tlp is not None:
        stix["object_marking_refs"] = [TLP_2_IDS[tlp]]
    return {**stix, **extra}


@pytest.fixture(scope="module")
def taxii_env(
    cluster_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One index prefix, users and keys for the module (TAXII state is per collection)."""
    home = tmp_path_factory.mktemp("taxii")
    config = home / "taxii.toml"
    config.write_text(CONFIG.format(wait=30.0))
    settings = load_settings(
        es_url=cluster_url,
        index_prefix=f"lftest-taxii-{uuid.uuid4().hex[:8]}",
        home_dir=home / "home",
        taxii_collections_path=config,
    )
    es = connect(settings)
    principals = PrincipalStore(es, settings.index_prefix)
    principals.install()
    people = {
        "admin": (Role.ADMINISTRATOR, None, None),
        "fin": (Role.DEPARTMENT_ANALYST, "finance", "finance-password-1"),
        "ener": (Role.DEPARTMENT_ANALYST, "energy", None),
        "prov": (Role.PROVINCE_ANALYST, None, None),
        "grid": (Role.SHARING_PARTNER, "grid", None),
    }

    def enrol(name: str) -> str:
        role, department, password = people[name]
        principals.add_user(name, role, department, password=password)
        return principals.create_key(name)

    # Each write waits for a refresh: enrol everybody at once.
    with ThreadPoolExecutor(max_workers=len(people)) as pool:
        keys = dict(zip(people, pool.map(enrol, people), strict=True))
    try:
        yield {"settings": settings, "es": es, "keys": keys, "home": home}
    finally:
        for index in es.indices.get(index=f"{settings.index_prefix}-*", expand_wildcards="all"):
            es.indices.delete(index=index)
        templates = es.options(ignore_status=404).indices.get_index_template(
            name=f"{settings.index_prefix}-*"
        )
        for template in templates.get("index_templates", []):
            es.indices.delete_index_template(name=template["name"])
        es.close()


@pytest.fixture(scope="module")
def server(taxii_env: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(taxii_env["settings"])) as client:
        yield client


class As:
    """Requests of one principal with TAXII headers."""

    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.headers = {"Accept": TAXII, "Authorization": f"Bearer {key}"}

    def get(self, path: str, **params: Any):
        return self.client.get(ROOT + path, headers=self.headers, params=params)

    def post(
        self,
        path: str,
        objects: list[dict[str, Any]] | None = None,
        content: bytes | None = None,
        **headers: str,
    ):
        body = content if content is not None else json.dumps({"objects": objects}).encode()
        return self.client.post(
            ROOT + path, headers={**self.headers, "Content-Type": TAXII, **headers}, content=body
        )

    def delete(self, path: str, **params: Any):
        return self.client.delete(ROOT + path, headers=self.headers, params=params)

    def publish(self, collection: str, objects: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.post(f"/collections/{collection}/objects/", objects)
        assert response.status_code == 202, response.text
        assert response.headers["content-type"] == TAXII
        return response.json()


@pytest.fixture(scope="module")
def users(server: TestClient, taxii_env: dict[str, Any]) -> dict[str, As]:
    return {name: As(server, key) for name, key in taxii_env["keys"].items()}


def all_pages(user: As, path: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Follow `next` to the end; the objects (or manifest records) and the number of pages."""
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        response = user.get(path, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        items.extend(body.get("objects", []))
        if not body.get("more"):
            assert "next" not in body
            return items, pages
        params["next"] = body["next"]


def test_discovery_api_root_and_basic_authentication(
    server: TestClient, users: dict[str, As]
) -> None:
    response = server.get("/taxii2/", headers={"Accept": TAXII}, auth=("fin", "finance-password-1"))
    assert response.status_code == 200
    assert response.headers["content-type"] == TAXII
    discovery = response.json()
    assert (
        discovery["api_roots"] == ["/taxii2/lianfang/"]
        and discovery["default"] == "/taxii2/lianfang/"
    )
    root = users["fin"].get("/").json()
    assert root["versions"] == [TAXII] and root["max_content_length"] == 8388608
    assert users["fin"].get("/", **{}).status_code == 200
    missing = server.get("/taxii2/elsewhere/", headers=users["fin"].headers)
    assert missing.status_code == 404 and missing.json()["http_status"] == "404"


def test_authentication_and_media_type_errors_are_taxii(
    server: TestClient, users: dict[str, As]
) -> None:
    anonymous = server.get("/taxii2/", headers={"Accept": TAXII})
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == TAXII
    assert "Basic" in anonymous.headers["www-authenticate"]
    assert anonymous.json()["title"] == "Unauthorized"
    wrong = server.get("/taxii2/", headers={"Accept": TAXII}, auth=("fin", "not-the-password"))
    assert wrong.status_code == 401
    for accept in ("application/json", "application/taxii+json;version=2.0", "*/*"):
        refused = server.get("/taxii2/", headers={**users["fin"].headers, "Accept": accept})
        assert refused.status_code == 406 and refused.headers["content-type"] == TAXII
    lenient = server.get(
        "/taxii2/", headers={**users["fin"].headers, "Accept": "application/taxii+json"}
    )
    assert lenient.status_code == 200
    unknown = server.get("/taxii2/lianfang/nothing/here/", headers=users["fin"].headers)
    assert unknown.status_code == 404 and unknown.headers["content-type"] == TAXII
    not_allowed = server.put(ROOT + "/collections/", headers=users["fin"].headers)
    assert not_allowed.status_code == 405 and not_allowed.json()["http_status"] == "405"
    # The analyst API keeps its own error shape.
    assert server.get("/api/v1/nothing").json()["error"]["code"] == "not_found"


def test_collections_are_listed_only_to_who_may_use_them(users: dict[str, As]) -> None:
    def aliases(user: str) -> list[str]:
        return [c["alias"] for c in users[user].get("/collections/").json().get("collections", [])]

    assert aliases("fin") == ["community", "finance", "grid-group", "drop-box", "paging"]
    assert aliases("ener") == ["community", "energy"]
    assert aliases("grid") == ["community", "grid-group"]
    assert len(aliases("admin")) == len(aliases("prov")) == 6
    drop_box = users["fin"].get("/collections/drop-box/").json()
    assert drop_box["can_read"] is False and drop_box["can_write"] is True
    assert drop_box["media_types"] == ["application/stix+json;version=2.1"]
    by_id = users["fin"].get("/collections/130ad1e7-633b-4e13-b5fe-ccde1e74e591/").json()
    assert by_id["alias"] == "finance" and by_id["can_read"] and by_id["can_write"]
    assert users["ener"].get("/collections/finance/").status_code == 404
    assert (
        users["grid"].get("/collections/130ad1e7-633b-4e13-b5fe-ccde1e74e591/").status_code == 404
    )


def test_a_department_cannot_read_what_it_is_not_entitled_to(users: dict[str, As]) -> None:
    secret = indicator(tlp=TlpLevel.RED)
    amber = indicator(tlp=TlpLevel.AMBER)
    assert users["fin"].publish("finance", [secret, amber])["success_count"] == 2
    for user in ("ener", "grid"):
        for path in (
            "/collections/finance/objects/",
            "/collections/finance/manifest/",
            f"/collections/finance/objects/{amber['id']}/",
            f"/collections/finance/objects/{amber['id']}/versions/",
        ):
            assert users[user].get(path).status_code == 404, (user, path)
        assert users[user].delete(f"/collections/finance/objects/{amber['id']}/").status_code == 404
        refused = users[user].post("/collections/finance/objects/", [indicator()])
        assert refused.status_code == 404
    own = {o["id"] for o in all_pages(users["fin"], "/collections/finance/objects/")[0]}
    assert {secret["id"], amber["id"]} <= own
    # Province analysts and administrators read every collection, but RED stays in finance.
    for user in ("prov", "admin"):
        seen = {o["id"] for o in all_pages(users[user], "/collections/finance/objects/")[0]}
        assert amber["id"] in seen and secret["id"] not in seen
        assert users[user].get(f"/collections/finance/objects/{secret['id']}/").status_code == 404
    # Visible but not readable: 403 for reading and deleting, writing works.
    assert users["fin"].get("/collections/drop-box/objects/").status_code == 403
    assert users["fin"].publish("drop-box", [indicator()])["success_count"] == 1
    dropped = users["fin"].delete(f"/collections/drop-box/objects/{amber['id']}/")
    assert dropped.status_code == 403
    assert users["prov"].post("/collections/finance/objects/", [indicator()]).status_code == 403


def test_tlp_policy_is_enforced_at_publication(users: dict[str, As]) -> None:
    clear, green, amber, strict, red, unmarked = (
        indicator(tlp=TlpLevel.CLEAR),
        indicator(tlp=TlpLevel.GREEN),
        indicator(tlp=TlpLevel.AMBER),
        indicator(tlp=TlpLevel.AMBER_STRICT),
        indicator(tlp=TlpLevel.RED),
        indicator(),
    )
    status = users["fin"].publish("community", [clear, green, amber, strict, red, unmarked])
    assert {s["id"] for s in status["successes"]} == {clear["id"], green["id"]}
    failures = {f["id"]: f["message"] for f in status["failures"]}
    assert set(failures) == {amber["id"], strict["id"], red["id"], unmarked["id"]}
    assert "community" in failures[amber["id"]] and "TLP:RED" in failures[red["id"]]
    assert "unmarked objects count as TLP:AMBER" in failures[unmarked["id"]]
    group = users["fin"].publish("grid-group", [amber, strict, red])
    assert {s["id"] for s in group["successes"]} == {amber["id"], strict["id"]}
    assert "never leaves its department" in group["failures"][0]["message"]
    # The partner is a member: it reads the AMBER objects; it cannot publish AMBER+STRICT
    # into a group whose members do not... (it is a member here, so it can).
    grid_seen = {o["id"] for o in all_pages(users["grid"], "/collections/grid-group/objects/")[0]}
    assert {amber["id"], strict["id"]} <= grid_seen
    assert (
        users["grid"].publish("grid-group", [indicator(tlp=TlpLevel.AMBER_STRICT)])["success_count"]
        == 1
    )
    assert users["grid"].publish("grid-group", [indicator(tlp=TlpLevel.RED)])["failure_count"] == 1


def test_versions_filters_manifest_and_one_object(users: dict[str, As]) -> None:
    fin = users["fin"]
    first = indicator("2024-01-01T00:00:00.000Z", tlp=TlpLevel.GREEN)
    oid = first["id"]
    middle = {**first, "modified": "2024-02-01T00:00:00.000Z"}
    last = {**first, "modified": "2024-03-01T00:00:00.000Z"}
    malware = {
        "type": "malware",
        "spec_version": "2.1",
        "id": f"malware--{uuid.uuid4()}",
        "created": "2024-01-01T00:00:00.000Z",
        "modified": "2024-01-01T00:00:00.000Z",
        "name": "Qakbot",
        "is_family": True,
        "object_marking_refs": [TLP_2_IDS[TlpLevel.GREEN]],
    }
    address = {
        "type": "ipv4-addr",
        "spec_version": "2.1",
        "id": f"ipv4-addr--{uuid.uuid4()}",
        "value": "203.0.113.77",
    }
    # Versions arrive out of order and in two requests.
    assert fin.publish("finance", [middle, malware, address])["success_count"] == 3
    status = fin.publish("finance", [last, first, middle])
    assert status["success_count"] == 3 and status["pending_count"] == 0
    assert status["successes"][2]["message"] == "already in the collection"
    changed = fin.publish("finance", [{**middle, "pattern": "[ipv4-addr:value = '198.51.100.1']"}])
    assert changed["failure_count"] == 1 and "different object" in changed["failures"][0]["message"]

    def modified(**params: Any) -> list[str]:
        objects = all_pages(fin, "/collections/finance/objects/", **{"match[id]": oid, **params})[0]
        return sorted(o["modified"] for o in objects)

    assert modified() == ["2024-03-01T00:00:00.000Z"]  # default: last
    assert modified(**{"match[version]": "last"}) == ["2024-03-01T00:00:00.000Z"]
    assert modified(**{"match[version]": "first"}) == ["2024-01-01T00:00:00.000Z"]
    assert modified(**{"match[version]": "first,last"}) == [
        "2024-01-01T00:00:00.000Z",
        "2024-03-01T00:00:00.000Z",
    ]
    assert len(modified(**{"match[version]": "all"})) == 3
    assert modified(**{"match[version]": "2024-02-01T00:00:00Z"}) == ["2024-02-01T00:00:00.000Z"]
    assert modified(**{"match[version]": "2024-02-02T00:00:00Z"}) == []
    assert modified(**{"match[spec_version]": "2.0"}) == []
    assert modified(**{"match[spec_version]": "2.1"}) == ["2024-03-01T00:00:00.000Z"]
    both = all_pages(
        fin, "/collections/finance/objects/", **{"match[id]": f"{oid},{malware['id']}"}
    )[0]
    assert sorted(o["type"] for o in both) == ["indicator", "malware"]
    types = all_pages(fin, "/collections/finance/objects/", **{"match[type]": "malware,ipv4-addr"})[
        0
    ]
    assert {o["id"] for o in types} >= {malware["id"], address["id"]}
    assert all(o["type"] in ("malware", "ipv4-addr") for o in types)

    manifest = fin.get(
        "/collections/finance/manifest/", **{"match[id]": oid, "match[version]": "all"}
    )
    records = manifest.json()["objects"]
    assert [r["version"] for r in records] == [
        "2024-02-01T00:00:00.000Z",
        "2024-03-01T00:00:00.000Z",
        "2024-01-01T00:00:00.000Z",
    ]
    assert all(r["media_type"] == "application/stix+json;version=2.1" for r in records)
    assert manifest.headers["x-taxii-date-added-first"] == records[0]["date_added"]
    assert manifest.headers["x-taxii-date-added-last"] == records[-1]["date_added"]
    assert records[0]["date_added"] < records[1]["date_added"]
    # added_after: only what the second request added.
    later = fin.get(
        "/collections/finance/manifest/",
        **{"match[id]": oid, "match[version]": "all", "added_after": records[0]["date_added"]},
    )
    assert [r["version"] for r in later.json()["objects"]] == [
        "2024-03-01T00:00:00.000Z",
        "2024-01-01T00:00:00.000Z",
    ]

    one = fin.get(f"/collections/finance/objects/{oid}/")
    assert [o["modified"] for o in one.json()["objects"]] == ["2024-03-01T00:00:00.000Z"]
    assert one.headers["x-taxii-date-added-first"] == one.headers["x-taxii-date-added-last"]
    assert (
        len(
            fin.get(f"/collections/finance/objects/{oid}/", **{"match[version]": "all"}).json()[
                "objects"
            ]
        )
        == 3
    )
    versions = fin.get(f"/collections/finance/objects/{oid}/versions/").json()
    assert sorted(versions["versions"]) == [
        "2024-01-01T00:00:00.000Z",
        "2024-02-01T00:00:00.000Z",
        "2024-03-01T00:00:00.000Z",
    ]
    assert versions["more"] is False
    unversioned = fin.get(f"/collections/finance/objects/{address['id']}/").json()["objects"]
    assert unversioned == [address | {}] or unversioned[0]["value"] == "203.0.113.77"
    assert fin.get(f"/collections/finance/objects/indicator--{uuid.uuid4()}/").status_code == 404
    bad = fin.get("/collections/finance/objects/", **{"match[version]": "all,first"})
    assert bad.status_code == 400 and bad.headers["content-type"] == TAXII

    # Delete one version: it is gone, the flags move to the remaining versions.
    assert (
        fin.delete(
            f"/collections/finance/objects/{oid}/", **{"match[version]": "2024-03-01T00:00:00.000Z"}
        ).status_code
        == 200
    )
    assert modified() == ["2024-02-01T00:00:00.000Z"]
    gone = fin.get(
        f"/collections/finance/objects/{oid}/", **{"match[version]": "2024-03-01T00:00:00.000Z"}
    )
    assert gone.status_code == 404
    assert (
        fin.delete(
            f"/collections/finance/objects/{oid}/", **{"match[version]": "first"}
        ).status_code
        == 200
    )
    assert modified(**{"match[version]": "first"}) == ["2024-02-01T00:00:00.000Z"]
    assert fin.delete(f"/collections/finance/objects/{oid}/").status_code == 200
    assert fin.get(f"/collections/finance/objects/{oid}/").status_code == 404
    assert fin.delete(f"/collections/finance/objects/{oid}/").status_code == 404
    assert oid not in {
        r["id"]
        for r in all_pages(fin, "/collections/finance/manifest/", **{"match[version]": "all"})[0]
    }


def test_paging_never_skips_or_repeats_when_objects_share_a_date_added(
    users: dict[str, As],
) -> None:
    fin = users["fin"]
    batch = [indicator(tlp=TlpLevel.GREEN) for _ in range(230)]
    status = fin.publish("paging", batch)
    assert status["success_count"] == 230
    first_page = fin.get("/collections/paging/objects/", limit=7)
    assert (
        first_page.headers["x-taxii-date-added-first"]
        == first_page.headers["x-taxii-date-added-last"]
    )
    objects, pages = all_pages(fin, "/collections/paging/objects/", limit=7)
    ids = [o["id"] for o in objects]
    assert len(ids) == len(set(ids)) == 230 and pages == 33
    assert ids == [o["id"] for o in batch]  # ties broken by position in the request
    # Without a limit the page cap (50) applies; manifest pages the same way.
    assert all_pages(fin, "/collections/paging/objects/")[1] == 5
    manifest, _ = all_pages(fin, "/collections/paging/manifest/", limit=100)
    assert [r["id"] for r in manifest] == ids
    # A later request pages after the earlier one.
    more = [indicator(tlp=TlpLevel.GREEN) for _ in range(3)]
    fin.publish("paging", more)
    assert [o["id"] for o in all_pages(fin, "/collections/paging/objects/", limit=9)[0]][-3:] == [
        o["id"] for o in more
    ]
    # A next value is bound to its filters and to this server.
    token = fin.get("/collections/paging/objects/", limit=5).json()["next"]
    assert (
        fin.get(
            "/collections/paging/objects/", limit=5, next=token, **{"match[type]": "indicator"}
        ).status_code
        == 400
    )
    assert fin.get("/collections/paging/objects/", next="forged").status_code == 400
    for bad in ({"limit": 0}, {"limit": "x"}, {"added_after": "yesterday"}):
        assert fin.get("/collections/paging/objects/", **bad).status_code == 400


def test_status_resource_and_post_errors(
    server: TestClient, users: dict[str, As], taxii_env: dict[str, Any]
) -> None:
    fin = users["fin"]
    status = fin.publish(
        "finance", [indicator(tlp=TlpLevel.GREEN), {"type": "indicator", "id": "indicator--x"}, 7]
    )
    assert (
        status["total_count"] == 3 and status["success_count"] == 1 and status["failure_count"] == 2
    )
    assert status["status"] == "complete" and "pendings" not in status
    again = fin.get(f"/status/{status['id']}/").json()
    assert again == status
    assert fin.get(f"/status/{status['id']}").status_code == 200  # taxii2-client drops the slash
    assert users["admin"].get(f"/status/{status['id']}/").status_code == 200
    assert users["ener"].get(f"/status/{status['id']}/").status_code == 404
    assert fin.get(f"/status/{uuid.uuid4()}/").status_code == 404
    assert (
        fin.post(
            "/collections/finance/objects/", [indicator()], **{"Content-Type": "application/json"}
        ).status_code
        == 415
    )
    assert fin.post("/collections/finance/objects/", content=b"{not json").status_code == 400
    assert fin.post("/collections/finance/objects/", content=b"[1, 2]").status_code == 422
    assert fin.post("/collections/finance/objects/", content=b'{"objects": 5}').status_code == 422
    empty = fin.post("/collections/finance/objects/", content=b"{}")
    assert empty.status_code == 202 and empty.json()["total_count"] == 0
    too_large = fin.post("/collections/finance/objects/", content=b" " * (8 * 1024 * 1024 + 1))
    assert too_large.status_code == 413 and too_large.headers["content-type"] == TAXII


def test_disclosures_are_audited_and_listed_for_administrators(
    server: TestClient, users: dict[str, As], taxii_env: dict[str, Any]
) -> None:
    shared = indicator(tlp=TlpLevel.AMBER)
    users["fin"].publish("grid-group", [shared])
    assert users["grid"].get(f"/collections/grid-group/objects/{shared['id']}/").status_code == 200
    users["grid"].get("/collections/grid-group/manifest/")  # metadata only: not a disclosure
    taxii_env["es"].indices.refresh(index=f"{taxii_env['settings'].index_prefix}-disclosures")
    admin = {"Authorization": f"Bearer {taxii_env['keys']['admin']}"}
    listing = server.get(
        "/api/v1/disclosures", headers=admin, params={"object_id": shared["id"]}
    ).json()
    records = listing["disclosures"]
    assert len(records) == 1
    record = records[0]
    assert record["principal"] == "grid" and record["role"] == "sharing_partner"
    assert (
        record["collection"] == "5b0a5a3e-8f0c-4b59-9a43-3c1f6d1b7e01"
        and record["endpoint"] == "object"
    )
    assert record["objects"] == [
        {"id": shared["id"], "version": shared["modified"], "tlp": "amber"}
    ]
    everything = server.get("/api/v1/disclosures", headers=admin, params={"size": 1}).json()
    assert everything["next_cursor"] and len(everything["disclosures"]) == 1
    follow = server.get(
        "/api/v1/disclosures",
        headers=admin,
        params={"size": 1, "cursor": everything["next_cursor"]},
    )
    assert follow.status_code == 200 and follow.json()["disclosures"] != everything["disclosures"]
    analyst = {"Authorization": f"Bearer {taxii_env['keys']['prov']}"}
    assert server.get("/api/v1/disclosures", headers=analyst).status_code == 403
    assert (
        server.get("/api/v1/disclosures", headers=admin, params={"cursor": "%%"}).status_code == 422
    )


def test_pending_status_is_polled_to_completion(taxii_env: dict[str, Any]) -> None:
    """With no wait, the POST answers at once with the objects pending, listed one by one."""
    config = taxii_env["home"] / "no-wait.toml"
    config.write_text(CONFIG.format(wait=0))
    settings = taxii_env["settings"].model_copy(update={"taxii_collections_path": config})
    with TestClient(create_app(settings)) as client:
        fin = As(client, taxii_env["keys"]["fin"])
        batch = [indicator(tlp=TlpLevel.GREEN) for _ in range(1500)]
        status = fin.publish("community", batch)
        assert status["total_count"] == 1500
        assert status["pending_count"] == len(status.get("pendings", [])) > 0
        assert {p["id"] for p in status["pendings"]} <= {o["id"] for o in batch}
        for _ in range(200):
            status = fin.get(f"/status/{status['id']}/").json()
            if status["status"] == "complete":
                break
            time.sleep(0.05)
        assert status["status"] == "complete" and status["success_count"] == 1500
        assert len(status["successes"]) == 1500 and "pendings" not in status


def taxii_services(server: TestClient) -> TaxiiServices:
    """The running TAXII server's services (its object store is the one writer)."""
    mount = next(route for route in server.app.routes if getattr(route, "path", "") == MOUNT_PATH)
    return mount.app.state.services_of()


def test_spooled_chunks_and_the_chunk_kept_in_memory_store_alike(
    server: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of three: the first two go through the spool, the last is stored from memory;
    each object keeps its place, failures their reason, and a repeat is recognised. A
    request of one chunk writes its status with the objects, and again only when an object
    was not stored as new."""
    services = taxii_services(server)
    finance = services.config.collection("finance")
    publisher = Principal("fin", Role.DEPARTMENT_ANALYST, "finance")
    saves: list[str] = []  # the state of every status written on its own
    real_save = services.statuses.save

    def counted_save(header: StatusHeader, chunks: dict[int, list[Any]]) -> None:
        saves.append(header.state)
        real_save(header, chunks)

    monkeypatch.setattr(services.statuses, "save", counted_save)

    def run(objects: list[Any], batch_size: int) -> dict[str, Any]:
        saves.clear()
        job = AddObjectsJob(
            status_id=str(uuid.uuid4()),
            request_timestamp_us=now_micros(),
            collection=finance,
            publisher=publisher,
            objects=services.objects,
            statuses=services.statuses,
            validator=services.validator,
            limits=IntakeLimits(batch_size, services.config.server.unmarked_level),
        )
        job.prepare(io.BytesIO(json.dumps({"objects": objects}).encode()))
        job.store()
        resource = services.statuses.resource(job.status_id, "fin", False)
        assert resource is not None and resource["status"] == "complete"
        if job.chunks == 1:
            assert resource == job.resource()
        return resource

    posted: list[Any] = [indicator(tlp=TlpLevel.GREEN) for _ in range(8)]
    posted[1] = {"type": "indicator", "id": "indicator--x"}
    posted[6] = 7
    valid = [item for item in posted if isinstance(item, dict) and item["id"] != "indicator--x"]
    status = run(posted, 3)
    assert saves == ["pending"] * 5 + ["complete"]  # two spooled chunks, published, stored
    assert (status["total_count"], status["success_count"], status["failure_count"]) == (8, 6, 2)
    assert [s["id"] for s in status["successes"]] == [item["id"] for item in valid]
    assert "message" not in status["successes"][0]
    assert [f["id"] for f in status["failures"]] == ["indicator--x", "objects[6]"]
    assert "UUID" in status["failures"][0]["message"]
    stored, _ = services.objects.page(
        ObjectQuery(collection=finance.id, object_ids=tuple(item["id"] for item in valid)),
        50,
        with_objects=True,
    )
    assert [version.seq for version in stored] == [0, 2, 3, 4, 5, 7]
    assert [json.loads(version.raw or "") for version in stored] == valid
    again = run(posted, 3)
    assert again["success_count"] == 6
    assert {s["message"] for s in again["successes"]} == {"already in the collection"}

    # One chunk, every object new (one failing validation): the status travels with them.
    fresh = [indicator(tlp=TlpLevel.GREEN) for _ in range(4)] + [{"type": "indicator"}]
    status = run(fresh, 10)
    assert saves == [] and (status["success_count"], status["failure_count"]) == (4, 1)
    # One chunk with objects already there or in conflict: the status is rewritten.
    changed = {**fresh[0], "pattern": "[ipv4-addr:value = '198.51.100.9']"}
    status = run([fresh[1], changed, indicator(tlp=TlpLevel.GREEN)], 10)
    assert saves == ["complete"]
    assert [s.get("message") for s in status["successes"]] == ["already in the collection", None]
    assert "different object" in status["failures"][0]["message"]


@pytest.mark.slow
def test_ten_thousand_objects_in_one_post_with_bounded_memory(
    taxii_env: dict[str, Any], users: dict[str, As]
) -> None:
    """A 10,000-object POST is reported per object; memory does not grow with the count."""
    from api.routes.taxii import TaxiiServices  # noqa: F401  (the server is running)

    fin = users["fin"]
    peaks = {}
    for count in (1000, 10_000):
        objects = [indicator(tlp=TlpLevel.GREEN) for _ in range(count)]
        if count == 10_000:
            objects[1234] = {"type": "indicator", "id": "broken"}
        body = json.dumps({"objects": objects}).encode()
        del objects
        tracemalloc.start()
        response = fin.post(
            "/collections/energy/objects/" if False else "/collections/finance/objects/",
            content=body,
        )
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert response.status_code == 202
        status = response.json()
        assert status["status"] == "complete" and status["total_count"] == count
        if count == 10_000:
            assert status["success_count"] == 9_999 and status["failure_count"] == 1
            assert status["failures"][0]["id"] == "broken"
            assert len(status["successes"]) == 9_999
    # Ten times the objects, far less than ten times the memory (the body itself is counted).
    assert peaks[10_000] < 4 * peaks[1000], peaks
