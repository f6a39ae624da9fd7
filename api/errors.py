"""One JSON error body for every failure, and the mapping from exceptions to status codes.

Every error response has the shape
    {"error": {"status": 422, "code": "invalid_query", "message": "...", "details": [...]}}
"""

from __future__ import annotations

from typing import Any

from elasticsearch import ApiError, TransportError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from lianfang.event_search import InvalidQuery
from lianfang.scoped_store import OutOfScope
from lianfang.store import StoreUnavailable


class ErrorInfo(BaseModel):
    """What went wrong: the HTTP status again, a stable code, a message, optional details."""

    status: int
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """The one error shape of the API (documented for every error status in the OpenAPI)."""

    error: ErrorInfo


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "missing or invalid credentials"),
        (403, "the role may not do this"),
        (404, "no such resource (or another department's)"),
        (413, "request body too large"),
        (422, "a parameter or the body is not valid"),
        (429, "too many failed authentications"),
        (502, "Elasticsearch refused the request"),
        (503, "Elasticsearch unreachable or overloaded"),
    )
}


def error_body(status: int, code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The documented error shape."""
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content=error_body(status, code, message, details), headers=headers
    )


def _document_kind(index: str) -> str:
    """What an index holds, in the singular, from its name: `<prefix>-alerts` -> "alert"."""
    return index.rpartition("-")[2].removesuffix("s")


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception the app can raise to the JSON error body."""

    @app.exception_handler(RequestValidationError)
    async def validation_failed(_: Request, error: RequestValidationError) -> JSONResponse:
        details = [
            {"location": list(item.get("loc", ())), "message": item.get("msg", "")}
            for item in error.errors()
        ]
        return _response(422, "invalid_request", "the request parameters are not valid", details)

    @app.exception_handler(InvalidQuery)
    async def invalid_query(_: Request, error: InvalidQuery) -> JSONResponse:
        details = [{"location": ["query", error.parameter], "message": error.reason}]
        return _response(422, "invalid_query", str(error), details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            429: "too_many_requests",
        }
        return _response(
            error.status_code,
            code.get(error.status_code, "http_error"),
            str(error.detail),
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(OutOfScope)
    async def out_of_scope(_: Request, error: OutOfScope) -> JSONResponse:
        # Absent and another department's answer alike: nobody can tell the document exists.
        message = f"no {_document_kind(error.index)} {error.document_id}"
        return _response(404, "not_found", message)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_: Request, error: StoreUnavailable) -> JSONResponse:
        return _response(503, "store_unavailable", str(error))

    @app.exception_handler(TransportError)
    async def transport_error(_: Request, error: TransportError) -> JSONResponse:
        return _response(503, "store_unavailable", f"Elasticsearch is not reachable: {error}")

    @app.exception_handler(ApiError)
    async def store_error(_: Request, error: ApiError) -> JSONResponse:
        status = 503 if error.status_code in (429, 502, 503, 504) else 502
        return _response(
            status, "store_error", f"Elasticsearch answered {error.status_code}: {error.message}"
        )
