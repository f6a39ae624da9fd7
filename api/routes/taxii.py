"""The TAXII 2.1 server under /taxii2/: discovery, API root, status, collections, objects.

Mounted as a sub-application so that every answer under /taxii2/, errors included (unknown
paths, 405s, malformed parameters), is TAXII: `application/taxii+json;version=2.1` with the
TAXII error message resource. Authentication is the API's (Bearer API keys, HTTP Basic);
who may read or write a collection comes from the TAXII configuration
(sharing/taxii_collections.py), what may be published into it from the TLP policy
(sharing/tlp.py), and every response that hands out objects is first written to the
disclosure audit (sharing/disclosure_audit.py).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import orjson
from elasticsearch import ApiError, TransportError
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.authentication import current_principal
from api.dependencies import AppServices
from api.taxii_http import (
    STIX_MEDIA_TYPE,
    TAXII_MEDIA_TYPE,
    TaxiiError,
    TaxiiFilters,
    accepts_taxii,
    error_response,
    is_taxii_content,
    parse_filters,
    taxii_json,
)
from lianfang.principals import Principal, Role
from lianfang.store import StoreUnavailable
from sharing.disclosure_audit import DisclosedObject, DisclosureAudit
from sharing.object_store import ALL_VERSIONS, ObjectQuery, StoredVersion, TaxiiObjectStore
from sharing.object_validation import ObjectValidator, validator_named
from sharing.taxii_collections import CollectionConfig, TaxiiConfig, load_taxii_config
from sharing.taxii_intake import AddObjectsJob, IntakeLimits, MalformedEnvelope
from sharing.taxii_paging import InvalidNext, decode_next, encode_next, fingerprint
from sharing.taxii_status import TaxiiStatusStore
from sharing.taxii_timestamps import format_micros, now_micros
from sharing.tlp import TlpLevel, may_receive

log = logging.getLogger(__name__)
MOUNT_PATH = "/taxii2"
OBJECT_MATCH = frozenset({"id", "type", "version", "spec_version"})
ONE_OBJECT_MATCH = frozenset({"version", "spec_version"})
VERSIONS_MATCH = frozenset({"spec_version"})
BODY_SPOOL_MEMORY = 1024 * 1024
POST_WORKERS = 2


@dataclass
class TaxiiServices:
    """Created on first use from the API's services and shared by every TAXII request."""

    api: AppServices
    config: TaxiiConfig
    objects: TaxiiObjectStore
    statuses: TaxiiStatusStore
    disclosures: DisclosureAudit
    validator: ObjectValidator
    executor: ThreadPoolExecutor


@dataclass(frozen=True)
class Caller:
    """An authenticated TAXII request: who asks, and the services to answer."""

    principal: Principal
    services: TaxiiServices


def mount(app: FastAPI) -> FastAPI:
    """Mount the TAXII server on the API at /taxii2/ and return the sub-application."""
    taxii = FastAPI(title="Lianfang TAXII 2.1", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()

    def services() -> TaxiiServices:
        state = taxii.state
        if getattr(state, "services", None) is None:
            with lock:
                if getattr(state, "services", None) is None:
                    state.services = _build_services(app.state.services)
        return state.services

    taxii.state.services_of = services
    _install_error_handlers(taxii)
    _add_routes(taxii)
    app.mount(MOUNT_PATH, taxii)
    return taxii


def _build_services(api: AppServices) -> TaxiiServices:
    config = load_taxii_config(api.settings.taxii_collections_path)
    prefix = api.settings.index_prefix
    objects = TaxiiObjectStore(api.client, prefix)
    statuses = TaxiiStatusStore(api.client, prefix)
    disclosures = DisclosureAudit(api.client, prefix)
    for store in (objects, statuses, disclosures):
        store.install()
    return TaxiiServices(
        api=api,
        config=config,
        objects=objects,
        statuses=statuses,
        disclosures=disclosures,
        validator=validator_named(config.server.validator),
        executor=ThreadPoolExecutor(max_workers=POST_WORKERS, thread_name_prefix="taxii-post"),
    )


# ------------------------------------------------------------------ errors


def _install_error_handlers(taxii: FastAPI) -> None:
    @taxii.exception_handler(TaxiiError)
    async def taxii_error(_: Request, error: TaxiiError) -> Response:
        return error_response(error)

    @taxii.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        titles = {404: "Not found", 405: "Method not allowed"}
        return error_response(
            TaxiiError(
                error.status_code,
                titles.get(error.status_code, "HTTP error"),
                str(error.detail),
                headers=dict(getattr(error, "headers", None) or {}),
            )
        )

    @taxii.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> Response:
        return error_response(TaxiiError(400, "Bad request", str(error.errors())[:500]))

    @taxii.exception_handler(InvalidNext)
    async def invalid_next(_: Request, error: InvalidNext) -> Response:
        return error_response(TaxiiError(400, "Bad next value", error.reason))

    @taxii.exception_handler(StoreUnavailable)
    @taxii.exception_handler(TransportError)
    async def unavailable(_: Request, error: Exception) -> Response:
        return error_response(TaxiiError(503, "Store unavailable", str(error)[:500]))

    @taxii.exception_handler(ApiError)
    async def store_error(_: Request, error: ApiError) -> Response:
        status = 503 if error.status_code in (429, 502, 503, 504) else 502
        return error_response(TaxiiError(status, "Store error", str(error)[:500]))


# ------------------------------------------------------------------ request checks


def _caller(request: Request, api_root: str | None = None) -> Caller:
    """Authenticate, negotiate the media type, check the API root."""
    services: TaxiiServices = request.app.state.services_of()
    try:
        principal = current_principal(request, services.api)
    except HTTPException as error:
        raise TaxiiError(
            error.status_code,
            "Unauthorized" if error.status_code == 401 else "Too many requests",
            str(error.detail),
            headers=dict(error.headers or {}),
        ) from error
    if not accepts_taxii(request.headers.get("accept")):
        raise TaxiiError(
            406,
            "Not acceptable",
            f"the Accept header must admit {TAXII_MEDIA_TYPE}",
        )
    if api_root is not None and api_root != services.config.api_root.name:
        raise TaxiiError(404, "API root not found", f"no API root {api_root!r}")
    return Caller(principal, services)


def _visible(caller: Caller, collection_id: str) -> CollectionConfig:
    collection = caller.services.config.collection(collection_id)
    if collection is None or not collection.visible_to(caller.principal):
        raise TaxiiError(404, "Collection not found", f"no collection {collection_id!r}")
    return collection


def _readable(caller: Caller, collection_id: str) -> CollectionConfig:
    collection = _visible(caller, collection_id)
    if not collection.can_read_for(caller.principal):
        raise TaxiiError(403, "Forbidden", "you may not read this collection")
    return collection


def _sees_red(principal: Principal, collection: CollectionConfig) -> bool:
    return may_receive(TlpLevel.RED, collection.department, principal.department)


def _page_headers(versions: list[StoredVersion]) -> dict[str, str]:
    if not versions:
        return {}
    return {
        "X-TAXII-Date-Added-First": format_micros(versions[0].date_added_us),
        "X-TAXII-Date-Added-Last": format_micros(versions[-1].date_added_us),
    }


def _page(
    caller: Caller,
    request: Request,
    collection: CollectionConfig,
    kind: str,
    match_fields: frozenset[str],
    object_id: str | None = None,
    with_objects: bool = False,
    default_all_versions: bool = False,
) -> tuple[list[StoredVersion], bool, str | None]:
    """One page of versions for an endpoint, and the next value when more follow."""
    cap = caller.services.config.server.page_cap
    defaults = {"default_versions": ALL_VERSIONS} if default_all_versions else {}
    filters: TaxiiFilters = parse_filters(
        request.query_params.multi_items(), match_fields, cap, **defaults
    )
    query = ObjectQuery(
        collection=collection.id,
        object_ids=(object_id,) if object_id else filters.ids,
        types=filters.types,
        versions=filters.versions,
        spec_versions=filters.spec_versions,
        added_after_us=filters.added_after_us,
        hide_red=not _sees_red(caller.principal, collection),
    )
    owner = fingerprint(kind, collection.id, object_id, filters.query_parts())
    after = decode_next(filters.next, owner) if filters.next else None
    versions, more = caller.services.objects.page(query, filters.limit, after, with_objects)
    following = encode_next(versions[-1].position, owner) if more and versions else None
    return versions, more, following


def _audit(
    caller: Caller, collection: CollectionConfig, endpoint: str, versions: list[StoredVersion]
) -> None:
    """Record the disclosure before the objects leave (no record, no disclosure)."""
    if versions:
        caller.services.disclosures.record(
            caller.principal,
            collection.id,
            collection.alias,
            endpoint,
            [DisclosedObject(v.object_id, v.version, v.tlp) for v in versions],
        )


def _envelope(versions: list[StoredVersion], more: bool, following: str | None) -> bytes:
    """The envelope, with each stored object's JSON copied in as stored."""
    head: dict[str, Any] = {"more": more}
    if following:
        head["next"] = following
    if not versions:
        return _json(head)
    objects = ",".join(version.raw or "null" for version in versions)
    return _json(head)[:-1] + b',"objects":[' + objects.encode("utf-8") + b"]}"


def _json(content: dict[str, Any]) -> bytes:
    return orjson.dumps(content)


def _collection_resource(collection: CollectionConfig, principal: Principal) -> dict[str, Any]:
    resource: dict[str, Any] = {"id": collection.id, "title": collection.title}
    if collection.description:
        resource["description"] = collection.description
    if collection.alias:
        resource["alias"] = collection.alias
    resource["can_read"] = collection.can_read_for(principal)
    resource["can_write"] = collection.can_write_for(principal)
    resource["media_types"] = [STIX_MEDIA_TYPE]
    return resource


# ------------------------------------------------------------------ endpoints


def _add_routes(taxii: FastAPI) -> None:
    @taxii.get("/")
    def discovery(request: Request) -> Response:
        """Server discovery (TAXII 2.1 section 4.1)."""
        caller = _caller(request)
        config = caller.services.config
        root = f"{request.scope.get('root_path', '')}/{config.api_root.name}/"
        resource: dict[str, Any] = {"title": config.server.title}
        if config.server.description:
            resource["description"] = config.server.description
        if config.server.contact:
            resource["contact"] = config.server.contact
        resource["default"] = root
        resource["api_roots"] = [root]
        return taxii_json(resource)

    @taxii.get("/{api_root}/")
    def api_root_information(request: Request, api_root: str) -> Response:
        """API root information (section 4.2)."""
        caller = _caller(request, api_root)
        config = caller.services.config
        resource: dict[str, Any] = {"title": config.api_root.title}
        if config.api_root.description:
            resource["description"] = config.api_root.description
        resource["versions"] = [TAXII_MEDIA_TYPE]
        resource["max_content_length"] = config.server.max_content_length
        return taxii_json(resource)

    # taxii2-client asks for the status without the trailing slash.
    @taxii.get("/{api_root}/status/{status_id}/")
    @taxii.get("/{api_root}/status/{status_id}", include_in_schema=False)
    def status(request: Request, api_root: str, status_id: str) -> Response:
        """A status resource (section 4.3): only its requester or an administrator sees it."""
        caller = _caller(request, api_root)
        resource = caller.services.statuses.resource(
            status_id, caller.principal.name, caller.principal.role is Role.ADMINISTRATOR
        )
        if resource is None:
            raise TaxiiError(404, "Status not found", f"no status {status_id!r}")
        return taxii_json(resource)

    @taxii.get("/{api_root}/collections/")
    def collections(request: Request, api_root: str) -> Response:
        """The collections this principal may read or write (section 5.1)."""
        caller = _caller(request, api_root)
        listed = [
            _collection_resource(collection, caller.principal)
            for collection in caller.services.config.collections
            if collection.visible_to(caller.principal)
        ]
        return taxii_json({"collections": listed} if listed else {})

    @taxii.get("/{api_root}/collections/{collection_id}/")
    def collection(request: Request, api_root: str, collection_id: str) -> Response:
        """One collection (section 5.2)."""
        caller = _caller(request, api_root)
        return taxii_json(_collection_resource(_visible(caller, collection_id), caller.principal))

    @taxii.get("/{api_root}/collections/{collection_id}/manifest/")
    def manifest(request: Request, api_root: str, collection_id: str) -> Response:
        """Manifest records of the matching versions (section 5.3)."""
        caller = _caller(request, api_root)
        collection = _readable(caller, collection_id)
        versions, more, following = _page(caller, request, collection, "manifest", OBJECT_MATCH)
        resource: dict[str, Any] = {"more": more}
        if following:
            resource["next"] = following
        if versions:
            resource["objects"] = [
                {
                    "id": version.object_id,
                    "date_added": format_micros(version.date_added_us),
                    "version": version.version,
                    "media_type": f"application/stix+json;version={version.spec_version}",
                }
                for version in versions
            ]
        return taxii_json(resource, headers=_page_headers(versions))

    @taxii.get("/{api_root}/collections/{collection_id}/objects/")
    def get_objects(request: Request, api_root: str, collection_id: str) -> Response:
        """Objects of a collection, filtered and paged (section 5.4)."""
        caller = _caller(request, api_root)
        collection = _readable(caller, collection_id)
        versions, more, following = _page(
            caller, request, collection, "objects", OBJECT_MATCH, with_objects=True
        )
        _audit(caller, collection, "objects", versions)
        return taxii_json(_envelope(versions, more, following), headers=_page_headers(versions))

    @taxii.post("/{api_root}/collections/{collection_id}/objects/")
    async def add_objects(request: Request, api_root: str, collection_id: str) -> Response:
        """Add objects (section 5.5): 202 with the status, complete or still pending."""
        caller = await run_in_threadpool(_caller, request, api_root)
        collection = _visible(caller, collection_id)
        if not collection.can_write_for(caller.principal):
            raise TaxiiError(403, "Forbidden", "you may not add objects to this collection")
        if not is_taxii_content(request.headers.get("content-type")):
            raise TaxiiError(
                415, "Unsupported media type", f"the Content-Type must be {TAXII_MEDIA_TYPE}"
            )
        server = caller.services.config.server
        body = await _spool_body(request, server.max_content_length)
        job = AddObjectsJob(
            status_id=str(uuid.uuid4()),
            request_timestamp_us=now_micros(),
            collection=collection,
            publisher=caller.principal,
            objects=caller.services.objects,
            statuses=caller.services.statuses,
            validator=caller.services.validator,
            limits=IntakeLimits(server.post_batch_size, server.unmarked_level),
        )
        try:
            await run_in_threadpool(job.prepare, body)
        except MalformedEnvelope as error:
            job.discard()
            raise TaxiiError(error.status, "Unprocessable envelope", error.reason) from error
        finally:
            body.close()
        stored = asyncio.wrap_future(caller.services.executor.submit(job.store))
        try:
            await asyncio.wait_for(asyncio.shield(stored), server.post_wait_seconds)
        except TimeoutError:
            await run_in_threadpool(job.publish)  # answered as pending; the client polls
        except Exception:  # the status tells what was stored before the failure
            log.exception("TAXII status %s: storing failed", job.status_id)
        resource = job.resource() if stored.done() else None
        if resource is None:
            resource = await run_in_threadpool(
                caller.services.statuses.resource, job.status_id, caller.principal.name, True
            )
        return taxii_json(resource or {}, 202)

    @taxii.get("/{api_root}/collections/{collection_id}/objects/{object_id}/")
    def get_object(request: Request, api_root: str, collection_id: str, object_id: str) -> Response:
        """The versions of one object (section 5.6); 404 when none match."""
        caller = _caller(request, api_root)
        collection = _readable(caller, collection_id)
        versions, more, following = _page(
            caller,
            request,
            collection,
            "object",
            ONE_OBJECT_MATCH,
            object_id=object_id,
            with_objects=True,
        )
        if not versions and not request.query_params.get("next"):
            raise TaxiiError(404, "Object not found", f"no {object_id} matches in this collection")
        _audit(caller, collection, "object", versions)
        return taxii_json(_envelope(versions, more, following), headers=_page_headers(versions))

    @taxii.delete("/{api_root}/collections/{collection_id}/objects/{object_id}/")
    def delete_object(
        request: Request, api_root: str, collection_id: str, object_id: str
    ) -> Response:
        """Delete an object, or the versions matched by the filters (section 5.7)."""
        caller = _caller(request, api_root)
        collection = _visible(caller, collection_id)
        if not (
            collection.can_read_for(caller.principal) and collection.can_write_for(caller.principal)
        ):
            raise TaxiiError(403, "Forbidden", "deleting needs both read and write access")
        filters = parse_filters(
            request.query_params.multi_items(),
            ONE_OBJECT_MATCH,
            caller.services.config.server.page_cap,
            default_versions=ALL_VERSIONS,
        )
        deleted = caller.services.objects.delete(
            ObjectQuery(
                collection=collection.id,
                object_ids=(object_id,),
                versions=filters.versions,
                spec_versions=filters.spec_versions,
                hide_red=not _sees_red(caller.principal, collection),
            )
        )
        if not deleted:
            raise TaxiiError(404, "Object not found", f"no {object_id} matches in this collection")
        return Response(status_code=200, media_type=TAXII_MEDIA_TYPE)

    @taxii.get("/{api_root}/collections/{collection_id}/objects/{object_id}/versions/")
    def object_versions(
        request: Request, api_root: str, collection_id: str, object_id: str
    ) -> Response:
        """The versions of an object (section 5.8), in date-added order."""
        caller = _caller(request, api_root)
        collection = _readable(caller, collection_id)
        versions, more, following = _page(
            caller,
            request,
            collection,
            "versions",
            VERSIONS_MATCH,
            object_id=object_id,
            default_all_versions=True,
        )
        if not versions and not request.query_params.get("next"):
            raise TaxiiError(404, "Object not found", f"no {object_id} in this collection")
        resource: dict[str, Any] = {"more": more}
        if following:
            resource["next"] = following
        if versions:
            resource["versions"] = [version.version for version in versions]
        return taxii_json(resource, headers=_page_headers(versions))


async def _spool_body(request: Request, limit: int) -> IO[bytes]:
    """The request body in a temporary file (memory while small); 413 beyond `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_large = int(declared) > limit
        except ValueError as error:
            raise TaxiiError(400, "Bad request", "Content-Length is not a number") from error
        if too_large:
            raise _too_large(limit)
    # Handed to the caller, who closes it: no context manager here.
    spool = tempfile.SpooledTemporaryFile(max_size=BODY_SPOOL_MEMORY)  # noqa: SIM115
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            spool.close()
            raise _too_large(limit)
        spool.write(chunk)
    spool.seek(0)
    return spool


def _too_large(limit: int) -> TaxiiError:
    return TaxiiError(
        413, "Request entity too large", f"the API root accepts at most {limit} bytes per request"
    )
