"""A slice of what the platform shares, written as one STIX bundle file (optionally signed).

`lianfang intel export --out FILE` takes the outbox entries of a period (and types), keeps
only those at or below a TLP ceiling (TLP:RED never leaves), validates them, and writes
one bundle. With `--sign KEY` the file gets a detached Ed25519 signature
(`sharing/signed_bundles.py`) for carrying into isolated networks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sharing.signed_bundles import sign_file
from sharing.stix_from_alerts import make_bundle
from sharing.stix_outbox import Outbox
from sharing.stix_validation import validate_objects
from sharing.taxii_sync import may_send
from sharing.tlp import TlpLevel


@dataclass
class ExportReport:
    """What went into the file, and what was held back."""

    path: Path
    objects: int = 0
    held_back: int = 0
    invalid: list[str] = field(default_factory=list)
    signature: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """For --json output."""
        return {
            "path": str(self.path),
            "objects": self.objects,
            "held_back": self.held_back,
            "invalid": self.invalid,
            "signature": str(self.signature) if self.signature else None,
        }


def export_bundle(
    outbox: Outbox,
    out: Path,
    *,
    max_tlp: TlpLevel = TlpLevel.AMBER,
    since: datetime | None = None,
    until: datetime | None = None,
    types: Iterable[str] | None = None,
    private_key: Ed25519PrivateKey | None = None,
) -> ExportReport:
    """Write the slice as a bundle (latest version of each object), sign it if a key is given."""
    report = ExportReport(out)
    latest: dict[str, dict[str, Any]] = {}
    for entry in outbox.entries(since=since, until=until, types=types):
        if not may_send(entry.tlp, max_tlp):
            report.held_back += 1
            continue
        current = latest.get(entry.object["id"])
        if current is None or entry.object.get("modified", "") >= current.get("modified", ""):
            latest[entry.object["id"]] = entry.object
    objects = list(latest.values())
    validation = validate_objects(objects)
    bad = {result.object_id for result in validation.invalid}
    report.invalid = [f"{r.object_id}: {'; '.join(r.errors)}" for r in validation.invalid]
    objects = [o for o in objects if o["id"] not in bad]
    report.objects = len(objects)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(make_bundle(objects), indent=1, ensure_ascii=False) + "\n")
    if private_key is not None:
        report.signature = sign_file(out, private_key)
    return report
