"""The demo generator is reproducible and contains its attack stories."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest

from collectors.demo_day import DemoSpec, generate_demo_day


def digest(folder: Path) -> str:
    hasher = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            hasher.update(path.name.encode())
            hasher.update(path.read_bytes())
    return hasher.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    spec = DemoSpec(seed=1, day=date(2026, 11, 28), scale=0.02)
    generate_demo_day(spec, tmp_path / "a")
    generate_demo_day(spec, tmp_path / "b")
    generate_demo_day(DemoSpec(seed=2, day=date(2026, 11, 28), scale=0.02), tmp_path / "c")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_manifest_names_the_stories_and_files_are_time_ordered(tmp_path: Path) -> None:
    manifest = generate_demo_day(DemoSpec(seed=3, day=date(2026, 11, 28), scale=0.02), tmp_path)
    assert {s["id"] for s in manifest["stories"]} == {
        "ssh-brute-force-then-success",
        "port-scan",
        "night-exfiltration",
        "database-export",
    }
    assert all(story["techniques"] for story in manifest["stories"])
    assert manifest["events"] == sum(f["lines"] for f in manifest["files"])
    flows = (tmp_path / "energy" / "events.ndjson").read_text().splitlines()
    stamps = [line.split('"@timestamp":"', 1)[1][:29] for line in flows]
    assert stamps == sorted(stamps)
    auth = (tmp_path / "gov-cloud" / "auth.log").read_text()
    assert auth.count("from 203.0.113.77") == 321


def test_scale_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DemoSpec(scale=0)
