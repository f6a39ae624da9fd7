"""Parameter types shared by the routes: checked where FastAPI reads them, so bad input is a 422."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def _in_utc(moment: datetime) -> datetime:
    """The same instant in UTC; an instant UTC cannot represent (year 0 or 10000) is refused."""
    try:
        return moment.astimezone(UTC)
    except OverflowError as error:
        raise ValueError("the instant is outside the years 1 to 9999 in UTC") from error


# An ISO-8601 date and time with a zone, converted to UTC (every stored date is UTC).
Moment = Annotated[AwareDatetime, AfterValidator(_in_utc)]
