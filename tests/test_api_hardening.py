"""HTTP hardening: body limit, security headers, CORS, failure limiting, paging caps, and
input that used to reach Elasticsearch (or overflow) and answer 5xx."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from api.app import create_app
from api.http_hardening import BodySizeLimit, docs_policy
from detection.alerts import Alert, AlertStore
from lianfang.event_search import decode_cursor, encode_cursor
from lianfang.principals import PrincipalStore, Role
from lianfang.settings import Settings, load_settings

LIMIT = 4096


def offline_app(**overrides: object) -> TestClient:
    """The app without its start-up (no Elasticsearch): enough for what runs before a route."""
    settings = load_settings(es_url="http://127.0.0.1:9", api_max_body_bytes=LIMIT, **overrides)
    return TestClient(create_app(settings))


def test_a_declared_large_body_is_refused_before_it_is_read() -> None:
    client = offline_app()
    response = client.post(
        "/api/v1/alerts/bulk",
        content=b"x" * (LIMIT + 1),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == {
        "status": 413,
        "code": "payload_too_large",
        "message": f"the request body is larger than {LIMIT} bytes",
    }
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_streamed_large_body_is_refused_while_it_arrives() -> None:
    client = offline_app()

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"[" + b"1," * 500 + b"1]"

    response = client.post(
        "/api/v1/alerts/bulk", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_exempt_paths_stream_past_the_limit() -> None:
    inner = FastAPI()

    @inner.post("/taxii2/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @inner.post("/api/v1/upload")
    async def api_upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    client = TestClient(BodySizeLimit(inner, limit=100, exempt_prefixes=("/taxii2",)))
    assert client.post("/taxii2/upload", content=b"x" * 1000).json() == {"bytes": 1000}
    assert client.post("/api/v1/upload", content=b"x" * 1000).status_code == 413
    assert client.post("/api/v1/upload", content=b"x" * 100).json() == {"bytes": 100}


def test_security_headers_and_no_caching_of_api_answers() -> None:
    client = offline_app()
    schema = client.get("/openapi.json")
    headers = schema.headers
    assert headers["cache-control"] == "no-store"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    policy = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    missing = client.get("/api/v1/no-such-thing")
    assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"
    # Every error status is documented with the one error shape.
    responses = schema.json()["paths"]["/api/v1/situation"]["get"]["responses"]
    assert {"401", "403", "413", "422", "429", "502", "503"} <= set(responses)
    assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_the_documentation_page_may_run_exactly_its_inline_script() -> None:
    page = offline_app().get("/docs")
    assert page.status_code == 200
    inline = re.search(rb"<script>(.*?)</script>", page.content, re.DOTALL)
    assert inline is not None
    digest = base64.b64encode(hashlib.sha256(inline.group(1)).digest()).decode()
    policy = page.headers["content-security-policy"]
    assert f"'sha256-{digest}'" in policy
    assert "script-src 'self' https://cdn.jsdelivr.net 'sha256-" in policy
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert int(page.headers["content-length"]) == len(page.content)
    assert docs_policy(b"<script>a</script><script src='x'></script>").count("'sha256-") == 1


def test_cors_is_closed_unless_origins_are_configured() -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    closed = offline_app().options("/api/v1/events", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    opened = offline_app(api_cors_origins=["https://soc.example"])
    allowed = opened.options(
        "/api/v1/events",
        headers={"Origin": "https://soc.example", "Access-Control-Request-Method": "GET"},
    )
    assert allowed.headers["access-control-allow-origin"] == "https://soc.example"
    assert "access-control-allow-credentials" not in allowed.headers
    refused = opened.options("/api/v1/events", headers=preflight)
    assert "access-control-allow-origin" not in refused.headers


def test_cursors_must_carry_the_sort_values_of_their_endpoint() -> None:
    assert decode_cursor(encode_cursor([1700000000000, "abc"]), ("long", "keyword")) == [
        1700000000000,
        "abc",
    ]
    assert decode_cursor(
        encode_cursor(["2026-11-28T02:01:00.000Z", "id"]), ("timestamp", "keyword")
    )
    for forged, kinds in (
        (["x", "y"], ("long", "keyword")),
        ([True, "y"], ("long", "keyword")),
        ([2**64, "y"], ("long", "keyword")),
        ([{}, 1], ("long", "long")),
        (["not a date", "id"], ("timestamp", "keyword")),
    ):
        with pytest.raises(ValueError, match="not a cursor"):
            decode_cursor(encode_cursor(forged), kinds)


# ---------------------------------------------------------------------------- against the node


@pytest.fixture
def api(settings: Settings, client) -> Iterator[tuple[TestClient, dict]]:
    settings = settings.model_copy(update={"api_page_cap": 2})
    alerts = AlertStore(client, settings.index_prefix)
    alerts.install()
    seen = datetime(2026, 11, 28, 2, tzinfo=UTC)
    alerts.upsert(
        [
            Alert(
                f"r{n}",
                "Rule",
                "behavioural",
                "high",
                "source.ip",
                f"198.51.100.{n}",
                seen,
                seen,
                "x",
                "finance",
            )
            for n in range(5)
        ]
    )
    alerts.refresh()
    principals = PrincipalStore(client, settings.index_prefix)
    principals.install()
    principals.add_user("admin", Role.ADMINISTRATOR, None, password="administrator-password")
    key = principals.create_key("admin")
    with TestClient(create_app(settings)) as test_client:
        yield test_client, {"Authorization": f"Bearer {key}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_failed_basic_logins_are_limited_like_api_keys(api: tuple[TestClient, dict]) -> None:
    client, _ = api
    good = basic("admin", "administrator-password")
    assert client.get("/api/v1/alerts", headers=good).status_code == 200
    for _ in range(20):
        assert (
            client.get("/api/v1/alerts", headers=basic("admin", "wrong-password!!")).status_code
            == 401
        )
    blocked = client.get("/api/v1/alerts", headers=good)
    assert blocked.status_code == 429
    assert blocked.headers["retry-after"] == "60"
    assert blocked.json()["error"]["code"] == "too_many_requests"


def test_every_list_endpoint_honours_the_page_cap(api: tuple[TestClient, dict]) -> None:
    client, admin = api
    first = client.get("/api/v1/alerts", headers=admin, params={"size": 500}).json()
    assert len(first["alerts"]) == 2 and first["next_cursor"]
    second = client.get(
        "/api/v1/alerts", headers=admin, params={"size": 500, "cursor": first["next_cursor"]}
    ).json()
    assert len(second["alerts"]) == 2
    assert not {a["alert"]["id"] for a in first["alerts"]} & {
        a["alert"]["id"] for a in second["alerts"]
    }
    client.app.state.services.audit.flush_now()
    client.app.state.services.client.indices.refresh(index=client.app.state.services.audit.pattern)
    assert (
        len(client.get("/api/v1/audit", headers=admin, params={"size": 1000}).json()["records"])
        == 2
    )
    assert client.get("/api/v1/incidents", headers=admin, params={"size": 200}).status_code == 200


BAD_INPUT = [
    ("POST", "/api/v1/alerts/bulk", {}, {"ids": [""], "status": "acknowledged"}),
    ("GET", "/api/v1/events", {"filter": "source.ip:not-an-address"}, None),
    ("GET", "/api/v1/events", {"filter": "destination.port:80.5"}, None),
    ("GET", "/api/v1/events", {"start": "0001-01-01T00:00:00+05:00"}, None),
    ("GET", "/api/v1/alerts", {"end": "9999-12-31T23:59:59-05:00"}, None),
    ("GET", "/api/v1/alerts", {"cursor": encode_cursor(["x", "y"])}, None),
    ("GET", "/api/v1/audit", {"cursor": encode_cursor([{}, 1])}, None),
    ("GET", "/api/v1/disclosures", {"start": "0001-01-01T00:00:00+05:00"}, None),
    (
        "GET",
        "/api/v1/situation",
        {"start": "0001-01-01T00:00:00Z", "end": "0001-02-01T00:00:00Z"},
        None,
    ),
]


def test_bad_input_is_a_422_not_a_server_error(api: tuple[TestClient, dict]) -> None:
    """Each of these once reached Elasticsearch (502) or overflowed a date (500)."""
    client, admin = api
    for method, url, params, body in BAD_INPUT:
        response = client.request(method, url, params=params, json=body, headers=admin)
        assert response.status_code == 422, (url, params, response.text)
        error = json.loads(response.text)["error"]
        assert error["status"] == 422 and error["code"] in ("invalid_request", "invalid_query")
