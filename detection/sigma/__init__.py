"""Sigma rules: loaded and validated with pySigma, converted to Elasticsearch queries, run in batches.

- `rule_loading`: a SigmaHQ-layout directory (or files) to a SigmaCollection, load errors per file;
- `validation`: pySigma's validators (and an offline ATT&CK tag check) per rule;
- `pipelines`: the processing pipeline for a rule's log source (ECS Windows, ECS Linux, none);
- `lucene_backend`: pySigma's Elasticsearch Lucene backend, made case-insensitive as Sigma is;
- `conversion`: every rule classified as converted (with its query) or unsupported (with why);
- `execution`: converted rules over a time window of the events alias, hits to `Alert`s;
- `rule_test`: one rule against one log file in a throw-away index prefix;
- `scheduled`: the rules as detectors of the detection scheduler (`load_detectors`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detection.detector import DetectorContext, DetectorLoad


def load_detectors(context: DetectorContext) -> DetectorLoad:
    """The `sigma` source of the detection scheduler (detection/detector.py)."""
    from detection.sigma.scheduled import load_sigma_detectors

    return load_sigma_detectors(context)
