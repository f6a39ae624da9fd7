"""The detection scheduler inside the API (`detection_rules.schedule_in_serve`), real node."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient

from api.app import create_app
from lianfang.principals import PrincipalStore, Role
from lianfang.settings import Settings
from lianfang.store import EventStore
from tests.test_behavioural_rules import auth, spread, write_events

# Valid for the rule format, refused by Elasticsearch: a sum over a keyword field.
BROKEN_RULE = """\
id: broken-sum-of-names
name: Sums a keyword field
description: Fails in Elasticsearch on every window.
severity: low
techniques: [T1110.001]
window: 10m
filter:
  event.category: authentication
group_by: [source.ip]
metrics:
  total: {sum: user.name}
conditions:
  - count >= 1
explanation: "{count} events"
"""


def scheduled(settings: Settings, rules_dir: Path | None = None, **timings: str) -> Settings:
    config = settings.detection_rules.model_copy(
        update={
            "schedule_in_serve": True,
            "rules_dirs": [rules_dir] if rules_dir else [],
            **timings,
        }
    )
    return settings.model_copy(update={"detection_rules": config})


@pytest.fixture
def admin_key(client: Elasticsearch, settings: Settings) -> str:
    principals = PrincipalStore(client, settings.index_prefix)
    principals.install()
    principals.add_user("admin", Role.ADMINISTRATOR, None)
    return principals.create_key("admin")


def wait_for(api: TestClient, key: str, done: Any, timeout: float = 90.0) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + timeout
    while True:
        body = api.get("/api/v1/detection/schedule", headers=headers).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_serve_runs_detection_in_the_background_and_a_failing_detector_is_reported(
    client: Elasticsearch, settings: Settings, store: EventStore, admin_key: str, tmp_path: Path
) -> None:
    started = datetime.now(UTC) - timedelta(minutes=20)
    write_events(
        client,
        store,
        [
            auth(m, "gov-cloud", "failure", "203.0.113.5", ["root", "admin", "oracle"][i % 3])
            for i, m in enumerate(spread(started, 30, timedelta(seconds=10)))
        ],
    )
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yaml").write_text(BROKEN_RULE)
    headers = {"Authorization": f"Bearer {admin_key}"}
    app = create_app(scheduled(settings, rules, every="1s", window="1h"))
    with TestClient(app) as api:
        background = app.state.detection_schedule
        body = wait_for(api, admin_key, lambda b: b["passes"] >= 2)
        assert body["enabled"] and body["running"] and body["every_seconds"] == 1
        last = body["last_pass"]
        assert last["error"] is None and last["windows"] >= 1
        [broken] = [f for f in last["failures"] if f.startswith("broken-sum-of-names:")]
        assert "not supported for aggregation" in broken
        assert body["failed_passes"] >= 2
        # The alert of the first pass is there, and the API keeps answering.
        alerts = api.get("/api/v1/alerts", headers=headers, params={"rule": "ssh-brute-force"})
        assert alerts.status_code == 200
        found = [a for a in alerts.json()["alerts"] if a["rule"]["id"] == "ssh-brute-force"]
        assert len(found) == 1 and found[0]["alert"]["entity"]["value"] == "203.0.113.5"
        assert api.get("/api/v1/health").status_code == 200
        state = client.get(index=f"{settings.index_prefix}-detection-state", id="scheduler")
        assert state["found"]
    assert not background.running  # shutdown stopped the thread


def test_a_failing_pass_is_kept_as_the_error_and_shutdown_does_not_wait_for_the_interval(
    client: Elasticsearch, settings: Settings, admin_key: str
) -> None:
    # Saving progress fails (a write block on the state index): the pass fails as a whole.
    client.indices.create(
        index=f"{settings.index_prefix}-detection-state", settings={"index.blocks.write": True}
    )
    app = create_app(scheduled(settings, every="1h", window="1h"))
    with TestClient(app) as api:
        body = wait_for(api, admin_key, lambda b: b["passes"] >= 1)
        assert body["running"] and body["failed_passes"] == 1
        assert "cluster_block_exception" in body["last_pass"]["error"]
        assert body["next_pass_at"] is not None
        assert api.get("/api/v1/health").status_code == 200
        began = time.monotonic()
    assert time.monotonic() - began < 10  # the hour-long wait was interrupted
    assert not app.state.detection_schedule.running
    client.indices.put_settings(
        index=f"{settings.index_prefix}-detection-state", settings={"index.blocks.write": False}
    )


def test_off_by_default(settings: Settings, admin_key: str) -> None:
    app = create_app(settings)
    with TestClient(app) as api:
        body = api.get(
            "/api/v1/detection/schedule", headers={"Authorization": f"Bearer {admin_key}"}
        ).json()
        assert body["enabled"] is False
        assert app.state.detection_schedule is None
        assert api.get("/api/v1/detection/schedule").status_code == 401
