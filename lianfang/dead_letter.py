"""The dead-letter file: input that could not be parsed or stored is kept, with the reason."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class DeadLetterFile:
    """Append-only JSON lines (time, stage, source, offset, reason, input), one file per day."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def path_for(self, moment: datetime) -> Path:
        """The file a dead letter written at `moment` goes to."""
        return self.directory / f"dead-letter-{moment.astimezone(UTC):%Y-%m-%d}.jsonl"

    @property
    def current_path(self) -> Path:
        """Today's file."""
        return self.path_for(datetime.now(UTC))

    def write(self, *, stage: str, source: str, offset: int, reason: str, input: Any) -> None:
        """Record one rejected input; `stage` is where it failed (parse, index, ...)."""
        now = datetime.now(UTC)
        record = {
            "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "stage": stage,
            "source": source,
            "offset": offset,
            "reason": reason,
            "input": input,
        }
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.path_for(now).open("a", encoding="utf-8", errors="surrogateescape") as sink:
                sink.write(line)
            self.counts[stage] += 1

    @property
    def total(self) -> int:
        """How many dead letters this instance wrote."""
        return sum(self.counts.values())
