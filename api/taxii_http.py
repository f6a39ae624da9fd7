"""TAXII 2.1 over HTTP: media types, error message resources and the filter parameters.

TAXII errors are the TAXII error message resource, served as
`application/taxii+json;version=2.1`, never the API's own error shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi.responses import Response

from sharing.object_store import ALL_VERSIONS, LATEST_VERSION, VersionFilter
from sharing.taxii_timestamps import InvalidTimestamp, parse_timestamp

TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
STIX_MEDIA_TYPE = "application/stix+json;version=2.1"
_TAXII_TYPE = "application/taxii+json"
_SPEC_VERSION = re.compile(r"\d+\.\d+")


class TaxiiError(Exception):
    """An HTTP error answered with a TAXII error message resource."""

    def __init__(
        self,
        status: int,
        title: str,
        description: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {description or ''}")
        self.status = status
        self.title = title
        self.description = description
        self.headers = headers or {}
        self.details = details


def taxii_json(
    content: dict[str, Any] | bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A TAXII response (the body may be pre-serialised bytes)."""
    body = content if isinstance(content, bytes) else orjson.dumps(content)
    return Response(body, status_code=status, media_type=TAXII_MEDIA_TYPE, headers=headers)


def error_response(error: TaxiiError) -> Response:
    """The TAXII error message resource for an error."""
    body: dict[str, Any] = {"title": error.title, "http_status": str(error.status)}
    if error.description:
        body["description"] = error.description
    if error.details:
        body["details"] = error.details
    return taxii_json(body, error.status, error.headers)


def _media_ranges(header: str) -> Iterable[tuple[str, dict[str, str]]]:
    for item in header.split(","):
        kind, *parameters = (part.strip() for part in item.split(";"))
        values: dict[str, str] = {}
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            values[name.strip().lower()] = value.strip().strip('"')
        yield kind.lower(), values


def accepts_taxii(header: str | None) -> bool:
    """Does an Accept header admit TAXII 2.1 (with or without the version parameter)?"""
    for kind, parameters in _media_ranges(header or ""):
        if kind != _TAXII_TYPE or parameters.get("version", "2.1") != "2.1":
            continue
        try:
            if float(parameters.get("q", "1")) > 0:
                return True
        except ValueError:
            continue
    return False


def is_taxii_content(header: str | None) -> bool:
    """Is a Content-Type TAXII 2.1 (JSON, UTF-8)?"""
    ranges = list(_media_ranges(header or ""))
    if len(ranges) != 1:
        return False
    kind, parameters = ranges[0]
    return (
        kind == _TAXII_TYPE
        and parameters.get("version", "2.1") == "2.1"
        and parameters.get("charset", "utf-8").lower() in ("utf-8", "utf8")
    )


@dataclass(frozen=True)
class TaxiiFilters:
    """The URL filter parameters of one request, checked."""

    limit: int
    next: str | None = None
    added_after_us: int | None = None
    ids: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    versions: VersionFilter = LATEST_VERSION
    spec_versions: tuple[str, ...] = ()

    def query_parts(self) -> tuple[Any, ...]:
        """What a `next` value is bound to (everything but limit and next)."""
        return (
            self.added_after_us,
            self.ids,
            self.types,
            (
                self.versions.all_versions,
                self.versions.first,
                self.versions.last,
                self.versions.keys,
            ),
            self.spec_versions,
        )


def _bad(parameter: str, reason: str) -> TaxiiError:
    return TaxiiError(
        400,
        "Bad filter parameter",
        f"{parameter}: {reason}",
        details={"parameter": parameter},
    )


def parse_filters(
    params: list[tuple[str, str]],
    match_fields: frozenset[str],
    page_cap: int,
    default_versions: VersionFilter = LATEST_VERSION,
) -> TaxiiFilters:
    """Check the filter parameters an endpoint supports (400 for malformed ones).

    Unknown parameters and match fields the endpoint does not support are ignored, as TAXII
    allows; a parameter or match field given twice is malformed.
    """
    seen: dict[str, str] = {}
    for name, value in params:
        if name in ("limit", "next", "added_after") or name.startswith("match["):
            if name in seen:
                raise _bad(name, "given more than once")
            seen[name] = value
    limit = page_cap
    if "limit" in seen:
        try:
            limit = int(seen["limit"])
        except ValueError as error:
            raise _bad("limit", "not an integer") from error
        if limit < 1:
            raise _bad("limit", "must be a positive integer")
        limit = min(limit, page_cap)
    added_after = None
    if "added_after" in seen:
        try:
            added_after = parse_timestamp(seen["added_after"]).micros
        except InvalidTimestamp as error:
            raise _bad("added_after", str(error)) from error
    values = {
        name[6:-1]: _split(name, value)
        for name, value in seen.items()
        if name.startswith("match[") and name.endswith("]") and name[6:-1] in match_fields
    }
    for field in ("spec_version",):
        for value in values.get(field, ()):
            if not _SPEC_VERSION.fullmatch(value):
                raise _bad(f"match[{field}]", f"{value!r} is not a version like 2.1")
    next_token = seen.get("next") or None
    return TaxiiFilters(
        limit=limit,
        next=next_token,
        added_after_us=added_after,
        ids=tuple(values.get("id", ())),
        types=tuple(values.get("type", ())),
        versions=_versions(values["version"]) if "version" in values else default_versions,
        spec_versions=tuple(values.get("spec_version", ())),
    )


def _split(name: str, value: str) -> list[str]:
    parts = value.split(",")
    if any(not part or part != part.strip() for part in parts):
        raise _bad(name, "values are separated by commas, without spaces or empty values")
    if len(set(parts)) != len(parts):
        raise _bad(name, "a value is repeated")
    return parts


def _versions(values: list[str]) -> VersionFilter:
    if "all" in values:
        if len(values) > 1:
            raise _bad("match[version]", "'all' may not be combined with other versions")
        return ALL_VERSIONS
    keys: list[str] = []
    for value in values:
        if value in ("first", "last"):
            continue
        try:
            keys.append(parse_timestamp(value).key)
        except InvalidTimestamp as error:
            raise _bad(
                "match[version]", f"{value!r} is not first, last, all or a timestamp"
            ) from error
    if len(set(keys)) != len(keys):
        raise _bad("match[version]", "a version is repeated")
    return VersionFilter(first="first" in values, last="last" in values, keys=tuple(keys))
