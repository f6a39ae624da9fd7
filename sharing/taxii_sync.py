"""TAXII 2.1 client sync with configured peers: incremental pull, push of what we share.

Peers are configured in `[intel]` (`lianfang.toml`)::

    [[intel.peers]]
    name = "cert"                                  # used in bookmarks and `taxii:<name>`
    api_root = "https://cert.example/taxii2/api1/"
    username = "lianfang"
    password_env = "LIANFANG_PEER_CERT_PASSWORD"   # the secret stays in the environment
    max_tlp = "amber"                              # never send this peer anything stricter
    collections = [{id = "…", direction = "pull"}, {id = "…", direction = "both"}]

Pull (`lianfang intel pull`) asks each pull collection for objects `added_after` the
peer's bookmark, page by page (following `next`), hands every page to the intelligence
store (validation, quarantine, dedupe by id + modified, indicator state) and then moves
the bookmark to the page's `X-TAXII-Date-Added-Last`. Bookmarks live in
`<home_dir>/intel/taxii-state.json`, replaced atomically after every page, so a restart
resumes where the last acknowledged page ended.

Push (`lianfang intel push`) sends each push collection the outbox entries meant for
everyone or for this peer, after the last (sequence, key) the peer acknowledged, in pages;
entries whose TLP is stricter than `max_tlp` (and TLP:RED always) are held back and
counted. The push bookmark moves only after the server's status for the page.

Every request is retried on connection errors, timeouts, 429 and 5xx with a doubling
backoff (`sync_retries`, `sync_backoff_seconds`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
from elasticsearch import Elasticsearch
from taxii2client.common import _HTTPConnection
from taxii2client.v21 import Collection

from collectors.atomic_file import write_json_atomically
from lianfang.settings import Settings, TaxiiPeer
from sharing.indicator_confidence import ConfidenceRule
from sharing.intel_hunt import intel_state_dir
from sharing.intel_store import IntakeReport, IntelStore
from sharing.stix_outbox import Outbox, OutboxEntry
from sharing.tlp import TlpLevel, parse_level

DATE_ADDED_LAST = "X-TAXII-Date-Added-Last"
DUPLICATE_CHECKS = 100
T = TypeVar("T")


class PeerConfigError(ValueError):
    """A peer that cannot be used as configured; carries the peer name and the reason."""

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"peer {peer}: {reason}")
        self.peer = peer
        self.reason = reason


class PeerUnavailable(RuntimeError):
    """A peer kept failing after every retry; carries the peer name and the last error."""

    def __init__(self, peer: str, error: Exception) -> None:
        super().__init__(f"peer {peer}: {type(error).__name__}: {error}")
        self.peer = peer
        self.error = error


class SyncState:
    """The bookmarks of every peer and collection, persisted atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            self.data = {}

    def _slot(self, peer: str, collection: str) -> dict[str, Any]:
        return self.data.setdefault(peer, {}).setdefault(collection, {})

    def pull_bookmark(self, peer: str, collection: str) -> str | None:
        """The `added_after` to ask for next."""
        return self._slot(peer, collection).get("added_after")

    def set_pull_bookmark(self, peer: str, collection: str, value: str) -> None:
        """Advance the pull bookmark and persist it."""
        self._slot(peer, collection)["added_after"] = value
        self.save()

    def push_bookmark(self, peer: str, collection: str) -> list[Any] | None:
        """The last outbox position the peer acknowledged."""
        return self._slot(peer, collection).get("pushed_after")

    def set_push_bookmark(self, peer: str, collection: str, value: list[Any]) -> None:
        """Advance the push bookmark and persist it."""
        self._slot(peer, collection)["pushed_after"] = value
        self.save()

    def save(self) -> None:
        """Replace the state file atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.path, self.data)


def sync_state_path(settings: Settings) -> Path:
    """Where the TAXII bookmarks are kept."""
    return intel_state_dir(settings) / "taxii-state.json"


@dataclass
class CollectionReport:
    """What one pull or push of one collection did."""

    peer: str
    collection: str
    direction: str
    pages: int = 0
    objects: int = 0
    held_back: int = 0
    already_present: int = 0
    failures: list[str] = field(default_factory=list)
    bookmark: Any = None
    intake: IntakeReport = field(default_factory=IntakeReport)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """For --json output."""
        return {
            "peer": self.peer,
            "collection": self.collection,
            "direction": self.direction,
            "pages": self.pages,
            "objects": self.objects,
            "held_back": self.held_back,
            "already_present": self.already_present,
            "failures": self.failures[:20],
            "bookmark": self.bookmark,
            "intake": self.intake.as_dict() if self.direction == "pull" else None,
            "error": self.error,
        }


class PeerConnection:
    """The official taxii2-client talking to one peer, with retries and header capture."""

    def __init__(
        self,
        peer: TaxiiPeer,
        *,
        retries: int,
        backoff_seconds: float,
        timeout_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.peer = peer
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        password = None
        if peer.password_env:
            password = os.environ.get(peer.password_env)
            if password is None:
                raise PeerConfigError(
                    peer.name, f"environment variable {peer.password_env} is not set"
                )
        self.connection = _HTTPConnection(
            user=peer.username, password=password, verify=peer.verify_tls, version="2.1"
        )
        self.last_headers: dict[str, str] = {}
        self.connection.session.hooks["response"].append(self._remember_headers)
        self._timeout = timeout_seconds
        original = self.connection.session.request

        def request_with_timeout(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self._timeout)
            return original(*args, **kwargs)

        self.connection.session.request = request_with_timeout  # type: ignore[method-assign]

    def _remember_headers(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.last_headers = dict(response.headers)

    def collection(self, collection_id: str) -> Collection:
        """A collection endpoint of the peer's API root."""
        root = self.peer.api_root if self.peer.api_root.endswith("/") else self.peer.api_root + "/"
        return Collection(f"{root}collections/{collection_id}/", conn=self.connection)

    def call(self, action: Callable[[], T]) -> T:
        """Run one request, retrying transient failures with a doubling backoff."""
        delay = self.backoff_seconds
        for attempt in range(self.retries + 1):
            try:
                return action()
            except requests.HTTPError as error:
                status = error.response.status_code if error.response is not None else None
                if status is not None and status != 429 and status < 500:
                    raise PeerUnavailable(self.peer.name, error) from error
                last: Exception = error
            except (requests.ConnectionError, requests.Timeout) as error:
                last = error
            if attempt < self.retries:
                self.sleep(delay)
                delay *= 2
        raise PeerUnavailable(self.peer.name, last)

    def close(self) -> None:
        """Release the HTTP session."""
        self.connection.close()


def may_send(level: TlpLevel | None, maximum: TlpLevel) -> bool:
    """May an object of this TLP go to a peer whose ceiling is `maximum`? RED never leaves."""
    if level is None or level is TlpLevel.RED:
        return False
    return level.rank <= maximum.rank


class TaxiiSync:
    """Pull from and push to the configured peers."""

    def __init__(
        self,
        settings: Settings,
        client: Elasticsearch,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.store = IntelStore(
            client, settings.index_prefix, ConfidenceRule.from_settings(settings.intel)
        )
        self.outbox = Outbox(client, settings.index_prefix)
        self.state = SyncState(sync_state_path(settings))
        self.sleep = sleep

    def peers(self, name: str | None = None) -> list[TaxiiPeer]:
        """The configured peers (one by name)."""
        peers = self.settings.intel.peers
        if name is None:
            return list(peers)
        chosen = [p for p in peers if p.name == name]
        if not chosen:
            raise PeerConfigError(name, f"not configured (known: {[p.name for p in peers]})")
        return chosen

    def _connect(self, peer: TaxiiPeer) -> PeerConnection:
        intel = self.settings.intel
        return PeerConnection(
            peer,
            retries=intel.sync_retries,
            backoff_seconds=intel.sync_backoff_seconds,
            timeout_seconds=intel.sync_timeout_seconds,
            sleep=self.sleep,
        )

    def pull(self, peer_name: str | None = None) -> list[CollectionReport]:
        """Pull every pull collection of the peers; a failing collection is reported."""
        reports = []
        for peer in self.peers(peer_name):
            connection = self._connect(peer)
            try:
                for collection in peer.collections:
                    if collection.direction in ("pull", "both"):
                        reports.append(self._pull_collection(connection, collection.id))
            finally:
                connection.close()
        return reports

    def _pull_collection(self, connection: PeerConnection, collection_id: str) -> CollectionReport:
        peer = connection.peer
        report = CollectionReport(peer.name, collection_id, "pull")
        endpoint = connection.collection(collection_id)
        bookmark = self.state.pull_bookmark(peer.name, collection_id)
        filters: dict[str, Any] = {"added_after": bookmark} if bookmark else {}
        next_token: str | None = None
        try:
            while True:
                arguments = dict(filters)
                if next_token:
                    arguments["next"] = next_token
                envelope = connection.call(
                    lambda a=arguments: endpoint.get_objects(limit=peer.page_size, **a)
                )
                report.pages += 1
                objects = envelope.get("objects") or []
                report.objects += len(objects)
                report.intake.add(
                    self.store.intake(
                        objects, source=f"taxii:{peer.name}", collection=collection_id
                    )
                )
                last = connection.last_headers.get(DATE_ADDED_LAST)
                if last:
                    self.state.set_pull_bookmark(peer.name, collection_id, last)
                    report.bookmark = last
                if not envelope.get("more"):
                    break
                next_token = envelope.get("next")
                if not next_token:
                    if not last:
                        report.failures.append(
                            "more pages but neither next nor a date to resume at"
                        )
                        break
                    filters = {"added_after": last}  # servers without `next`
        except PeerUnavailable as error:
            report.error = str(error)
        return report

    def push(self, peer_name: str | None = None) -> list[CollectionReport]:
        """Push the outbox to every push collection of the peers."""
        reports = []
        for peer in self.peers(peer_name):
            connection = self._connect(peer)
            try:
                for collection in peer.collections:
                    if collection.direction in ("push", "both"):
                        reports.append(self._push_collection(connection, collection.id))
            finally:
                connection.close()
        return reports

    def _push_collection(self, connection: PeerConnection, collection_id: str) -> CollectionReport:
        peer = connection.peer
        report = CollectionReport(peer.name, collection_id, "push")
        maximum = parse_level(peer.max_tlp)
        endpoint = connection.collection(collection_id)
        position = self.state.push_bookmark(peer.name, collection_id)
        batch: list[OutboxEntry] = []
        last_position = position
        try:
            for entry in self.outbox.entries(after=position, reader=peer.name):
                last_position = entry.position
                if not may_send(entry.tlp, maximum):
                    report.held_back += 1
                    continue
                batch.append(entry)
                if len(batch) >= peer.page_size:
                    self._send(connection, endpoint, batch, report)
                    self.state.set_push_bookmark(peer.name, collection_id, batch[-1].position)
                    batch = []
            if batch:
                self._send(connection, endpoint, batch, report)
            if last_position is not None and last_position != position:
                self.state.set_push_bookmark(peer.name, collection_id, last_position)
                report.bookmark = last_position
        except PeerUnavailable as error:
            report.error = str(error)
        return report

    def _send(
        self,
        connection: PeerConnection,
        endpoint: Collection,
        batch: list[OutboxEntry],
        report: CollectionReport,
    ) -> None:
        envelope = json.dumps({"objects": [entry.object for entry in batch]}, ensure_ascii=False)
        status = connection.call(
            lambda: endpoint.add_objects(
                envelope,
                wait_for_completion=True,
                poll_interval=0.5,
                timeout=self.settings.intel.sync_timeout_seconds,
            )
        )
        report.pages += 1
        report.objects += len(batch)
        for position, failure in enumerate(status.failures or ()):
            # Servers (medallion among them) refuse a version they already hold; that is
            # no failure for an idempotent push. Check up to a bound, count the rest.
            if position < DUPLICATE_CHECKS and self._already_present(connection, endpoint, failure):
                report.already_present += 1
                continue
            report.failures.append(
                f"{failure.get('id')} {failure.get('version', '')}: {failure.get('message', 'refused')}"
            )

    @staticmethod
    def _already_present(
        connection: PeerConnection, endpoint: Collection, failure: dict[str, Any]
    ) -> bool:
        object_id, version = failure.get("id"), failure.get("version")
        if not object_id:
            return False
        try:
            found = connection.call(
                lambda: endpoint.get_object(object_id, version=version or "last")
            )
        except PeerUnavailable:
            return False
        return bool(found.get("objects"))
