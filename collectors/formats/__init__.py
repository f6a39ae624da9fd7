"""The registry of log formats: every module in this package that defines `FORMAT`."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from functools import cache

from collectors.log_format import LogFormat, Record


class UnknownFormat(LookupError):
    """A format name that no module provides, or input that no format recognises."""


@cache
def available_formats() -> dict[str, LogFormat]:
    """All formats by name, discovered from this package's modules."""
    found: dict[str, LogFormat] = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        plugin = getattr(module, "FORMAT", None)
        if isinstance(plugin, LogFormat):
            found[plugin.name] = plugin
    return dict(sorted(found.items()))


def get_format(name: str) -> LogFormat:
    """The format called `name`."""
    formats = available_formats()
    if name not in formats:
        raise UnknownFormat(f"unknown format {name!r}; known: {', '.join(formats)}")
    return formats[name]


def detect_format(samples: Iterable[Record]) -> LogFormat:
    """The most specific format that recognises the first non-empty sample records."""
    candidates = sorted(available_formats().values(), key=lambda f: -f.priority)
    sample_list = [s for s in samples if s and (not isinstance(s, str) or s.strip())][:5]
    for log_format in candidates:
        for sample in sample_list:
            if _sniffs(log_format, sample):
                return log_format
    preview = repr(sample_list[0])[:120] if sample_list else "(no data)"
    raise UnknownFormat(f"no format recognises the input; first record: {preview}")


def _sniffs(log_format: LogFormat, sample: Record) -> bool:
    try:
        return bool(log_format.sniff(sample))
    except Exception:  # a sniffer must never break detection for the others
        return False
