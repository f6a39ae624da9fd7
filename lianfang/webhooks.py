"""Webhook notifications (assignment, escalation): JSON POSTs sent in the background.

A notification is retried with backoff; one that cannot be delivered is written to the
dead-letter file with the reason, never lost silently.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from lianfang.dead_letter import DeadLetterFile

ATTEMPTS = 4
TIMEOUT_SECONDS = 5.0


class WebhookNotifier:
    """Posts notifications to every configured URL from one background thread."""

    def __init__(
        self, urls: list[str], dead_letters: DeadLetterFile, backoff_seconds: float = 0.5
    ) -> None:
        self.urls = urls
        self.dead_letters = dead_letters
        self.backoff_seconds = backoff_seconds
        self.delivered = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None

    def notify(self, kind: str, payload: dict[str, Any]) -> None:
        """Queue a notification of `kind` (assignment, escalation, ...) for every URL."""
        if not self.urls:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
            self._thread.start()
        message = {"kind": kind, **payload}
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._give_up(message, "notification queue full")

    def wait(self) -> None:
        """Block until every queued notification was delivered or dead-lettered."""
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        """Deliver what is queued and stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=60)
            self._thread = None

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            try:
                if message is None:
                    return
                for url in self.urls:
                    self._deliver(url, message)
            finally:
                self._queue.task_done()

    def _deliver(self, url: str, message: dict[str, Any]) -> None:
        body = json.dumps(message, ensure_ascii=False).encode()
        error = ""
        for attempt in range(ATTEMPTS):
            request = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                    if 200 <= response.status < 300:
                        self.delivered += 1
                        return
                    error = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError) as failure:
                error = str(failure)
            time.sleep(self.backoff_seconds * (2**attempt))
        self._give_up(
            {**message, "url": url}, f"webhook not delivered after {ATTEMPTS} attempts: {error}"
        )

    def _give_up(self, message: dict[str, Any], reason: str) -> None:
        self.dead_letters.write(
            stage="webhook",
            source=message.get("url", "webhooks"),
            offset=0,
            reason=reason,
            input=message,
        )
