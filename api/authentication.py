"""Who is calling: Bearer API keys and HTTP Basic, with a limit on repeated failures."""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections import deque
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.dependencies import AppServices, services
from lianfang.principals import AuthenticationFailed, Principal, Role

FAILURE_WINDOW_SECONDS = 60.0
MAX_FAILURES_PER_WINDOW = 20


class FailureLimiter:
    """Counts authentication failures per client address in a sliding window."""

    def __init__(
        self, limit: int = MAX_FAILURES_PER_WINDOW, window: float = FAILURE_WINDOW_SECONDS
    ) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        """True while the client has too many recent failures."""
        now = time.monotonic()
        with self._lock:
            recent = self._failures.get(client)
            if not recent:
                return False
            while recent and now - recent[0] > self.window:
                recent.popleft()
            return len(recent) >= self.limit

    def record(self, client: str) -> None:
        """Count one failure."""
        with self._lock:
            if len(self._failures) > 100_000:
                self._failures.clear()
            self._failures.setdefault(client, deque()).append(time.monotonic())


def _unauthorized(message: str = "valid credentials are required") -> HTTPException:
    return HTTPException(
        status_code=401,
        detail=message,
        headers={"WWW-Authenticate": 'Bearer realm="lianfang", Basic realm="lianfang"'},
    )


def current_principal(
    request: Request, app: Annotated[AppServices, Depends(services)]
) -> Principal:
    """The authenticated principal of this request (401 otherwise, 429 after many failures)."""
    client = request.client.host if request.client else "unknown"
    limiter: FailureLimiter = app.failure_limiter
    if limiter.blocked(client):
        raise HTTPException(
            status_code=429,
            detail="too many failed authentications; wait a minute",
            headers={"Retry-After": str(int(limiter.window))},
        )
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    try:
        if scheme.lower() == "bearer" and credentials:
            principal = app.principals.authenticate_key(credentials.strip())
        elif scheme.lower() == "basic" and credentials:
            principal = _basic(app, credentials.strip())
        else:
            raise _unauthorized()
    except AuthenticationFailed as error:
        limiter.record(client)
        raise _unauthorized("invalid credentials") from error
    request.state.principal = principal
    return principal


def _basic(app: AppServices, credentials: str) -> Principal:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise AuthenticationFailed("malformed Basic credentials") from error
    name, separator, password = decoded.partition(":")
    if not separator:
        raise AuthenticationFailed("malformed Basic credentials")
    if password.startswith("lf_"):  # an API key given as the Basic password
        return app.principals.authenticate_key(password)
    return app.principals.authenticate_password(name, password)


def require_roles(*roles: Role):
    """A dependency that admits only principals with one of these roles (403 otherwise)."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in roles:
            raise HTTPException(status_code=403, detail=f"role {principal.role} may not do this")
        return principal

    return check


ANALYSTS = (Role.ADMINISTRATOR, Role.PROVINCE_ANALYST, Role.DEPARTMENT_ANALYST)
analyst = require_roles(*ANALYSTS)
