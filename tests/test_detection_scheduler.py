"""Scheduler, exceptions and the detect/exceptions commands against the real node."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from elasticsearch import Elasticsearch

from detection.alert_exceptions import (
    ExceptionEntry,
    ExceptionError,
    ExceptionStore,
    apply_exceptions,
    parse_field_values,
)
from detection.alerts import Alert, AlertStore
from detection.detector import DetectionWindow, Detector, DetectorContext, load_detectors
from detection.scheduler import (
    DetectionScheduler,
    DetectionStateStore,
    DetectorRun,
    PassReport,
    detector_totals,
    plan_windows,
)
from lianfang.cli import main
from lianfang.settings import Settings
from lianfang.store import EventStore
from tests.test_behavioural_rules import ssh_brute_force, write_events

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
ORG = "gov-cloud"


class FixedClock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def ssh_detectors(settings: Settings, client: Elasticsearch) -> list[Detector]:
    context = DetectorContext(settings, client, f"{settings.index_prefix}-events")
    loaded = load_detectors(context, ["behavioural"])
    assert not loaded.problems
    return [d for d in loaded.detectors if d.name == "ssh-brute-force"]


def scheduler_for(
    settings: Settings, client: Elasticsearch, clock: FixedClock
) -> DetectionScheduler:
    prefix = settings.index_prefix
    return DetectionScheduler(
        ssh_detectors(settings, client),
        AlertStore(client, prefix),
        ExceptionStore(client, prefix),
        DetectionStateStore(client, prefix),
        clock,
    )


def test_windows_resume_from_the_saved_end_with_overlap() -> None:
    hour, overlap = timedelta(hours=1), timedelta(minutes=10)
    assert plan_windows(T0, None, hour, overlap) == [DetectionWindow(T0 - hour, T0)]
    resumed = plan_windows(T0, T0 - timedelta(hours=2, minutes=30), hour, overlap)
    assert [(w.start, w.end) for w in resumed] == [
        (T0 - timedelta(hours=2, minutes=40), T0 - timedelta(hours=1, minutes=30)),
        (T0 - timedelta(hours=1, minutes=40), T0 - timedelta(minutes=30)),
        (T0 - timedelta(minutes=40), T0),
    ]
    assert plan_windows(T0, T0, hour, overlap) == []


def test_scheduler_resumes_and_rerunning_creates_no_duplicates(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    write_events(client, store, ssh_brute_force(ORG, True))
    clock = FixedClock(T0 + timedelta(hours=1))
    scheduler = scheduler_for(settings, client, clock)
    first = scheduler.run_pending(timedelta(hours=2), timedelta(minutes=10))
    assert [(r.detector, r.created) for r in first[0].runs] == [("ssh-brute-force", 1)]
    assert scheduler.state.last_end() == clock.moment

    clock.moment += timedelta(minutes=30)
    again = scheduler_for(settings, client, clock).run_pending(
        timedelta(hours=2), timedelta(hours=1)
    )
    assert len(again) == 1 and again[0].start == T0  # the last end less the overlap
    assert again[0].runs[0].created == 0 and again[0].runs[0].found == 1
    assert scheduler.state.last_end() == clock.moment
    backfill = scheduler.run_range(
        T0 - timedelta(hours=1), T0 + timedelta(hours=1), timedelta(hours=2), timedelta(0)
    )
    assert backfill[0].runs[0].created == 0
    assert client.count(index=f"{settings.index_prefix}-alerts")["count"] == 1


def test_a_failing_detector_is_reported_and_the_others_run(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    write_events(client, store, ssh_brute_force(ORG, True))

    class Broken:
        name = "broken"

        def run(self, window: DetectionWindow) -> list[Alert]:
            raise ValueError("no such field")

    scheduler = scheduler_for(settings, client, FixedClock(T0))
    scheduler.detectors = [Broken(), *scheduler.detectors]
    report = scheduler.run_window(DetectionWindow(T0 - timedelta(hours=1), T0 + timedelta(hours=1)))
    assert [run.detector for run in report.failed] == ["broken"]
    assert "no such field" in report.failed[0].error
    assert report.runs[1].created == 1


def test_exceptions_suppress_are_counted_and_stay_listed(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    write_events(client, store, ssh_brute_force(ORG, True))
    exceptions = ExceptionStore(client, settings.index_prefix)
    entry = exceptions.add(
        parse_field_values(["rule.id=ssh-brute-force", "source.ip=203.0.113.0/24"]),
        reason="the red team's scanner",
        created_by="analyst.li",
        now=T0 - timedelta(days=1),
    )
    window = DetectionWindow(T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    scheduler = scheduler_for(settings, client, FixedClock(T0))
    for _ in range(2):  # the second pass must not count the same suppression again
        report = scheduler.run_window(window)
        assert (report.runs[0].suppressed, report.runs[0].created) == (1, 0)
    listed = exceptions.entries()
    assert [(e.id, e.suppressed, e.state(T0)) for e in listed] == [(entry.id, 1, "active")]
    assert exceptions.suppressions(entry.id)[0]["entity_value"] == "203.0.113.5"

    disabled = exceptions.disable(entry.id, by="analyst.wang", reason="red team finished")
    assert disabled.state(T0) == "disabled"
    report = scheduler.run_window(window)
    assert (report.runs[0].suppressed, report.runs[0].created) == (0, 1)
    kept = exceptions.entries()[0]
    assert kept.disabled_by == "analyst.wang" and kept.suppressed == 1


def test_exception_matching_expiry_and_department_scope() -> None:
    alert = Alert(
        rule_id="beaconing",
        rule_name="Beaconing",
        rule_type="behavioural",
        severity="medium",
        entity_type="source.ip",
        entity_value="10.20.5.6",
        first_seen=T0,
        last_seen=T0,
        explanation="x",
        organization_id="finance",
        entity_fields={"source.ip": "10.20.5.6", "destination.ip": "45.33.2.1"},
    )

    def entry(fields: dict[str, list[str]], **extra: object) -> ExceptionEntry:
        return ExceptionEntry("e", fields, "why", "who", T0 - timedelta(days=1), **extra)

    pair = entry({"destination.ip": ["45.33.2.0/24"], "rule.id": ["beacon*"]})
    assert len(apply_exceptions([alert], [pair], T0).suppressed) == 1
    expired = entry({"source.ip": ["10.20.5.6"]}, expires_at=T0 - timedelta(hours=1))
    assert expired.state(T0) == "expired"
    assert apply_exceptions([alert], [expired], T0).kept == [alert]
    other_department = entry({"source.ip": ["10.20.5.6"]}, organization_id="energy")
    assert apply_exceptions([alert], [other_department], T0).kept == [alert]
    assert not entry({"source.ip": ["10.20.5.7"]}).matches({"source.ip": ["10.20.5.6"]})


def cli(settings: Settings, *arguments: str) -> tuple[int, str]:
    environment = {
        "LIANFANG_ES_URL": settings.es_url or "",
        "LIANFANG_INDEX_PREFIX": settings.index_prefix,
        "LIANFANG_HOME_DIR": str(settings.home_dir),
    }
    result = CliRunner().invoke(main, list(arguments), env=environment, catch_exceptions=False)
    return result.exit_code, result.stdout


def test_cli_exceptions_and_detect_run(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    write_events(client, store, ssh_brute_force(ORG, True))
    code, out = cli(
        settings,
        "exceptions",
        "add",
        "--field",
        "source.ip=198.51.100.1",
        "--reason",
        "monitoring probe",
        "--by",
        "admin",
        "--expires",
        "30d",
        "--json",
    )
    assert code == 0, out
    exception_id = json.loads(out)["exception_id"]
    code, out = cli(
        settings,
        "exceptions",
        "remove",
        exception_id,
        "--by",
        "admin",
        "--reason",
        "gone",
        "--json",
    )
    assert code == 0 and json.loads(out)["state"] == "disabled"
    code, out = cli(settings, "exceptions", "list", "--json")
    assert [row["state"] for row in json.loads(out)] == ["disabled"]
    code, out = cli(
        settings, "exceptions", "add", "--field", "nonsense", "--reason", "r", "--by", "b"
    )
    assert code == 2

    code, out = cli(
        settings,
        "detect",
        "run",
        "--source",
        "behavioural",
        "--from",
        "2026-11-24T01:00:00Z",
        "--to",
        "2026-11-24T04:00:00Z",
        "--window",
        "3h",
        "--json",
    )
    assert code == 0, out
    runs = {run["detector"]: run for run in json.loads(out.splitlines()[0])["runs"]}
    assert runs["ssh-brute-force"]["created"] == 1
    assert not any(run["error"] for run in runs.values())
    code, out = cli(settings, "detect", "rules", "--json")
    assert code == 0 and len(json.loads(out)["rules"]) >= 19


def test_unknown_exception_is_a_specific_error(settings: Settings, client: Elasticsearch) -> None:
    store = ExceptionStore(client, settings.index_prefix)
    store.install()
    try:
        store.disable("nope", by="a", reason="b")
    except ExceptionError as error:
        assert error.value == "nope"
    else:
        raise AssertionError("disabling an unknown exception must fail")


def test_run_forever_passes_resume_from_the_saved_end() -> None:
    class Memory:
        def __init__(self) -> None:
            self.end: datetime | None = None

        def last_end(self) -> datetime | None:
            return self.end

        def save(self, end: datetime, now: datetime | None = None) -> None:
            self.end = end

    class NoAlerts:
        def install(self) -> None: ...

        def refresh(self) -> None: ...

        def upsert(self, alerts: list[Alert], now: datetime) -> object:
            from detection.alerts import UpsertReport

            return UpsertReport(created=len(alerts))

    class NoExceptions:
        def entries(self) -> list[ExceptionEntry]:
            return []

        def record(self, suppressions: list[object], now: datetime) -> None: ...

    class Recorder:
        name = "recorder"

        def __init__(self) -> None:
            self.windows: list[DetectionWindow] = []

        def run(self, window: DetectionWindow) -> list[Alert]:
            self.windows.append(window)
            return []

    clock = FixedClock(T0)
    recorder = Recorder()
    scheduler = DetectionScheduler([recorder], NoAlerts(), NoExceptions(), Memory(), clock)  # type: ignore[arg-type]

    def sleep(seconds: float) -> None:
        assert 0 <= seconds <= 300
        clock.moment += timedelta(minutes=5)

    passes = []
    scheduler.run_forever(
        timedelta(minutes=5),
        timedelta(hours=1),
        timedelta(minutes=10),
        passes.append,
        sleep,
        passes=3,
    )
    assert [(w.start, w.end) for w in recorder.windows] == [
        (T0 - timedelta(hours=1), T0),
        (T0 - timedelta(minutes=10), T0 + timedelta(minutes=5)),
        (T0 - timedelta(minutes=5), T0 + timedelta(minutes=10)),
    ]
    assert len(passes) == 3


def test_detector_totals_sum_each_detector_over_windows() -> None:
    first = PassReport(T0, T0 + timedelta(hours=1))
    first.runs = [
        DetectorRun("ssh-brute-force", found=2, created=2, seconds=0.5),
        DetectorRun("intel", found=1, created=1, details={"hunted": 3, "sightings": ["s1"]}),
    ]
    second = PassReport(T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    second.runs = [
        DetectorRun("ssh-brute-force", found=1, updated=1, seconds=0.25, error="boom"),
        DetectorRun("intel", details={"hunted": 2, "sightings": ["s2"], "state": "done"}),
    ]
    totals = {run.detector: run for run in detector_totals([first, second])}
    ssh = totals["ssh-brute-force"]
    assert (ssh.found, ssh.created, ssh.updated, ssh.seconds) == (3, 2, 1, 0.75)
    assert ssh.error == "boom"
    assert totals["intel"].details == {"hunted": 5, "sightings": ["s1", "s2"], "state": "done"}
    assert list(totals) == ["ssh-brute-force", "intel"]  # the detectors' order is kept


def test_detect_run_for_people_prints_a_line_per_window_and_one_table(
    settings: Settings, client: Elasticsearch, store: EventStore
) -> None:
    write_events(client, store, ssh_brute_force(ORG, True))
    arguments = ["detect", "run", "--source", "behavioural", "--window", "2h"]
    arguments += ["--from", "2026-11-24T00:00:00Z", "--to", "2026-11-24T04:00:00Z"]
    environment = {
        "LIANFANG_ES_URL": settings.es_url or "",
        "LIANFANG_INDEX_PREFIX": settings.index_prefix,
        "LIANFANG_HOME_DIR": str(settings.home_dir),
    }
    result = CliRunner().invoke(main, arguments, env=environment, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # Progress goes to stderr (one line per window), the summary table to stdout.
    lines = [line for line in result.stderr.splitlines() if " UTC: " in line]
    assert len(lines) == 2 and "ssh-brute-force 1" in "".join(lines)
    out = result.stdout
    assert out.count("2 window(s), 2026-11-24 00:00 → 2026-11-24 04:00 UTC") == 1
    assert "ssh-brute-force" in out.split("2 window(s)")[1]  # the totals table lists it
