"""Enrichment at ingest: the stages every event passes after normalisation, before storage.

A stage takes an `Event` and returns it (usually the same object, changed in place).
The order is fixed, because each stage relies on the one before:

1. assets  (collectors/asset_inventory.py) — department, criticality and owner of the
   source, destination and host; fills a missing `organization.id`.
2. intel   (collectors/intel_hook.py) — threat-intelligence matches as
   `threat.enrichments`; only when a lookup is passed in.
3. masking (collectors/masking.py) — personal data replaced by keyed tokens, last, so
   that it also covers what the stages before copied, and so the department is known.

Wiring: build the stages once per ingest run, then for every event coming out of the
normaliser call `event = enrich(event, stages)` before handing it to the BulkWriter, and
write dead letters through `dead_letter_file_for(...)`, which masks them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from collectors.asset_inventory import AssetInventory, AssetStage
from collectors.intel_hook import IndicatorLookup, IntelStage
from collectors.masking import MaskingDeadLetterFile, MaskingPolicy, MaskingStage
from lianfang.dead_letter import DeadLetterFile
from lianfang.schema import Event
from lianfang.settings import Settings


class Stage(Protocol):
    """One enrichment step: returns the event (the same object, enriched in place)."""

    def __call__(self, event: Event) -> Event:
        """Enrich one event."""
        ...


def build_enrichment_stages(
    settings: Settings,
    department_id: str | None,
    *,
    indicators: IndicatorLookup | None = None,
    masking: MaskingPolicy | None = None,
) -> list[Stage]:
    """The stages for one ingest run of a department (None: taken from each event).

    Raises AssetInventoryError for an unreadable inventory and MaskingKeyMissing when
    masking is on without a usable key: both are configuration errors to report before
    reading any input. `masking` lets a caller share one policy with the dead-letter file.
    """
    stages: list[Stage] = []
    if settings.asset_inventory_path is not None:
        stages.append(AssetStage(AssetInventory.load(settings.asset_inventory_path)))
    if indicators is not None:
        stages.append(IntelStage(indicators))
    policy = masking if masking is not None else MaskingPolicy.from_settings(settings)
    if department_id is not None:
        if policy.for_department(department_id) is not None:
            stages.append(MaskingStage(policy, department_id))
    elif policy.any_enabled:
        stages.append(MaskingStage(policy))  # each event's own department decides
    return stages


def enrich(event: Event, stages: Sequence[Stage]) -> Event:
    """Run the stages over one event, in order."""
    for stage in stages:
        event = stage(event)
    return event


def dead_letter_file_for(
    settings: Settings, department_id: str | None, masking: MaskingPolicy | None = None
) -> DeadLetterFile:
    """The run's dead-letter file: masked with every detector when masking is on.

    Masking is on for the dead letters when it is on for the department, or, with no
    department, for anyone: unparsed input can hold anything.
    """
    policy = masking if masking is not None else MaskingPolicy.from_settings(settings)
    masked = (
        policy.for_department(department_id) is not None
        if department_id is not None
        else policy.any_enabled
    )
    if masked and policy.dead_letter_masker is not None:
        return MaskingDeadLetterFile(settings.dead_letter_dir, policy.dead_letter_masker)
    return DeadLetterFile(settings.dead_letter_dir)
