"""HTTP-level protections of the API: request body limit, security headers, CORS.

- **Body limit.** A request body above `api_max_body_bytes` (10 MiB) is refused with 413
  and the JSON error shape, from `Content-Length` before anything is read, or while a
  chunked body streams in. Paths that stream large bodies and enforce their own limit
  (the TAXII server's `max_content_length`, answered in TAXII's error format) are exempt.
- **Security headers** on every response (a header a route set itself is kept):
  `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`, cross-origin isolation
  and a strict `Content-Security-Policy` for a same-origin dashboard with no inline code;
  API and TAXII responses are `Cache-Control: no-store`. The interactive documentation
  (/docs, /redoc) loads its scripts from a CDN and runs one inline script: its policy
  allows that CDN and exactly the hashes of the inline scripts the page carries.
- **CORS** is closed unless `api_cors_origins` lists origins (no wildcard credentials).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

# Same-origin scripts, styles and API calls only: no inline code, no eval, no framing.
# ECharts (the dashboard) draws on <canvas> and needs neither inline styles nor data: URLs
# beyond images.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
NO_STORE_PREFIXES = ("/api/", "/taxii2", "/openapi.json")
DOCS_CDN = "https://cdn.jsdelivr.net"
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


class BodyTooLarge(HTTPException):
    """A request body above the limit (413, answered with the JSON error shape)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.limit = limit


class BodySizeLimit:
    """Refuses request bodies above `limit` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int, exempt_prefixes: Iterable[str] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt_prefixes = tuple(exempt_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _send_too_large(send, self.limit)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            # Routes turn it into the JSON error themselves; this covers reads elsewhere.
            if started:
                raise
            await _send_too_large(send, self.limit)


class SecurityHeaders:
    """Adds the security headers to every response; API responses are never cached."""

    def __init__(self, app: ASGIApp, docs_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in self.docs_paths:
            await self._docs_page(scope, receive, send)
            return
        no_store = path.startswith(NO_STORE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_headers(
                    message.get("headers", []), SECURITY_HEADERS, no_store
                )
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _docs_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the (small) documentation page to allow exactly its inline scripts."""
        start: Message | None = None
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False) and start is not None:
                policy = docs_policy(bytes(body))
                headers = [
                    (name, value)
                    for name, value in start.get("headers", [])
                    if name.lower() != b"content-length"
                ]
                headers.append((b"content-length", str(len(body)).encode()))
                start["headers"] = _with_headers(
                    headers, {**SECURITY_HEADERS, "content-security-policy": policy}, True
                )
                await send(start)
                await send({"type": "http.response.body", "body": bytes(body)})

        await self.app(scope, receive, capture)


def docs_policy(page: bytes) -> str:
    """The policy of a documentation page: its CDN, and its inline scripts by hash."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in INLINE_SCRIPT.findall(page)
    ]
    return "; ".join(
        [
            "default-src 'none'",
            " ".join(["script-src 'self'", DOCS_CDN, *hashes]),
            f"style-src 'self' 'unsafe-inline' {DOCS_CDN} https://fonts.googleapis.com",
            f"img-src 'self' data: {DOCS_CDN} https://fastapi.tiangolo.com",
            "font-src 'self' https://fonts.gstatic.com",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _with_headers(
    headers: Iterable[tuple[bytes, bytes]], defaults: dict[str, str], no_store: bool
) -> list[tuple[bytes, bytes]]:
    result = list(headers)
    present = {name.lower() for name, _ in result}
    if no_store:
        result = [(name, value) for name, value in result if name.lower() != b"cache-control"]
        result.append((b"cache-control", b"no-store"))
    for name, value in defaults.items():
        if name.encode() not in present:
            result.append((name.encode(), value.encode()))
    return result


async def _send_too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        error_body(413, "payload_too_large", f"the request body is larger than {limit} bytes")
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_body_limit(app: FastAPI, limit: int, exempt_prefixes: Iterable[str] = ()) -> None:
    """Refuse large bodies; install before the audit middleware so refusals are audited."""
    app.add_middleware(BodySizeLimit, limit=limit, exempt_prefixes=tuple(exempt_prefixes))


def install_response_hardening(app: FastAPI, cors_origins: Iterable[str]) -> None:
    """Security headers on every response, and CORS only for the configured origins.

    Install last: these wrap everything else, including the audit middleware.
    """
    docs_paths = [path for path in (app.docs_url, app.redoc_url) if path]
    app.add_middleware(SecurityHeaders, docs_paths=docs_paths)
    origins = [origin for origin in cors_origins if origin]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
            allow_credentials=False,
            max_age=600,
        )
