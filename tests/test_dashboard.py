"""The dashboard mount: the built page at / with its security headers, API routes untouched."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.dashboard import mount_dashboard
from api.errors import install_error_handlers
from api.http_hardening import CONTENT_SECURITY_POLICY


def app_with_page(directory: Path) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/api/v1/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    mount_dashboard(app, directory)
    return app


def built_page(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text('<!doctype html><script type="module" src="app.js"></script>')
    (dist / "app.js").write_text("export {};\n")
    (tmp_path / "secret.txt").write_text("outside the page")
    return dist


def test_page_served_at_root_under_a_strict_policy(tmp_path: Path) -> None:
    client = TestClient(app_with_page(built_page(tmp_path)))
    page = client.get("/")
    assert page.status_code == 200
    assert page.text.startswith("<!doctype html>")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"
    script = client.get("/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert script.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_api_routes_win_and_unknown_paths_answer_the_json_error(tmp_path: Path) -> None:
    client = TestClient(app_with_page(built_page(tmp_path)))
    assert client.get("/api/v1/ping").json() == {"pong": "yes"}
    missing = client.get("/api/v1/no-such-route")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    for escape in ("/%2e%2e/secret.txt", "/..%2fsecret.txt"):
        assert client.get(escape).status_code == 404


def test_without_a_build_root_says_how_to_build(tmp_path: Path) -> None:
    client = TestClient(app_with_page(tmp_path / "dist"))
    answer = client.get("/")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "dashboard_not_built"
    assert "make web" in answer.json()["error"]["message"]
    assert client.get("/api/v1/ping").status_code == 200
