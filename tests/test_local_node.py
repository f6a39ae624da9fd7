"""Provisioning of the local node: a second, private node is started, checked and stopped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lianfang import local_node
from lianfang.settings import load_settings


def private_node_settings(tmp_path: Path, **overrides: object):
    # Shares the downloaded zip with the main node so the test does not fetch 130 MB again.
    main_cache = load_settings().cache_dir.resolve() / "downloads"
    home = tmp_path / "home"
    downloads = home / "cache" / "downloads"
    downloads.mkdir(parents=True)
    for zip_file in main_cache.glob("elasticsearch-*.zip"):
        (downloads / zip_file.name).symlink_to(zip_file)
    return load_settings(home_dir=home, es_url=None, es_start_timeout=240, **overrides)


@pytest.mark.slow
def test_start_status_idempotent_start_and_stop(cluster_url: str, tmp_path: Path) -> None:
    settings = private_node_settings(tmp_path)
    state, started = local_node.start(settings, log=lambda _: None)
    try:
        assert started
        report = local_node.status(settings)
        assert report["running"] is True
        assert report["health"]["status"] in ("yellow", "green")
        assert state.url != cluster_url  # a free port was chosen beside the main node
        again, started_again = local_node.start(settings, log=lambda _: None)
        assert not started_again
        assert again.pid == state.pid
    finally:
        assert local_node.stop(settings)
    assert local_node.status(settings)["running"] is False
    assert local_node.stop(settings) is False  # nothing left to stop
    layout = local_node.node_layout(settings)
    if layout.node_dir.is_relative_to(local_node.ROOT_FALLBACK_BASE):
        # Run as root from a private tmp dir, the node lived in /var/tmp: leave nothing there.
        shutil.rmtree(layout.node_dir.parent, ignore_errors=True)


def test_missing_java_is_a_clear_error(tmp_path: Path) -> None:
    settings = load_settings(home_dir=tmp_path, es_url=None, java_home=tmp_path / "no-such-jdk")
    with pytest.raises(local_node.ProvisioningError, match=r"LIANFANG_JAVA_HOME=.*no Java runtime"):
        local_node.start(settings, log=lambda _: None)


def test_too_old_java_is_a_clear_error(tmp_path: Path) -> None:
    fake_home = tmp_path / "jdk17"
    fake_home.mkdir()
    (fake_home / "release").write_text('JAVA_VERSION="17.0.15"\n')
    settings = load_settings(home_dir=tmp_path, es_url=None, java_home=fake_home)
    with pytest.raises(local_node.ProvisioningError, match=r"Java 17.*needs Java 21"):
        local_node.start(settings, log=lambda _: None)


def test_unavailable_artifact_is_a_clear_error(tmp_path: Path) -> None:
    settings = load_settings(home_dir=tmp_path, es_url=None, es_version="9.99.99")
    with pytest.raises(
        local_node.ProvisioningError, match=r"could not fetch Elasticsearch 9\.99\.99"
    ):
        local_node.start(settings, log=lambda _: None)


def test_external_cluster_means_nothing_to_provision(tmp_path: Path) -> None:
    settings = load_settings(home_dir=tmp_path, es_url="http://127.0.0.1:1")
    with pytest.raises(local_node.ExternalClusterConfigured):
        local_node.start(settings, log=lambda _: None)
    assert local_node.status(settings) == {"mode": "external", "url": "http://127.0.0.1:1"}


def test_java_version_strings() -> None:
    assert local_node._parse_java_version("25.0.3+9") == 25
    assert local_node._parse_java_version("1.8.0_392") == 8
    assert local_node._parse_java_version("21") == 21
    assert local_node._parse_java_version("banana") is None
