"""The dashboard page at `/`: the built front end (web/dist) under a strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from api.errors import error_body
from api.http_hardening import SECURITY_HEADERS

# `make web` builds here (git-ignored); an installed package has no web/ and serves no page.
DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "web" / "dist"


class DashboardFiles(StaticFiles):
    """Static files with the dashboard's security headers; index.html is revalidated each time."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        # The same headers as the API's middleware, also when mounted in an app without it.
        response.headers.update(SECURITY_HEADERS)
        if path in ("", ".", "index.html"):
            response.headers["Cache-Control"] = "no-cache"
        return response


def mount_dashboard(app: FastAPI, directory: Path = DASHBOARD_DIR) -> None:
    """Serve the built dashboard at `/` (mounted last: API routes take precedence).

    Without a build, `/` answers 503 with the command that builds it, and the API works as
    before.
    """
    if (directory / "index.html").is_file():
        app.mount("/", DashboardFiles(directory=directory, html=True), name="dashboard")
        return

    @app.get("/", include_in_schema=False)
    def dashboard_not_built() -> Any:
        return JSONResponse(
            status_code=503,
            content=error_body(
                503,
                "dashboard_not_built",
                f"the dashboard is not built ({directory}): run `make web`",
            ),
        )
