"""An indicator lookup for long-running inputs, reloaded from its source in the background.

A syslog server, a collector or the HTTP ingest API runs for weeks; indicators are added,
revoked and expire meanwhile. `RefreshingLookup` is an `IndicatorLookup` that holds the
set loaded last and, when it is older than `refresh_seconds`, has a background thread load
a new one and swap it in. Events are never held up by a reload: they are matched against
the previous set until the new one is complete. A reload that fails (Elasticsearch
unreachable, a broken answer) keeps the previous set, is logged and counted, and is tried
again `refresh_seconds` later, so a set that was empty at start-up fills as soon as the
store answers.

The loader is a plain callable, so this module does not know where indicators come from;
`sharing/indicator_matching.py` gives it one that reads the intelligence store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from collectors.intel_hook import IndicatorLookup, IndicatorMatch, IndicatorSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LookupStatus:
    """What a refreshing lookup holds and how its reloads went."""

    indicators: int | None  # None: the lookup does not say how many it holds
    loads: int
    failures: int
    loaded_at: str | None
    last_error: str | None
    last_error_at: str | None

    def as_dict(self) -> dict[str, Any]:
        """For --json output and status files."""
        return {
            "indicators": self.indicators,
            "loads": self.loads,
            "failures": self.failures,
            "loaded_at": self.loaded_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }


class RefreshingLookup:
    """An `IndicatorLookup` over the last set `load` returned, reloaded every `refresh_seconds`."""

    def __init__(
        self,
        load: Callable[[], IndicatorLookup],
        refresh_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._current: IndicatorLookup = IndicatorSet()
        self._last_attempt: float | None = None  # clock() when the last load started
        self._lock = threading.Lock()
        self._reloading = False
        self._loads = 0
        self._failures = 0
        self._loaded_at: str | None = None
        self._last_error: str | None = None
        self._last_error_at: str | None = None

    def match(self, document: Mapping[str, Any]) -> list[IndicatorMatch]:
        """Every match in the document, against the current set (a stale one starts a reload)."""
        self._reload_if_stale()
        return self._current.match(document)

    def load_now(self) -> bool:
        """Load in the calling thread; False (previous set kept) when the load failed."""
        with self._lock:
            self._last_attempt = self._clock()
        return self._reload()

    def status(self) -> LookupStatus:
        """The current set's size and the reload counters."""
        current = self._current
        return LookupStatus(
            indicators=len(current) if isinstance(current, Sized) else None,
            loads=self._loads,
            failures=self._failures,
            loaded_at=self._loaded_at,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
        )

    def _reload_if_stale(self) -> None:
        # Cheap on the hot path: one clock read and a comparison per event.
        last = self._last_attempt
        now = self._clock()
        if last is not None and now - last < self.refresh_seconds:
            return
        with self._lock:
            last = self._last_attempt
            if self._reloading or (last is not None and now - last < self.refresh_seconds):
                return
            self._reloading = True
            self._last_attempt = now
        thread = threading.Thread(target=self._reload_in_background, name="intel-reload")
        thread.daemon = True  # a reload in progress must not keep a stopping process alive
        thread.start()

    def _reload_in_background(self) -> None:
        try:
            self._reload()
        finally:
            with self._lock:
                self._reloading = False

    def _reload(self) -> bool:
        try:
            fresh = self._load()
        except Exception as error:  # any failure keeps the previous set: ingest must go on
            self._failures += 1
            self._last_error = f"{type(error).__name__}: {error}"
            self._last_error_at = _now()
            log.warning(
                "reloading the indicators failed (%d so far), matching with the previous %s: %s",
                self._failures,
                "set" if self._loads else "(empty) set",
                self._last_error,
            )
            return False
        self._current = fresh  # one reference swap: matching threads see old or new, whole
        self._loads += 1
        self._loaded_at = _now()
        return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
