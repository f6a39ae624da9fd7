"""POST /api/v1/ingest and GET /api/v1/collectors against the real node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient

from api.app import create_app
from collectors.inputs.file_group import FileGroupInput
from collectors.normalise import Department
from collectors.runtime import CollectorRuntime
from lianfang.principals import PrincipalStore, Role
from lianfang.settings import Settings
from lianfang.store import EventStore
from tests.test_collector_runtime import MOMENT, numbered_lines

NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture
def keys(store: EventStore, settings: Settings) -> dict[str, str]:
    principals = PrincipalStore(store.client, settings.index_prefix)
    principals.install()
    users = {
        "admin": (Role.ADMINISTRATOR, None),
        "province": (Role.PROVINCE_ANALYST, None),
        "fin": (Role.DEPARTMENT_ANALYST, "finance"),
        "peer": (Role.SHARING_PARTNER, "energy"),
    }
    # In parallel: each write waits for a refresh (about a second each, one after another).
    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(lambda item: principals.add_user(item[0], *item[1]), users.items()))
        return dict(zip(users, pool.map(principals.create_key, users), strict=True))


def api_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


@pytest.fixture
def api(settings: Settings, keys: dict[str, str]) -> Iterator[TestClient]:
    with api_client(settings) as test_client:
        yield test_client


def auth(keys: dict[str, str], name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[name]}"}


def stored(client: Elasticsearch, store: EventStore) -> list[dict]:
    store.refresh()
    hits = client.search(index=store.names.events_alias, size=1000, sort=["line"])["hits"]
    return [hit["_source"] for hit in hits["hits"]]


def record(number: int, **extra: object) -> str:
    return json.dumps({"@timestamp": MOMENT, "message": f"line {number}", "line": number, **extra})


def test_a_department_analyst_sends_ndjson_for_its_own_department(
    api: TestClient, keys: dict[str, str], client: Elasticsearch, store: EventStore
) -> None:
    lines = [
        record(0),
        record(1, organization={"id": "energy", "name": "省电力公司"}, labels={"sector": "energy"}),
        "{not json",
        "",
        record(3, message="call 13812345678 now"),
        json.dumps({"message": "no time"}),
        record(4),
    ]
    response = api.post(
        "/api/v1/ingest", content="\n".join(lines), headers={**NDJSON, **auth(keys, "fin")}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["department"], body["format"], body["records"]) == ("finance", "json", 6)
    assert (body["accepted"], body["indexed"], body["rejected"]) == (4, 4, 2)
    assert [error["line"] for error in body["errors"]] == [3, 6]
    assert all(error["reason"].startswith("parse: json") for error in body["errors"])
    assert body["errors_truncated"] is False
    documents = stored(client, store)
    assert [d["line"] for d in documents] == [0, 1, 3, 4]
    assert {d["organization"]["id"] for d in documents} == {"finance"}  # the claim is replaced
    assert all("sector" not in d.get("labels", {}) for d in documents)
    assert "13812345678" not in json.dumps(documents, ensure_ascii=False)  # masked
    assert "[MOBILE:138*" in documents[2]["message"]

    again = api.post(
        "/api/v1/ingest",
        content="\n".join(lines),
        params={"batch_id": "retry-1"},
        headers={**NDJSON, **auth(keys, "fin")},
    ).json()
    resent = api.post(
        "/api/v1/ingest",
        content="\n".join(lines),
        params={"batch_id": "retry-1"},
        headers={**NDJSON, **auth(keys, "fin")},
    ).json()
    assert (again["indexed"], resent["indexed"], resent["duplicates"]) == (4, 0, 4)
    assert len(stored(client, store)) == 8  # two batches; the resent one added nothing


def test_the_province_sends_a_json_array_for_a_named_department_and_text_lines(
    api: TestClient, keys: dict[str, str], client: Elasticsearch, store: EventStore
) -> None:
    array = [json.loads(record(10)), json.loads(record(11)), "not an object", [1]]
    response = api.post(
        "/api/v1/ingest",
        json=array,
        params={"department": "energy", "department_name": "省电力公司", "sector": "energy"},
        headers=auth(keys, "province"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"], body["department"]) == (2, 2, "energy")
    assert [(e["line"], e["reason"]) for e in body["errors"]] == [
        (3, "parse: expected a JSON object, got str"),
        (4, "parse: expected a JSON object, got list"),
    ]
    syslog = "\n".join(
        f"<34>1 {MOMENT} fw-01 sshd 77 - - Failed password for root from 10.0.0.{n} port 22"
        for n in range(5)
    )
    text = api.post(
        "/api/v1/ingest",
        content=syslog,
        headers={"Content-Type": "text/plain; charset=utf-8", **auth(keys, "admin")},
    ).json()
    assert (text["format"], text["accepted"], text["department"]) == ("syslog", 5, None)
    documents = stored(client, store)
    energy = [d for d in documents if d.get("organization", {}).get("id") == "energy"]
    assert [d["line"] for d in energy] == [10, 11]
    assert energy[0]["organization"]["name"] == "省电力公司"
    assert energy[0]["labels"]["sector"] == "energy"
    assert len(documents) == 7


def test_scoping_roles_and_bad_requests(api: TestClient, keys: dict[str, str]) -> None:
    body = record(0)

    def post(name: str | None, **options: object) -> int:
        headers = {**NDJSON, **(auth(keys, name) if name else {})}
        headers.update(options.pop("headers", {}))  # type: ignore[arg-type]
        return api.post("/api/v1/ingest", content=body, headers=headers, **options).status_code

    assert post(None) == 401
    assert post("peer") == 403  # sharing partners do not send events
    assert post("fin", params={"department": "energy"}) == 403
    assert post("fin", params={"department": "finance", "sector": "energy"}) == 403
    assert post("fin", params={"department": "finance"}) == 200
    assert post("admin", params={"sector": "energy"}) == 422  # a sector needs a department
    assert post("fin", headers={"Content-Type": "application/xml"}) == 415
    assert post("fin", params={"format": "nonsense"}) == 422
    response = api.post(
        "/api/v1/ingest",
        content=b"[{broken",
        headers={"Content-Type": "application/json", **auth(keys, "fin")},
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("the body is not JSON")


def test_size_record_and_rate_limits(settings: Settings, keys: dict[str, str]) -> None:
    bounded = settings.model_copy(
        update={
            "api_ingest_max_bytes": 4096,
            "api_ingest_max_records": 20,
            "api_ingest_records_per_minute": 30,
        }
    )
    with api_client(bounded) as api:
        headers = {**NDJSON, **auth(keys, "fin")}
        big = "\n".join(record(n, padding="x" * 100) for n in range(40))
        too_big = api.post("/api/v1/ingest", content=big, headers=headers)
        assert too_big.status_code == 413
        assert too_big.json()["error"]["code"] == "payload_too_large"
        many = "\n".join(json.dumps({"n": n}) for n in range(21))
        assert api.post("/api/v1/ingest", content=many, headers=headers).status_code == 413
        batch = "\n".join(record(n) for n in range(20))
        assert api.post("/api/v1/ingest", content=batch, headers=headers).status_code == 200
        limited = api.post("/api/v1/ingest", content=batch, headers=headers)
        assert limited.status_code == 429
        assert 0 < int(limited.headers["Retry-After"]) <= 60
        other = {**NDJSON, **auth(keys, "admin")}  # the limit is per principal
        assert api.post("/api/v1/ingest", content=batch, headers=other).status_code == 200


def test_collector_status_is_shown_per_department(
    settings: Settings, store: EventStore, keys: dict[str, str], tmp_path: Path
) -> None:
    with api_client(settings) as api:
        absent = api.get("/api/v1/collectors", headers=auth(keys, "admin")).json()
        assert (absent["present"], absent["running"], absent["inputs"]) == (False, False, [])

        for department in ("finance", "energy"):
            (tmp_path / department).mkdir()
            (tmp_path / department / "app.log").write_text(numbered_lines(0, 30))
        groups = [
            FileGroupInput(
                settings,
                department,
                [str(tmp_path / department / "*.log")],
                follow=False,
                format_name="json",
                department=Department(department),
            )
            for department in ("finance", "energy")
        ]
        final = CollectorRuntime(settings, store, [], push_inputs=groups).run()
        assert final.state == "finished" and final.totals["indexed"] == 60

        everything = api.get("/api/v1/collectors", headers=auth(keys, "province")).json()
        assert (everything["present"], everything["running"]) == (True, False)
        assert everything["state"] == "finished"
        assert len(everything["inputs"]) == 2 and everything["totals"]["indexed"] == 60
        own = api.get("/api/v1/collectors", headers=auth(keys, "fin")).json()
        (finance,) = own["inputs"]
        assert finance["details"] == {"input": "finance", "department": "finance"}
        assert (finance["read"], finance["indexed"], finance["lag_bytes"]) == (30, 30, 0)
        assert own["totals"]["indexed"] == 30
        assert api.get("/api/v1/collectors", headers=auth(keys, "peer")).status_code == 403
