"""GET /api/v1/detection/schedule: the detection scheduler running inside `lianfang serve`.

With `detection_rules.schedule_in_serve` on, the API runs the scheduler's pending windows
every `detection_rules.every` in the background (detection/background_detection.py); this
route shows whether it runs, how many passes it made and failed, and the last pass: start,
end, seconds, windows, alerts found/new/updated/suppressed, failing detectors and a pass
error. Off: `{"enabled": false}`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from api.authentication import analyst
from lianfang.principals import Principal

router = APIRouter(prefix="/api/v1", tags=["detection"])


class DetectionSchedule(BaseModel):
    """The background scheduler's state and its last pass."""

    enabled: bool
    running: bool = False
    every_seconds: float | None = None
    passes: int = 0
    failed_passes: int = 0
    detectors: int = 0
    problems: list[str] = []
    configuration_error: str | None = None
    last_pass: dict[str, Any] | None = None
    next_pass_at: str | None = None


@router.get("/detection/schedule", response_model=DetectionSchedule)
def detection_schedule(
    request: Request, principal: Annotated[Principal, Depends(analyst)]
) -> DetectionSchedule:
    """Whether detection runs inside the API, and how its last pass went."""
    background = getattr(request.app.state, "detection_schedule", None)
    if background is None:
        return DetectionSchedule(enabled=False)
    return DetectionSchedule(**background.status())
