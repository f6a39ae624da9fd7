"""Department scoping in the store layer: every read and write of a principal goes through here.

A `ScopedStore` wraps the Elasticsearch client for one caller. Each search, count and
aggregation is restricted to the caller's departments (`organization.id`) before it is
sent, and a document outside them is reported as not found, so no endpoint can forget
the restriction and none can tell another department's documents exist.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from elasticsearch import ConflictError, Elasticsearch, NotFoundError

ORGANIZATION_FIELD = "organization.id"


class OutOfScope(LookupError):
    """The document does not exist for this caller (absent, or another department's)."""

    def __init__(self, index: str, document_id: str) -> None:
        super().__init__(f"{document_id} not found in {index}")
        self.index = index
        self.document_id = document_id


class ConcurrentChange(RuntimeError):
    """A document changed under every attempt to update it."""


def scope_filter(
    organization_ids: tuple[str, ...] | None, field: str = ORGANIZATION_FIELD
) -> dict[str, Any] | None:
    """The filter clause that restricts a query to these departments (None: everything)."""
    if organization_ids is None:
        return None
    return {"terms": {field: list(organization_ids)}}


def restrict_query(
    query: dict[str, Any] | None,
    organization_ids: tuple[str, ...] | None,
    field: str = ORGANIZATION_FIELD,
) -> dict[str, Any]:
    """Wrap a query so that it only matches documents of these departments."""
    base = query or {"match_all": {}}
    clause = scope_filter(organization_ids, field)
    if clause is None:
        return base
    return {"bool": {"must": [base], "filter": [clause]}}


def in_scope(document: dict[str, Any], organization_ids: tuple[str, ...] | None) -> bool:
    """True when the document belongs to one of these departments (or scope is everything)."""
    if organization_ids is None:
        return True
    organization = document.get("organization", {})
    value = organization.get("id") if isinstance(organization, dict) else None
    # A document shared by several departments (a joint incident) lists them all.
    values = value if isinstance(value, list) else [value]
    return any(item in organization_ids for item in values)


@dataclass(frozen=True)
class ScopedSearch:
    """One search of a multi-search: its index, body, and the field naming its department.

    Most indices name the department in `organization.id`; a few name it otherwise (who
    published or received a shared object), and the restriction is applied on that field.
    """

    index: str
    body: dict[str, Any]
    scope_field: str = ORGANIZATION_FIELD


class ScopedStore:
    """The Elasticsearch operations an API caller may perform, restricted to its departments."""

    def __init__(self, client: Elasticsearch, organization_ids: tuple[str, ...] | None) -> None:
        self.client = client
        self.organization_ids = organization_ids

    def search(self, index: str, query: dict[str, Any] | None = None, **body: Any) -> Any:
        """A search whose query (and therefore every aggregation) is restricted."""
        return self.client.search(
            index=index,
            query=restrict_query(query, self.organization_ids),
            ignore_unavailable=True,
            allow_no_indices=True,
            **body,
        )

    def msearch(self, searches: Sequence[ScopedSearch]) -> list[dict[str, Any]]:
        """Several restricted searches in one request; a failed search answers {"error": ...}."""
        lines: list[dict[str, Any]] = []
        for search in searches:
            lines.append(
                {"index": search.index, "ignore_unavailable": True, "allow_no_indices": True}
            )
            body = dict(search.body)
            body["query"] = restrict_query(
                body.get("query"), self.organization_ids, search.scope_field
            )
            lines.append(body)
        return list(self.client.msearch(searches=lines)["responses"])

    def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        """How many documents match, within scope."""
        response = self.client.count(
            index=index,
            query=restrict_query(query, self.organization_ids),
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        return int(response["count"])

    def get(self, index: str, document_id: str) -> dict[str, Any]:
        """One document, or OutOfScope when it is absent or another department's."""
        try:
            found = self.client.get(index=index, id=document_id)
        except NotFoundError as error:
            raise OutOfScope(index, document_id) from error
        if not in_scope(found["_source"], self.organization_ids):
            raise OutOfScope(index, document_id)
        return found["_source"]

    def update(
        self,
        index: str,
        document_id: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        attempts: int = 5,
    ) -> dict[str, Any]:
        """Read, change and write back one in-scope document with optimistic concurrency.

        The department of a document cannot be changed through this call.
        """
        for _ in range(attempts):
            try:
                found = self.client.get(index=index, id=document_id)
            except NotFoundError as error:
                raise OutOfScope(index, document_id) from error
            current = found["_source"]
            if not in_scope(current, self.organization_ids):
                raise OutOfScope(index, document_id)
            changed = change(dict(current))
            changed["organization"] = current.get("organization", changed.get("organization"))
            if changed.get("organization") is None:
                changed.pop("organization", None)
            try:
                self.client.index(
                    index=index,
                    id=document_id,
                    document=changed,
                    if_seq_no=found["_seq_no"],
                    if_primary_term=found["_primary_term"],
                    refresh="wait_for",
                )
                return changed
            except ConflictError:
                continue
        raise ConcurrentChange(f"{document_id} in {index} kept changing under {attempts} attempts")

    def create(self, index: str, document_id: str, document: dict[str, Any]) -> None:
        """Create a document, which must belong to one of the caller's departments."""
        if not in_scope(document, self.organization_ids):
            raise OutOfScope(index, document_id)
        self.client.create(index=index, id=document_id, document=document, refresh="wait_for")
