"""Building the enrichment stages from the settings, and the masked dead-letter file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from collectors.asset_inventory import AssetInventoryError, AssetStage
from collectors.enrichment import build_enrichment_stages, dead_letter_file_for, enrich
from collectors.intel_hook import Indicator, IndicatorSet, IntelStage
from collectors.masking import MaskingDeadLetterFile, MaskingKeyMissing, MaskingStage
from lianfang.schema import Event, Origin
from lianfang.settings import MaskingOverride, MaskingSettings, Settings

EXAMPLE_ASSETS = Path(__file__).resolve().parents[1] / "config" / "assets.example.yaml"
KEY = SecretStr("unit-test-masking-key-0123456789")


def _settings(tmp_path: Path, **updates: object) -> Settings:
    return Settings(home_dir=tmp_path).model_copy(update=updates)


def test_masking_without_a_key_refuses_to_build(tmp_path: Path) -> None:
    with pytest.raises(MaskingKeyMissing):
        build_enrichment_stages(_settings(tmp_path, masking_key=SecretStr("")), None)


def test_nothing_configured_means_no_stages(tmp_path: Path) -> None:
    settings = _settings(tmp_path, masking=MaskingSettings(enabled=False))
    assert build_enrichment_stages(settings, "finance") == []
    assert type(dead_letter_file_for(settings, "finance")).__name__ == "DeadLetterFile"


def test_stages_in_order_and_composed(tmp_path: Path) -> None:
    settings = _settings(tmp_path, masking_key=KEY, asset_inventory_path=EXAMPLE_ASSETS)
    indicators = IndicatorSet([Indicator("i-1", "ipv4-addr", "185.220.101.9")])
    stages = build_enrichment_stages(settings, None, indicators=indicators)
    assert [type(stage) for stage in stages] == [AssetStage, IntelStage, MaskingStage]
    event = Event(
        document={
            "message": "export by 13812345678",
            "source": {"ip": "10.20.1.14"},
            "destination": {"ip": "185.220.101.9"},
        },
        origin=Origin("t", 0),
    )
    document = enrich(event, stages).document
    assert document["organization"]["id"] == "finance"
    assert document["threat"]["enrichments"][0]["matched"]["atomic"] == "185.220.101.9"
    assert document["message"].startswith("export by [MOBILE:138*:")


def test_bad_inventory_path_is_a_configuration_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path, masking_key=KEY, asset_inventory_path=tmp_path / "none.yaml")
    with pytest.raises(AssetInventoryError):
        build_enrichment_stages(settings, None)


def test_dead_letters_follow_the_department_policy(tmp_path: Path) -> None:
    masking = MaskingSettings(departments={"energy": MaskingOverride(enabled=False)})
    settings = _settings(tmp_path, masking_key=KEY, masking=masking)
    assert isinstance(dead_letter_file_for(settings, "finance"), MaskingDeadLetterFile)
    assert isinstance(dead_letter_file_for(settings, None), MaskingDeadLetterFile)
    assert not isinstance(dead_letter_file_for(settings, "energy"), MaskingDeadLetterFile)
    assert build_enrichment_stages(settings, "energy") == []
    assert [type(s) for s in build_enrichment_stages(settings, "finance")] == [MaskingStage]
