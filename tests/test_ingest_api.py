"""Ingest → API against the real node: filters, paging, time bounds, errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient

from api.app import create_app
from collectors.demo_day import DemoSpec, generate_demo_day
from collectors.file_ingest import file_records, ingest_records
from collectors.normalise import Department
from lianfang.principals import PrincipalStore, Role
from lianfang.schema import parse_timestamp
from lianfang.settings import Settings
from lianfang.store import EventStore, IndexNames

DEMO_DAY = date(2026, 11, 28)


# The tests only read the demo day and the principals, so they are loaded once per module
# (under the module's prefix); each test still gets a fresh app, so the failure limiter one
# test trips does not refuse the next.
@pytest.fixture(scope="module")
def loaded(
    module_client: Elasticsearch,
    module_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict:
    """A small demo day (scale 0.05) ingested under its departments."""
    store = EventStore(module_client, IndexNames(module_settings.index_prefix))
    folder = tmp_path_factory.mktemp("demo")
    manifest = generate_demo_day(DemoSpec(seed=7, day=DEMO_DAY, scale=0.05), folder)
    departments = {d["id"]: d for d in manifest["departments"]}
    for item in manifest["files"]:
        info = departments[item["department"]]
        report, _ = ingest_records(
            file_records(folder / item["path"]),
            settings=module_settings,
            store=store,
            format_name=item["format"],
            department=Department(info["id"], info["name"], info["sector"]),
        )
        assert report.parse_failed == 0
        assert report.indexed == item["lines"]
    store.refresh()
    return manifest


@pytest.fixture(scope="module")
def keys(module_client: Elasticsearch, module_settings: Settings) -> dict[str, str]:
    """An administrator and a finance department analyst, with API keys."""
    principals = PrincipalStore(module_client, module_settings.index_prefix)
    principals.install()
    principals.add_user("admin", Role.ADMINISTRATOR, None)
    principals.add_user("fin", Role.DEPARTMENT_ANALYST, "finance", password="finance-password-1")
    principals.add_user("peer", Role.SHARING_PARTNER, "energy")
    return {name: principals.create_key(name) for name in ("admin", "fin", "peer")}


@pytest.fixture
def anonymous(module_settings: Settings, loaded: dict) -> Iterator[TestClient]:
    with TestClient(create_app(module_settings)) as test_client:
        yield test_client


@pytest.fixture
def api(anonymous: TestClient, keys: dict[str, str]) -> TestClient:
    anonymous.headers["Authorization"] = f"Bearer {keys['admin']}"
    return anonymous


def test_health_reports_version_and_counts(api: TestClient, loaded: dict) -> None:
    body = api.get("/api/v1/health").json()
    assert body["status"] == "ok", body
    assert body["elasticsearch"]["version"].startswith(("9.", "8."))
    events_indices = {k: v for k, v in body["indices"].items() if "-events-" in k}
    assert sum(events_indices.values()) == loaded["events"]


def test_filter_by_field_and_department(api: TestClient) -> None:
    response = api.get(
        "/api/v1/events",
        params=[
            ("filter", "source.ip:203.0.113.77"),
            ("filter", "organization.id:gov-cloud"),
            ("size", 1000),
        ],
    )
    assert response.status_code == 200
    events = response.json()["events"]
    assert len(events) == 321  # 320 failed passwords and the successful login
    assert all(e["source"]["ip"] == "203.0.113.77" for e in events)
    assert all(e["labels"]["sector"] == "government" for e in events)
    outcomes = {e["event"]["outcome"] for e in events}
    assert outcomes == {"failure", "success"}


def test_paging_is_complete_and_never_repeats(api: TestClient) -> None:
    params: dict[str, object] = {"filter": "organization.id:energy", "size": 137}
    seen: list[str] = []
    total = None
    while True:
        body = api.get("/api/v1/events", params=params).json()
        total = body["total"]
        seen.extend(e["event"]["id"] for e in body["events"])
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert len(seen) == len(set(seen)) == total
    assert total > 1024  # the port scan alone is 1024 events


def test_time_bounds_are_inclusive_start_exclusive_end(api: TestClient) -> None:
    start, end = "2026-11-28T03:00:00Z", "2026-11-28T04:00:00Z"
    body = api.get(
        "/api/v1/events", params={"start": start, "end": end, "size": 1000, "order": "oldest"}
    ).json()
    stamps = [parse_timestamp(e["@timestamp"]) for e in body["events"]]
    assert stamps and stamps == sorted(stamps)
    assert all(parse_timestamp(start) <= s < parse_timestamp(end) for s in stamps)


def test_free_text_search_on_the_message(api: TestClient) -> None:
    body = api.get(
        "/api/v1/events",
        params={"q": "Accepted password admin", "filter": "organization.id:gov-cloud"},
    ).json()
    assert any(e["source"]["ip"] == "203.0.113.77" for e in body["events"])
    assert all("Accepted" in e["message"] for e in body["events"])


@pytest.mark.parametrize(
    ("params", "location"),
    [
        ({"size": 0}, ["query", "size"]),
        ({"size": 100000}, ["query", "size"]),
        ({"start": "yesterday"}, ["query", "start"]),
        ({"start": "2026-11-28T00:00:00"}, ["query", "start"]),  # no zone
        ({"filter": "no-colon"}, ["query", "filter"]),
        ({"filter": "secret.field:x"}, ["query", "filter"]),
        ({"cursor": "%%%"}, ["query", "cursor"]),
        ({"start": "2026-11-29T00:00:00Z", "end": "2026-11-28T00:00:00Z"}, ["query", "start"]),
    ],
)
def test_bad_parameters_give_422_json(api: TestClient, params: dict, location: list[str]) -> None:
    response = api.get("/api/v1/events", params=params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["status"] == 422
    assert error["code"] in ("invalid_request", "invalid_query")
    assert any(detail["location"] == location for detail in error["details"]), error


def test_unknown_route_is_a_json_404(api: TestClient) -> None:
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_events_need_credentials(anonymous: TestClient, keys: dict[str, str]) -> None:
    response = anonymous.get("/api/v1/events")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert "Bearer" in response.headers["www-authenticate"]
    wrong = anonymous.get("/api/v1/events", headers={"Authorization": "Bearer lf_nokey_nosecret"})
    assert wrong.status_code == 401
    partner = anonymous.get("/api/v1/events", headers={"Authorization": f"Bearer {keys['peer']}"})
    assert partner.status_code == 403  # sharing partners use TAXII only


def test_department_analyst_sees_only_its_department(
    anonymous: TestClient, keys: dict[str, str]
) -> None:
    finance = {"Authorization": f"Bearer {keys['fin']}"}
    own = anonymous.get("/api/v1/events", headers=finance, params={"size": 1000}).json()
    assert own["total"] > 0
    assert {e["organization"]["id"] for e in own["events"]} == {"finance"}
    other = anonymous.get(
        "/api/v1/events", headers=finance, params={"filter": "organization.id:energy"}
    ).json()
    assert other["total"] == 0  # asking for another department finds nothing
    attacker = anonymous.get(
        "/api/v1/events", headers=finance, params={"filter": "source.ip:203.0.113.77"}
    ).json()
    assert attacker["total"] == 0  # the brute force happened in gov-cloud


def test_basic_authentication_with_password(anonymous: TestClient, keys: dict[str, str]) -> None:
    good = anonymous.get("/api/v1/events", auth=("fin", "finance-password-1"), params={"size": 1})
    assert good.status_code == 200
    bad = anonymous.get("/api/v1/events", auth=("fin", "wrong-password-xx"))
    assert bad.status_code == 401


def test_repeated_failures_are_rate_limited(anonymous: TestClient, keys: dict[str, str]) -> None:
    statuses = [
        anonymous.get("/api/v1/events", headers={"Authorization": "Bearer lf_x_y"}).status_code
        for _ in range(25)
    ]
    assert statuses[0] == 401
    assert statuses[-1] == 429
    # Even the right key is refused while the address is blocked.
    blocked = anonymous.get("/api/v1/events", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert blocked.status_code == 429
