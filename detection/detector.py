"""The detector protocol and the registry of detector sources, found by name.

A detector has a `name` and `run(window) -> list[Alert]`; the scheduler
(detection/scheduler.py) runs every detector over each window, applies exceptions and
upserts the alerts. Detectors come from sources, each a function
`load(context) -> DetectorLoad` registered under a name:

* `behavioural`: the YAML rules (detection/behavioural_detectors.py);
* `sigma`: `detection/sigma_rules.py` (or the `detection.sigma` package), when it exists
  and defines `load_detectors(context: DetectorContext) -> DetectorLoad`;
* `anomaly`: the persisted anomaly models scored per complete feature window
  (detection/anomaly_detector_source.py);
* `intel`: one threat-intelligence pass per scheduler pass (sharing/intel_detector.py).

A source that fails to load is reported with its reason; the others still run.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from elasticsearch import Elasticsearch

from detection.alerts import Alert
from lianfang.settings import Settings


@dataclass(frozen=True)
class DetectionWindow:
    """The event time range [start, end) a detector looks at."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("detection windows need aware datetimes")
        if self.start >= self.end:
            raise ValueError(f"window start {self.start} is not before its end {self.end}")


@runtime_checkable
class Detector(Protocol):
    """Anything that turns a window of events into alerts."""

    name: str

    def run(self, window: DetectionWindow) -> list[Alert]:
        """The alerts for events in the window (not yet stored)."""
        ...


@dataclass(frozen=True)
class DetectorContext:
    """What a source needs to build its detectors."""

    settings: Settings
    client: Elasticsearch
    events_index: str


@dataclass
class DetectorLoad:
    """The detectors a source built, and the problems (bad rule files, overrides) it met."""

    detectors: list[Detector] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


DetectorSource = Callable[[DetectorContext], DetectorLoad]
# Optional sources: name -> modules that may define `load_detectors` (the first one that does).
OPTIONAL_SOURCES = {
    "sigma": ("detection.sigma_rules", "detection.sigma"),
    "anomaly": ("detection.anomaly_detector_source",),
    "intel": ("sharing.intel_detector",),
}


class UnknownDetectorSource(KeyError):
    """No detector source has this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"no detector source {self.name!r} (known: {', '.join(self.known)})"


def detector_sources() -> dict[str, DetectorSource]:
    """Every available source by name (optional ones only when their module exists)."""
    from detection.behavioural_detectors import load_behavioural_detectors

    sources: dict[str, DetectorSource] = {"behavioural": load_behavioural_detectors}
    for name, module_names in OPTIONAL_SOURCES.items():
        for module_name in module_names:
            if importlib.util.find_spec(module_name) is None:
                continue
            try:
                loader = getattr(importlib.import_module(module_name), "load_detectors", None)
            except Exception as error:  # a broken optional part is reported, not fatal
                sources[name] = _broken_source(module_name, error)
                break
            if callable(loader):
                sources[name] = loader
                break
    return sources


def _broken_source(module_name: str, error: Exception) -> DetectorSource:
    def load(context: DetectorContext) -> DetectorLoad:
        return DetectorLoad(problems=[f"cannot import {module_name}: {error}"])

    return load


def load_detectors(context: DetectorContext, names: list[str] | None = None) -> DetectorLoad:
    """Detectors from the named sources (default: all); a failing source becomes a problem."""
    sources = detector_sources()
    selected = names or sorted(sources)
    result = DetectorLoad()
    for name in selected:
        if name not in sources:
            raise UnknownDetectorSource(name, sorted(sources))
        try:
            loaded = sources[name](context)
        except Exception as error:  # one broken source must not stop the others
            result.problems.append(f"detector source {name}: {type(error).__name__}: {error}")
            continue
        result.detectors.extend(loaded.detectors)
        result.problems.extend(f"{name}: {problem}" for problem in loaded.problems)
    return result
