"""The ingest pipelines of push inputs: one per stream, sharing enrichment per department.

A push input (syslog listener, stdin, a file group of a collector configuration) keeps
one `IngestPipeline` per stream it reads (a peer, a file), so each stream has its own
detected format and parser state, while the enrichment stages and the dead-letter file
(which load the asset inventory and hold the masking policy) are built once per
department. Configuration errors (no masking key, a broken inventory, an unknown format)
surface when the factory is built, before anything is read. An indicator lookup given to
the factory (a `RefreshingLookup` for these long-running inputs) is shared by all of its
pipelines: every event is matched against the active intelligence at ingest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from collectors.enrichment import Stage, build_enrichment_stages, dead_letter_file_for
from collectors.formats import get_format
from collectors.intel_hook import IndicatorLookup
from collectors.log_format import ParseContext, Record
from collectors.masking import MaskingPolicy
from collectors.normalise import Department, Normaliser
from collectors.pipeline import IngestPipeline
from lianfang.dead_letter import DeadLetterFile
from lianfang.schema import Event, Origin
from lianfang.settings import Settings


@dataclass(frozen=True)
class PipelineCounts:
    """What one call of `run_pipeline` did with its records."""

    read: int
    parsed: int
    skipped: int
    failed: int  # dead-lettered at parsing


class PipelineFactory:
    """Builds pipelines for one input: fixed or detected format, department per stream."""

    def __init__(
        self,
        settings: Settings,
        format_name: str | None = None,
        *,
        indicators: IndicatorLookup | None = None,
    ) -> None:
        self.settings = settings
        self.indicators = indicators
        self.log_format = get_format(format_name) if format_name else None
        self.masking = MaskingPolicy.from_settings(settings)
        self.timezone = ZoneInfo(settings.timezone)
        self._stages: dict[str | None, list[Stage]] = {}
        self._dead_letters: dict[str | None, DeadLetterFile] = {}
        self.stages_for(None)  # configuration errors now, not at the first record

    def stages_for(self, department_id: str | None) -> list[Stage]:
        """The enrichment stages of a department (None: each event's own department)."""
        stages = self._stages.get(department_id)
        if stages is None:
            stages = build_enrichment_stages(
                self.settings, department_id, indicators=self.indicators, masking=self.masking
            )
            self._stages[department_id] = stages
        return stages

    def dead_letters_for(self, department_id: str | None) -> DeadLetterFile:
        """The dead-letter file of a department (masked as its events are)."""
        dead_letters = self._dead_letters.get(department_id)
        if dead_letters is None:
            dead_letters = dead_letter_file_for(self.settings, department_id, self.masking)
            self._dead_letters[department_id] = dead_letters
        return dead_letters

    def pipeline(
        self, department: Department | None, source: str, extra_stages: Iterable[Stage] = ()
    ) -> IngestPipeline:
        """A new pipeline for one stream; `extra_stages` run before the enrichment stages."""
        department_id = department.id if department else None
        return IngestPipeline(
            normaliser=Normaliser(keep_original=self.settings.keep_original, department=department),
            dead_letters=self.dead_letters_for(department_id),
            log_format=self.log_format,
            context=ParseContext(timezone=self.timezone, source=source),
            stages=[*extra_stages, *self.stages_for(department_id)],
        )


def run_pipeline(
    pipeline: IngestPipeline, records: Iterable[tuple[Record, Origin]]
) -> tuple[list[Event], PipelineCounts]:
    """The events of some records, and the counts of this call alone."""
    before = pipeline.report
    read, parsed, skipped, failed = before.read, before.parsed, before.skipped, before.parse_failed
    pipeline.context.received = datetime.now(UTC)  # for the year of RFC 3164 timestamps
    events = list(pipeline.events(records))
    report = pipeline.report
    return events, PipelineCounts(
        read=report.read - read,
        parsed=report.parsed - parsed,
        skipped=report.skipped - skipped,
        failed=report.parse_failed - failed,
    )
