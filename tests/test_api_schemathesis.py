"""Schemathesis over the API's OpenAPI schema, against the real node with a little data.

Every operation is fuzzed with valid (positive) and invalid (negative) requests, as an
administrator and as a department analyst, with generated path parameters and with the
ids of real documents; each response must not be a server error and must match the
documented schema. The app runs under uvicorn on a loopback port, as in production.
Generation is derandomized so that CI runs are repeatable; the run is bounded by
MAX_EXAMPLES per operation and mode (KNOWN_ID_EXAMPLES with real ids).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from api.app import create_app  # noqa: E402
from detection.alerts import Alert, AlertStore, AttackTechnique  # noqa: E402
from lianfang import incidents as lifecycle  # noqa: E402
from lianfang.bulk_writer import BulkWriter  # noqa: E402
from lianfang.dead_letter import DeadLetterFile  # noqa: E402
from lianfang.principals import PrincipalStore, Role  # noqa: E402
from lianfang.schema import Event, Origin, format_timestamp  # noqa: E402
from lianfang.settings import Settings  # noqa: E402
from lianfang.store import EventStore, install_index  # noqa: E402

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 12
# With real ids, changes are written (and wait for a refresh): fewer examples.
KNOWN_ID_EXAMPLES = 4
CHECKS = [not_a_server_error, response_schema_conformance]
SEEN = datetime(2026, 11, 28, 2, tzinfo=UTC)


class LoopbackServer:
    """The app under uvicorn on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]})

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


@pytest.fixture
def served(settings: Settings, store: EventStore) -> Iterator[dict[str, Any]]:
    """A little of everything: events, alerts, an incident with a task, two principals."""
    store.install_templates()
    events = [
        Event(
            document={
                "@timestamp": format_timestamp(SEEN + timedelta(minutes=n)),
                "organization": {"id": department},
                "labels": {"sector": department},
                "event": {"dataset": "flow", "type": ["connection", "denied"]},
                "source": {"ip": f"198.51.100.{n}"},
                "destination": {"ip": "10.20.1.13", "port": 22},
                "message": f"denied {n}",
            },
            origin=Origin(f"seed-{department}", n),
        )
        for n in range(10)
        for department in ("finance", "energy")
    ]
    BulkWriter(store.client, store, DeadLetterFile(settings.dead_letter_dir)).add_all(events)
    store.refresh()
    alerts = AlertStore(store.client, settings.index_prefix)
    alerts.install()
    scan = AttackTechnique("T1046", "Network Service Discovery", (("TA0007", "Discovery"),))
    made = [
        Alert(
            "scan",
            "Scan",
            "behavioural",
            "high",
            "source.ip",
            "198.51.100.1",
            SEEN,
            SEEN,
            "x",
            department,
            techniques=[scan],
        )
        for department in ("finance", "energy")
    ]
    alerts.upsert(made)
    alerts.refresh()
    incidents = f"{settings.index_prefix}-incidents"
    install_index(store.client, incidents, lifecycle.INCIDENT_FIELDS)
    incident = lifecycle.new_incident(
        title="Scan",
        severity="high",
        lead="finance",
        participants=["energy"],
        alert_ids=[a.id for a in made],
        created_by="li",
        now=datetime.now(UTC),
        policy=lifecycle.SlaPolicy.default(),
    )
    incident, task = lifecycle.add_task(
        incident,
        title="block",
        department="finance",
        owner=None,
        due=None,
        by="li",
        now=datetime.now(UTC),
    )
    store.client.index(
        index=incidents, id=incident["incident"]["id"], document=incident, refresh=True
    )
    principals = PrincipalStore(store.client, settings.index_prefix)
    principals.install()
    principals.add_user("admin", Role.ADMINISTRATOR, None)
    principals.add_user("fin", Role.DEPARTMENT_ANALYST, "finance")
    users = {
        name: {"Authorization": f"Bearer {principals.create_key(name)}"}
        for name in ("admin", "fin")
    }
    known = {
        "alert_id": made[0].id,
        "incident_id": incident["incident"]["id"],
        "task_id": task["id"],
    }
    with LoopbackServer(create_app(settings)) as server:
        yield {"url": server.url, "users": users, "known": known}


def fuzz(
    operation: Any,
    mode: GenerationMode,
    path: dict[str, str],
    examples: int,
    users: dict,
    failures: list,
) -> int:
    """Run one operation in one mode; returns how many requests were sent."""
    sent = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path or None))
    def run(case: Any) -> None:
        nonlocal sent
        for user, headers in users.items():
            sent += 1
            response = case.call(headers=headers, timeout=60)
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except Exception as error:  # collect every failure, report them together
                failures.append(
                    f"{operation.label} [{mode}, {user}] {response.status_code}: {error}\n{case.as_curl_command()}"
                )

    # An operation without parameters has no invalid requests to generate.
    with contextlib.suppress(Unsatisfiable):
        run()
    return sent


def test_no_server_errors_and_documented_responses(served: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_url(f"{served['url']}/openapi.json")
    failures: list[str] = []
    sent = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"GET /api/v1/situation", "GET /api/v1/events", "PATCH /api/v1/alerts/{alert_id}"} <= {
        operation.label for operation in operations
    }
    for operation in operations:
        names = [p.name for p in operation.path_parameters]
        variants = [{}] + ([{name: served["known"][name] for name in names}] if names else [])
        for path in variants:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                examples = KNOWN_ID_EXAMPLES if path else MAX_EXAMPLES
                sent += fuzz(operation, mode, path, examples, served["users"], failures)
    print(f"schemathesis: {sent} requests over {len(operations)} operations")
    assert sent > 500
    assert not failures, "\n\n".join(failures[:20])
