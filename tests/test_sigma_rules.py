"""Sigma rules: conversion and classification, regex translation, execution against the node."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from elasticsearch import Elasticsearch

from collectors.file_ingest import ingest_records
from detection.alerts import AlertStore
from detection.sigma.conversion import ConvertedRule, convert_rule_set
from detection.sigma.execution import RunReport, SigmaRunner
from detection.sigma.lucene_backend import UnsupportedRegex, sigma_string_regex, translate_regex
from detection.sigma.rule_loading import load_rule_set
from detection.sigma.validation import validate_rules
from lianfang.cli import main
from lianfang.schema import Origin
from lianfang.settings import Settings
from lianfang.store import EventStore, IndexNames
from tests.conftest import SHARED_DATASETS, TEST_MASKING_KEY

SIGMAHQ = SHARED_DATASETS / "sigma"
EVTX_SAMPLES = SHARED_DATASETS / "evtx-attack-samples"
# Files of the 277 EVTX attack samples in which SigmaHQ rules/windows + rules-emerging-threats
# raise at least one alert (benchmarks/sigma_evtx.py; Zircolite with sigma-cli finds 203).
MIN_SAMPLE_FILES_WITH_ALERTS = 207
SYSMON = "Microsoft-Windows-Sysmon/Operational"
DAY = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)

WHOAMI_RULE = """
title: Whoami Execution
id: 0d0b4e2a-0000-4000-8000-000000000001
status: test
level: informational
tags: [attack.discovery, attack.t1033]
falsepositives: [Admin scripts]
logsource: {product: windows, category: process_creation}
detection:
    selection:
        Image|endswith: '\\whoami.exe'
    filter_admin:
        ParentImage|endswith: '\\admin_tool.exe'
    condition: selection and not filter_admin
"""
CASED_RULE = """
title: Cased Match
id: 0d0b4e2a-0000-4000-8000-000000000002
level: high
logsource: {product: windows, category: process_creation}
detection:
    selection:
        CommandLine|cased|contains: 'WhoAmI'
    condition: selection
"""
REGEX_RULE = """
title: Encoded PowerShell
id: 0d0b4e2a-0000-4000-8000-000000000003
level: high
tags: [attack.execution, attack.t1059.001]
logsource: {product: windows, category: process_creation}
detection:
    selection:
        CommandLine|re: '\\s-e(nc|ncodedcommand)?\\s+[A-Za-z0-9+/=]{20,}$'
    condition: selection
"""
MISSING_FIELD_RULE = """
title: Either Field
id: 0d0b4e2a-0000-4000-8000-000000000004
level: medium
logsource: {product: windows, category: process_creation}
detection:
    by_command:
        CommandLine|contains: 'mimikatz'
    by_absent_field:
        NoSuchField: 'anything'
    condition: by_command or by_absent_field
"""
ABSENT_ONLY_RULE = """
title: Absent Field Only
id: 0d0b4e2a-0000-4000-8000-000000000005
level: low
logsource: {product: windows, category: process_creation}
detection:
    selection:
        NoSuchField|contains: 'x'
    condition: selection
"""
LOGON_RULE = """
title: Network Logon With Explicit Account
id: 0d0b4e2a-0000-4000-8000-000000000006
level: critical
tags: [attack.lateral-movement, attack.t1021.002]
logsource: {product: windows, service: security}
detection:
    selection:
        EventID: 4624
        LogonType: 3
        IpAddress|startswith: '10.'
    condition: selection
"""
CORRELATION_RULE = """
title: Many Whoami
id: 0d0b4e2a-0000-4000-8000-000000000007
correlation:
    type: event_count
    rules: [0d0b4e2a-0000-4000-8000-000000000001]
    generate: true
    group-by: [ComputerName]
    timespan: 5m
    condition: {gte: 10}
"""
FIELDREF_RULE = """
title: Same User
id: 0d0b4e2a-0000-4000-8000-000000000008
level: low
logsource: {product: windows, category: process_creation}
detection:
    selection:
        User|fieldref: ParentUser
    condition: selection
"""
CLOUD_RULE = """
title: Cloud Thing
id: 0d0b4e2a-0000-4000-8000-000000000009
level: low
logsource: {product: aws, service: cloudtrail}
detection:
    selection: {eventName: DeleteTrail}
    condition: selection
"""
BROKEN_RULE = "title: Broken\nlogsource: {product: windows\ndetection: [\n"


def sysmon_process(image: str, command_line: str, host: str, minute: int, **extra: str) -> dict:
    """A Winlogbeat-shaped Sysmon process creation record."""
    data = {"Image": image, "CommandLine": command_line, **extra}
    return {
        "@timestamp": (DAY + timedelta(minutes=minute)).isoformat(),
        "winlog": {
            "channel": SYSMON,
            "event_id": 1,
            "computer_name": host,
            "provider_name": "Microsoft-Windows-Sysmon",
            "event_data": data,
        },
    }


def security_logon(ip: str, logon_type: str, minute: int) -> dict:
    """A Winlogbeat-shaped Security 4624 record."""
    return {
        "@timestamp": (DAY + timedelta(minutes=minute)).isoformat(),
        "winlog": {
            "channel": "Security",
            "event_id": 4624,
            "computer_name": "DC-01",
            "provider_name": "Microsoft-Windows-Security-Auditing",
            "event_data": {
                "IpAddress": ip,
                "LogonType": logon_type,
                "TargetUserName": "bob",
                "TargetDomainName": "CORP",
            },
        },
    }


EVENTS = [
    # 0: must match WHOAMI (case differs from the rule), CASED is negative (WHOAMI != WhoAmI)
    sysmon_process("C:\\WINDOWS\\System32\\WHOAMI.EXE", "WHOAMI /all", "WS-01", 1),
    # 1: whoami under the filtered parent: must not match WHOAMI
    sysmon_process(
        "C:\\Windows\\System32\\whoami.exe",
        "whoami",
        "WS-02",
        2,
        ParentImage="C:\\Tools\\admin_tool.exe",
    ),
    # 2: CASED positive; REGEX negative (no encoded command)
    sysmon_process("C:\\Windows\\System32\\cmd.exe", "cmd /c WhoAmI", "WS-03", 3),
    # 3: REGEX positive
    sysmon_process(
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "powershell.exe -NoP -enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoA",
        "WS-04",
        4,
    ),
    # 4: MISSING_FIELD positive through CommandLine alone (NoSuchField is absent)
    sysmon_process("C:\\Temp\\m.exe", "m.exe privilege::debug MIMIKATZ", "WS-05", 5),
    # 5, 6: LOGON positive (10.x, type 3) and negative (public address)
    security_logon("10.1.2.3", "3", 6),
    security_logon("203.0.113.9", "3", 7),
]


def write_rules(folder: Path, **rules: str) -> Path:
    """Each rule text into its own .yml file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in rules.items():
        (folder / f"{name}.yml").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """The hand-written rules, one file each."""
    return write_rules(
        tmp_path / "rules",
        whoami=WHOAMI_RULE,
        cased=CASED_RULE,
        regex=REGEX_RULE,
        missing=MISSING_FIELD_RULE,
        absent=ABSENT_ONLY_RULE,
        logon=LOGON_RULE,
        correlation=CORRELATION_RULE,
        fieldref=FIELDREF_RULE,
        cloud=CLOUD_RULE,
        broken=BROKEN_RULE,
    )


def converted_by_title(rules_dir: Path) -> dict[str, ConvertedRule]:
    """The converted rules of a directory by title."""
    catalogue = convert_rule_set(load_rule_set([rules_dir]))
    return {rule.title: rule for rule in catalogue.converted}


# ------------------------------------------------------------------ pure: regex translation


@pytest.mark.parametrize(
    ("pattern", "texts"),
    [
        (r"\s-e(nc)?\s", ["a -e b", "a -enc b", "a -ex b", "-e x", " -enc"]),
        (r"^cmd\.exe", ["cmd.exe /c", "xcmd.exe", "CMD.EXE"]),
        (r"\.ps1$", ["a.ps1", "a.ps1x", "ps1"]),
        (r"(^[a-z]{4}$)|(^[a-z]{8}$)", ["abcd", "abcde", "abcdefgh", "ABCD"]),
        (r"a(?:b|c)+?d", ["xabcd", "ad", "abbd"]),
        (r"[^a-z0-9]#@&<>~\"", ['.#@&<>~"', 'a#@&<>~"']),
        (r"\x41\t\d{2,}", ["A\t12", "A\t1", "a\t123"]),
    ],
)
def test_translated_regex_matches_like_python_search(pattern: str, texts: list[str]) -> None:
    """The whole-value Lucene regex accepts exactly what Python's re.search accepts."""
    translated = translate_regex(pattern)
    for text in texts:
        expected = re.search(pattern, text) is not None
        assert (re.fullmatch(translated, text, re.DOTALL) is not None) == expected, (
            text,
            translated,
        )


def test_regex_ignore_case_flag_and_inline_flag() -> None:
    """`(?i)` and the i flag fold letters into character classes."""
    assert re.fullmatch(translate_regex("(?i)whoami"), "xWhOaMi")
    assert re.fullmatch(translate_regex("whoami", ignore_case=True), "WHOAMI")
    assert not re.fullmatch(translate_regex("whoami"), "WHOAMI")


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [
        (r"foo(?=bar)", "group"),
        (r"(a)\1", "back-reference"),
        (r"\bword\b", "word boundary"),
        (r"a(^b)", "anchor ^"),
    ],
)
def test_untranslatable_regex_is_refused_with_the_construct(pattern: str, construct: str) -> None:
    """Constructs Lucene lacks raise UnsupportedRegex naming them."""
    with pytest.raises(UnsupportedRegex) as raised:
        translate_regex(pattern)
    assert construct in str(raised.value)


def test_sigma_string_regex_is_case_insensitive_with_wildcards() -> None:
    """`*\\whoami.exe` as a regex matching any case, anchored to the whole value."""
    from sigma.types import SigmaString

    regex = sigma_string_regex(SigmaString("*\\whoami.exe"))
    assert re.fullmatch(regex, "C:\\WINDOWS\\WHOAMI.EXE")
    assert not re.fullmatch(regex, "C:\\whoami.exe.bak")
    assert re.fullmatch(sigma_string_regex(SigmaString("a?c")), "AbC")


# ------------------------------------------------------------------ pure: classification


def test_rules_are_classified_with_reasons(rules_dir: Path) -> None:
    """Converted rules carry severity, ATT&CK and query; every other rule has a reason."""
    catalogue = convert_rule_set(load_rule_set([rules_dir]))
    converted = {rule.title: rule for rule in catalogue.converted}
    unsupported = {rule.title or Path(rule.id).name: rule for rule in catalogue.unsupported}
    assert set(converted) == {
        "Whoami Execution",
        "Cased Match",
        "Encoded PowerShell",
        "Either Field",
        "Absent Field Only",
        "Network Logon With Explicit Account",
    }
    whoami = converted["Whoami Execution"]
    assert (whoami.level, whoami.severity) == ("informational", "low")
    assert whoami.techniques == ("T1033",) and whoami.tactics == ("discovery",)
    assert whoami.falsepositives == ("Admin scripts",)
    assert whoami.logsource == {"product": "windows", "category": "process_creation"}
    assert "process.executable:" in whoami.query and ".caseless" not in whoami.query
    assert whoami.gate["event.code"] == ("1", "4688")
    assert converted["Network Logon With Explicit Account"].severity == "critical"
    # The wildcard on an IP field is matched on the raw event-data string.
    assert "winlog.event_data.IpAddress:" in converted["Network Logon With Explicit Account"].query
    assert unsupported["Many Whoami"].kind == "correlation-rule"
    assert "ES|QL" in unsupported["Many Whoami"].reason
    assert unsupported["Same User"].kind == "unsupported-feature"
    assert "field references" in unsupported["Same User"].reason
    assert unsupported["Cloud Thing"].kind == "unsupported-logsource"
    assert "product=aws" in unsupported["Cloud Thing"].reason
    assert unsupported["broken.yml"].kind == "invalid-rule"
    assert catalogue.unsupported_by_kind() == {
        "correlation-rule": 1,
        "unsupported-feature": 1,
        "unsupported-logsource": 1,
        "invalid-rule": 1,
    }


def test_validation_reports_issues_per_rule(tmp_path: Path) -> None:
    """pySigma validators and the ATT&CK check name the rule; a clean rule has none."""
    folder = write_rules(
        tmp_path / "v",
        proc_creation_win_whoami_clean=WHOAMI_RULE,
        proc_creation_win_whoami_dirty=WHOAMI_RULE.replace("000000000001", "000000000099")
        .replace("Whoami Execution", "Dirty")
        .replace("attack.t1033", "attack.t9999")
        .replace("'\\whoami.exe'", "'\\who\\*ami.exe'"),
    )
    issues = validate_rules(load_rule_set([folder]).collection.rules)
    by_title = {issue.title for issue in issues}
    assert "Whoami Execution" not in by_title
    dirty = [issue for issue in issues if issue.title == "Dirty"]
    assert any("T9999" in issue.message for issue in dirty)
    assert any(issue.validator == "EscapedWildcard" for issue in dirty)


@pytest.mark.skipif(not SIGMAHQ.is_dir(), reason=f"SigmaHQ rules not found at {SIGMAHQ}")
def test_sigmahq_rules_convert() -> None:
    """A handful of real SigmaHQ rules: builtin, sysmon, PowerShell and Linux ones."""
    paths = [
        SIGMAHQ / "rules/windows/process_creation/proc_creation_win_renamed_whoami.yml",
        SIGMAHQ / "rules/windows/builtin/security/win_security_audit_log_cleared.yml",
        SIGMAHQ
        / "rules/windows/powershell/powershell_script/posh_ps_potential_invoke_mimikatz.yml",
        SIGMAHQ / "rules/linux/auditd/lnx_auditd_system_info_discovery.yml",
    ]
    present = [path for path in paths if path.is_file()]
    if len(present) < len(paths):
        pytest.skip("the expected SigmaHQ rule files moved")
    catalogue = convert_rule_set(load_rule_set(present))
    assert not catalogue.unsupported, catalogue.unsupported
    queries = {Path(rule.path or "").name: rule.query for rule in catalogue.converted}
    for name, query in queries.items():
        assert query and ".caseless" not in query, name
    if "posh_ps_potential_invoke_mimikatz.yml" in queries:
        assert "event.code:4104" in queries["posh_ps_potential_invoke_mimikatz.yml"]
        assert (
            "powershell.file.script_block_text" in queries["posh_ps_potential_invoke_mimikatz.yml"]
        )
    if "lnx_auditd_system_info_discovery.yml" in queries:
        assert "auditd.log" in queries["lnx_auditd_system_info_discovery.yml"]


# ------------------------------------------------------------------ against the node


def ingest_events(settings: Settings, store: EventStore, events: list[dict]) -> None:
    """The records through the real windows format and ingest pipeline."""
    records = [
        (json.dumps(event), Origin("test-sigma", index)) for index, event in enumerate(events)
    ]
    ingest_records(records, settings=settings, store=store, format_name="windows")
    store.refresh()


@pytest.fixture
def sigma_settings(settings: Settings) -> Settings:
    """Test settings without masking (these events carry no personal data)."""
    return settings.model_copy(
        update={"masking": settings.masking.model_copy(update={"enabled": False})}
    )


def event_ids_of(matches: list, title: str) -> set[str]:
    """Which fixture events (by their origin offset in the command line) a rule matched."""
    found = [m for m in matches if m.rule.title == title]
    return {event["event"]["id"] for match in found for event in match.events}


def test_rules_match_positive_and_not_negative_fixtures(
    rules_dir: Path, sigma_settings: Settings, store: EventStore, client: Elasticsearch
) -> None:
    """Every hand-written rule against the fixture events, on the real node."""
    ingest_events(sigma_settings, store, EVENTS)
    rules = converted_by_title(rules_dir)
    ids = [
        hit["_id"]
        for hit in client.search(
            index=store.names.events_alias, size=50, sort=[{"@timestamp": "asc"}]
        )["hits"]["hits"]
    ]
    assert len(ids) == len(EVENTS)
    report = RunReport()
    matches = SigmaRunner(client, store.names).search(list(rules.values()), report=report)
    assert report.failures == []
    assert event_ids_of(matches, "Whoami Execution") == {ids[0]}  # not ids[1] (filtered parent)
    assert event_ids_of(matches, "Cased Match") == {ids[2]}  # not ids[0] (WHOAMI)
    assert event_ids_of(matches, "Encoded PowerShell") == {ids[3]}
    assert event_ids_of(matches, "Network Logon With Explicit Account") == {ids[5]}
    # A field absent from every event only makes its own condition false:
    assert event_ids_of(matches, "Either Field") == {ids[4]}
    assert event_ids_of(matches, "Absent Field Only") == set()
    # The index plan skipped nothing that could match: same result without it.
    unplanned = SigmaRunner(client, store.names, plan_indices=False).search(list(rules.values()))
    assert {(m.rule.id, m.total) for m in unplanned} == {(m.rule.id, m.total) for m in matches}


def test_run_upserts_alerts_with_attack_and_entities(
    rules_dir: Path, sigma_settings: Settings, store: EventStore, client: Elasticsearch
) -> None:
    """Hits become alerts: severity, ATT&CK names, entity, evidence; a rerun changes nothing."""
    ingest_events(sigma_settings, store, EVENTS)
    rules = converted_by_title(rules_dir)
    alert_store = AlertStore(client, store.names.prefix)
    runner = SigmaRunner(client, store.names)
    report = runner.run(list(rules.values()), alert_store)
    assert report.alerts.created == 5 and not report.failures
    alert_store.refresh()
    alerts = client.search(index=alert_store.index, size=20)["hits"]["hits"]
    by_rule = {hit["_source"]["rule"]["name"]: hit["_source"] for hit in alerts}
    whoami = by_rule["Whoami Execution"]
    assert whoami["alert"]["severity"] == "low"
    assert whoami["alert"]["entity"] == {"type": "host.name", "value": "WS-01"}
    assert whoami["threat"]["technique"]["id"] == ["T1033"]
    assert whoami["threat"]["technique"]["name"] == ["System Owner/User Discovery"]
    assert "Discovery" in whoami["threat"]["tactic"]["name"]
    assert len(whoami["alert"]["evidence"]["event_ids"]) == 1
    assert "Whoami Execution" in whoami["alert"]["explanation"]
    assert "WHOAMI" in whoami["alert"]["explanation"]
    logon = by_rule["Network Logon With Explicit Account"]
    assert logon["alert"]["entity"] == {"type": "source.ip", "value": "10.1.2.3"}
    assert logon["alert"]["severity"] == "critical"
    again = runner.run(list(rules.values()), alert_store)
    assert (again.alerts.created, again.alerts.updated, again.alerts.unchanged) == (0, 0, 5)


def test_a_failing_query_is_reported_for_its_rule_only(
    rules_dir: Path, sigma_settings: Settings, store: EventStore, client: Elasticsearch
) -> None:
    """Elasticsearch refusing one query leaves the other rules of the batch running."""
    ingest_events(sigma_settings, store, EVENTS)
    good = converted_by_title(rules_dir)["Whoami Execution"]
    bad = ConvertedRule(
        id="bad", title="Too Long Regex", level="low", severity="low",
        query="process.executable:/" + "a" * 1200 + "/",
    )  # fmt: skip
    report = RunReport()
    matches = SigmaRunner(client, store.names, plan_indices=False).search(
        [bad, good], report=report
    )
    assert [failure.rule_id for failure in report.failures] == ["bad"]
    assert "max_regex_length" in report.failures[0].reason or "regex" in report.failures[0].reason
    assert [match.rule.title for match in matches] == ["Whoami Execution"]


def test_rules_test_command_uses_a_throwaway_prefix(
    rules_dir: Path, sigma_settings: Settings, client: Elasticsearch, tmp_path: Path, monkeypatch
) -> None:
    """`rules test RULE --on FILE` prints the matches and leaves no index behind."""
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(event) + "\n" for event in EVENTS), encoding="utf-8")
    monkeypatch.setenv("LIANFANG_ES_URL", sigma_settings.es_url or "")
    monkeypatch.setenv("LIANFANG_INDEX_PREFIX", sigma_settings.index_prefix)
    monkeypatch.setenv("LIANFANG_HOME_DIR", str(sigma_settings.home_dir))
    monkeypatch.setenv("LIANFANG_MASKING_KEY", TEST_MASKING_KEY)
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["rules", "test", str(rules_dir / "whoami.yml"), "--on", str(log), "--format", "windows",
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["events_read"] == len(EVENTS)
    assert report["matched"] == 1
    assert "WHOAMI" in report["matches"][0]["summary"]
    by_id = runner.invoke(
        main,
        ["rules", "test", "0d0b4e2a-0000-4000-8000-000000000007", "--dir", str(rules_dir),
         "--on", str(log), "--json"],
    )  # fmt: skip
    assert by_id.exit_code == 2
    assert "correlation-rule" in json.loads(by_id.output)["failure"]
    leftovers = client.indices.get(index=f"{sigma_settings.index_prefix}-*", expand_wildcards="all")
    assert not [name for name in leftovers if "-ruletest-" in name]


def test_rules_list_and_validate_commands(rules_dir: Path) -> None:
    """`rules list --json` gives every rule with its status; validate exits 1 on issues."""
    runner = CliRunner()
    listed = runner.invoke(main, ["rules", "list", "--dir", str(rules_dir), "--json"])
    assert listed.exit_code == 0, listed.output
    report = json.loads(listed.output)
    assert report["summary"]["converted"] == 6 and report["summary"]["unsupported"] == 4
    statuses = {row["title"]: row["status_in_lianfang"] for row in report["rules"]}
    assert statuses["Whoami Execution"] == "converted"
    assert statuses["Cloud Thing"] == "unsupported"
    validated = runner.invoke(main, ["rules", "validate", "--dir", str(rules_dir), "--json"])
    assert validated.exit_code == 1
    assert any(issue["validator"] == "load" for issue in json.loads(validated.output)["issues"])
    missing = runner.invoke(main, ["rules", "list", "--dir", str(rules_dir / "nope")])
    assert missing.exit_code == 2


def test_rules_run_as_scheduler_detectors_one_per_rule(
    rules_dir: Path, sigma_settings: Settings, store: EventStore, client: Elasticsearch
) -> None:
    """`detect run --source sigma`: one detector per rule, searched in one batch per window."""
    from detection.alert_exceptions import ExceptionStore
    from detection.detector import DetectionWindow, DetectorContext, load_detectors
    from detection.scheduler import DetectionScheduler, DetectionStateStore

    ingest_events(sigma_settings, store, EVENTS)
    configured = sigma_settings.model_copy(update={"sigma_rules_dir": rules_dir})
    context = DetectorContext(configured, client, store.names.events_alias)
    loaded = load_detectors(context, ["sigma"])
    assert len(loaded.detectors) == 6
    assert any("4 Sigma rules not run" in problem for problem in loaded.problems)
    prefix = store.names.prefix
    scheduler = DetectionScheduler(
        loaded.detectors,
        AlertStore(client, prefix),
        ExceptionStore(client, prefix),
        DetectionStateStore(client, prefix),
    )
    report = scheduler.run_window(DetectionWindow(DAY, DAY + timedelta(hours=1)))
    found = {run.detector: run.found for run in report.runs}
    assert found["sigma:Whoami Execution"] == 1
    assert found["sigma:Absent Field Only"] == 0
    assert sum(run.created for run in report.runs) == 5
    assert not [run.error for run in report.runs if run.error]
    unconfigured = DetectorContext(sigma_settings, client, store.names.events_alias)
    assert load_detectors(unconfigured, ["sigma"]).detectors == []


def test_raw_event_data_for_accounts_placeholders_and_ip_patterns(tmp_path: Path) -> None:
    """`User`, `'-'` and wildcard IPs query winlog.event_data; exact IPs and CIDRs stay ECS."""
    rule = """
title: Raw Fields
id: 0d0b4e2a-0000-4000-8000-000000000010
level: low
logsource: {product: windows, service: security}
detection:
    selection:
        User|contains: 'AUTHORI'
        WorkstationName: '-'
        IpAddress|startswith: '192.168.'
    filter:
        IpAddress|cidr: '10.0.0.0/8'
    condition: selection and not filter
"""
    query = converted_by_title(write_rules(tmp_path / "r", raw=rule))["Raw Fields"].query
    assert "winlog.event_data.User:/.*[aA][uU][tT][hH][oO][rR][iI].*/" in query
    assert "winlog.event_data.WorkstationName:\\-" in query
    assert "winlog.event_data.IpAddress:192.168.*" in query
    assert "source.ip:10.0.0.0\\/8" in query
    assert "user.name" not in query and "source.domain" not in query


def test_classic_powershell_data_is_matched_on_the_params(tmp_path: Path) -> None:
    """Sigma's `Data` (unnamed <Data> elements) becomes param1 OR param2 OR param3."""
    rule = """
title: Classic Data
id: 0d0b4e2a-0000-4000-8000-000000000011
level: low
logsource: {product: windows, category: ps_classic_start}
detection:
    selection:
        Data|contains: 'EngineVersion=2.'
    condition: selection
"""
    query = converted_by_title(write_rules(tmp_path / "r", data=rule))["Classic Data"].query
    assert "event.code:400" in query
    for param in ("param1", "param2", "param3"):
        assert f"winlog.event_data.{param}:" in query
    assert "winlog.event_data.Data" not in query


def test_sysmon_hashes_become_lower_case_hash_terms(tmp_path: Path) -> None:
    """`Hashes|contains: 'MD5=...'` is an exact lower-case term on the ECS hash field."""
    rule = """
title: Known Driver
id: 0d0b4e2a-0000-4000-8000-000000000012
level: high
logsource: {product: windows, category: driver_load}
detection:
    selection:
        Hashes|contains:
            - 'MD5=C996D7971C49252C582171D9380360F2'
            - 'IMPHASH=ABCDEF0123456789ABCDEF0123456789'
    condition: selection
"""
    query = converted_by_title(write_rules(tmp_path / "r", hashes=rule))["Known Driver"].query
    assert "file.hash.md5:c996d7971c49252c582171d9380360f2" in query
    assert "file.pe.imphash:abcdef0123456789abcdef0123456789" in query
    assert "Hashes" not in query


def test_values_ending_in_a_backslash_and_emoji_lists_are_valid_queries(
    sigma_settings: Settings, store: EventStore, client: Elasticsearch, tmp_path: Path
) -> None:
    """A trailing backslash and 4-byte characters give queries Elasticsearch accepts."""
    rule = """
title: Trailing Backslash
id: 0d0b4e2a-0000-4000-8000-000000000013
level: low
logsource: {{product: windows, category: process_creation}}
detection:
    selection:
        Image|startswith: 'C:\\\\Tools\\\\'
    emoji:
        CommandLine|contains: ['{}']
    condition: selection or emoji
""".format("', '".join(chr(0x1F400 + index) for index in range(600)))
    ingest_events(sigma_settings, store, EVENTS)
    converted = converted_by_title(write_rules(tmp_path / "r", tail=rule))["Trailing Backslash"]
    report = RunReport()
    SigmaRunner(client, store.names).search([converted], report=report)
    assert report.failures == []


def test_index_plan_requirements_are_conjunctive_only(rules_dir: Path) -> None:
    """Gates come from AND-ed conditions; an index lacking them is skipped, others kept."""
    from detection.sigma.query_plan import index_accepts

    rules = converted_by_title(rules_dir)
    logon = rules["Network Logon With Explicit Account"]
    gate = {name: frozenset(values) for name, values in logon.gate.items()}
    clauses = [frozenset(clause) for clause in logon.required_fields]
    assert gate == {"event.code": frozenset({"4624"}), "winlog.channel": frozenset({"security"})}
    always = {"event.code", "winlog.channel"}
    fields = always | {"winlog.event_data.LogonType", "winlog.event_data.IpAddress"}
    assert index_accepts(gate, clauses, {("4624", "security")}, fields)
    assert not index_accepts(gate, clauses, {("4625", "security")}, fields)
    without_ip = always | {"winlog.event_data.LogonType"}
    assert not index_accepts(gate, clauses, {("4624", "security")}, without_ip)
    # `by_command or by_absent_field`: neither field alone is required, one of them is.
    either = rules["Either Field"].required_fields
    assert any(set(clause) >= {"process.command_line.keyword"} for clause in either)
    assert not index_accepts({}, [frozenset(c) for c in either], set(), {"host.name"})


def test_long_index_lists_fall_back_to_the_alias_in_urls() -> None:
    """Paging requests carry the indices in the URL: hundreds of daily names become the alias."""
    runner = SigmaRunner(Elasticsearch("http://127.0.0.1:1"), IndexNames("p"))
    daily = ",".join(f"p-events-2020.01.{day:02d}" for day in range(1, 32)) * 10
    assert runner._url_target(daily) == "p-events"
    assert runner._url_target("p-events-2020.01.01") == "p-events-2020.01.01"


# ------------------------------------------------------------------ EVTX field semantics


def evtx_record(channel: str, event_id: int, provider: str, minute: int, **data: str) -> dict:
    """A record as the `evtx` package decodes it (System attributes, named EventData)."""
    return {
        "Event": {
            "System": {
                "Provider": {"#attributes": {"Name": provider}},
                "EventID": event_id,
                "Channel": channel,
                "Computer": "WS-09",
                "EventRecordID": 100 + minute,
                "TimeCreated": {
                    "#attributes": {
                        "SystemTime": (DAY + timedelta(minutes=minute))
                        .isoformat()
                        .replace("+00:00", "Z")
                    }
                },
            },
            "EventData": data,
        }
    }


def user_data_record(channel: str, event_id: int, provider: str, minute: int, **data: str) -> dict:
    """A record whose payload is UserData (TerminalServices, log cleared) instead of EventData."""
    record = evtx_record(channel, event_id, provider, minute)
    record["Event"].pop("EventData")
    record["Event"]["UserData"] = {"EventXML": {"#attributes": {"xmlns": "Event_NS"}, **data}}
    return record


SYSMON_PROVIDER = "Microsoft-Windows-Sysmon"
SECURITY_PROVIDER = "Microsoft-Windows-Security-Auditing"
# Each record with the fixture rule that must match it (and only it).
EVTX_FIELD_CASES = [
    # Sysmon writes '?' for PE metadata it could not read; our format keeps it in event data only.
    (
        evtx_record(
            SYSMON,
            1,
            SYSMON_PROVIDER,
            1,
            Image="C:\\Users\\a\\Downloads\\x.exe",
            CommandLine="x.exe",
            Description="?",
            Product="?",
            Company="?",
        ),
        "Unknown PE Metadata",
    ),
    (
        evtx_record(
            SYSMON,
            1,
            SYSMON_PROVIDER,
            2,
            Image="C:\\Users\\a\\Downloads\\y.exe",
            CommandLine="y.exe",
            Description="Y tool",
            Product="Y",
            Company="Y Corp",
        ),
        None,
    ),
    # 'true'/'false' as Sysmon writes them; ECS holds a boolean or egress/ingress.
    (
        evtx_record(
            SYSMON,
            7,
            SYSMON_PROVIDER,
            3,
            Image="C:\\Windows\\System32\\lsass.exe",
            ImageLoaded="C:\\Temp\\evil.dll",
            Signed="false",
            SignatureStatus="Unavailable",
        ),
        "Unsigned Into Lsass",
    ),
    (
        evtx_record(
            SYSMON,
            7,
            SYSMON_PROVIDER,
            4,
            Image="C:\\Windows\\System32\\lsass.exe",
            ImageLoaded="C:\\Windows\\System32\\ok.dll",
            Signed="true",
            Signature="Microsoft Windows",
            SignatureStatus="Valid",
        ),
        None,
    ),
    (
        evtx_record(
            SYSMON,
            3,
            SYSMON_PROVIDER,
            5,
            Image="C:\\Windows\\System32\\certutil.exe",
            Initiated="true",
            Protocol="tcp",
            DestinationIp="203.0.113.7",
            DestinationPort="443",
            SourceIp="10.0.0.9",
            SourcePort="50000",
        ),
        "Certutil Outbound",
    ),
    (
        evtx_record(
            SYSMON,
            3,
            SYSMON_PROVIDER,
            6,
            Image="C:\\Windows\\System32\\certutil.exe",
            Initiated="false",
            Protocol="tcp",
            DestinationIp="10.0.0.9",
            DestinationPort="50001",
            SourceIp="203.0.113.7",
            SourcePort="443",
        ),
        None,
    ),
    # 4624: ECS user.name is the *target* account; SubjectUserName is the machine account.
    (
        evtx_record(
            "Security",
            4624,
            SECURITY_PROVIDER,
            7,
            SubjectUserName="WS-09$",
            SubjectDomainName="CORP",
            SubjectUserSid="S-1-5-18",
            SubjectLogonId="0x3e7",
            TargetUserName="bob",
            TargetDomainName="CORP",
            TargetLogonId="0x1cd8f6",
            LogonType="2",
            IpAddress="127.0.0.1",
            ProcessName="C:\\Windows\\System32\\svchost.exe",
        ),
        "Subject Is A Machine Account",
    ),
    # 4688: ParentProcessName is a full path (ECS process.parent.name is the file name).
    (
        evtx_record(
            "Security",
            4688,
            SECURITY_PROVIDER,
            8,
            SubjectUserName="alice",
            SubjectDomainName="CORP",
            NewProcessName="C:\\Windows\\System32\\whoami.exe",
            ParentProcessName="C:\\Windows\\System32\\cmd.exe",
            CommandLine="whoami",
        ),
        "Parent Path",
    ),
    # Sigma names UserData fields like EventData ones (TerminalServices 21 has only UserData).
    (
        user_data_record(
            "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",
            21,
            "Microsoft-Windows-TerminalServices-LocalSessionManager",
            9,
            User="CORP\\bob",
            SessionID="2",
            Address="16777216",
        ),
        "Remote Session From Tunnel",
    ),
]
EVTX_FIELD_RULES = {
    "session": """
title: Remote Session From Tunnel
id: 0d0b4e2a-0000-4000-8000-000000000026
level: high
logsource: {product: windows, service: terminalservices-localsessionmanager}
detection:
    selection:
        EventID: 21
        Address|contains: '16777216'
    condition: selection
""",
    "pe": """
title: Unknown PE Metadata
id: 0d0b4e2a-0000-4000-8000-000000000020
level: medium
logsource: {product: windows, category: process_creation}
detection:
    selection:
        Description: '\\?'
        Product: '\\?'
    folder:
        Image|contains: '\\Downloads\\'
    condition: selection and folder
""",
    "signed": """
title: Unsigned Into Lsass
id: 0d0b4e2a-0000-4000-8000-000000000021
level: medium
logsource: {product: windows, category: image_load}
detection:
    selection:
        Image|endswith: '\\lsass.exe'
        Signed: 'false'
    condition: selection
""",
    "initiated": """
title: Certutil Outbound
id: 0d0b4e2a-0000-4000-8000-000000000022
level: medium
logsource: {product: windows, category: network_connection}
detection:
    selection:
        Image|endswith: '\\certutil.exe'
        Initiated: 'true'
    condition: selection
""",
    "subject": """
title: Subject Is A Machine Account
id: 0d0b4e2a-0000-4000-8000-000000000023
level: low
logsource: {product: windows, service: security}
detection:
    selection:
        EventID: 4624
        SubjectUserName|endswith: '$'
        SubjectDomainName: 'corp'
    condition: selection
""",
    "subject_is_not_target": """
title: Subject Named Bob
id: 0d0b4e2a-0000-4000-8000-000000000024
level: low
logsource: {product: windows, service: security}
detection:
    selection:
        SubjectUserName: 'bob'
    condition: selection
""",
    "parent": """
title: Parent Path
id: 0d0b4e2a-0000-4000-8000-000000000025
level: low
logsource: {product: windows, service: security}
detection:
    selection:
        EventID: 4688
        ParentProcessName|endswith: '\\cmd.exe'
    condition: selection
""",
}


def test_evtx_field_semantics_are_queried_as_windows_writes_them(tmp_path: Path) -> None:
    """'?' placeholders, Sysmon booleans, subject accounts and parent paths use the raw data."""
    rules = converted_by_title(write_rules(tmp_path / "r", **EVTX_FIELD_RULES))
    assert "winlog.event_data.Description:\\?" in rules["Unknown PE Metadata"].query
    assert "process.pe.description" not in rules["Unknown PE Metadata"].query
    assert "winlog.event_data.Signed:" in rules["Unsigned Into Lsass"].query
    assert "winlog.event_data.Initiated:" in rules["Certutil Outbound"].query
    assert "network.direction" not in rules["Certutil Outbound"].query
    subject = rules["Subject Is A Machine Account"].query
    assert "winlog.event_data.SubjectUserName:" in subject and "user.name" not in subject
    assert "winlog.event_data.SubjectDomainName:" in subject and "user.domain" not in subject
    assert "winlog.event_data.ParentProcessName:" in rules["Parent Path"].query


def test_evtx_field_semantics_match_on_the_node(
    sigma_settings: Settings, store: EventStore, client: Elasticsearch, tmp_path: Path
) -> None:
    """Each EVTX-shaped record is matched by its rule only; the negatives by none."""
    ingest_events(sigma_settings, store, [record for record, _ in EVTX_FIELD_CASES])
    hits = client.search(index=store.names.events_alias, size=50, sort=[{"@timestamp": "asc"}])
    ids = [hit["_id"] for hit in hits["hits"]["hits"]]
    assert len(ids) == len(EVTX_FIELD_CASES)
    rules = converted_by_title(write_rules(tmp_path / "r", **EVTX_FIELD_RULES))
    report = RunReport()
    matches = SigmaRunner(client, store.names).search(list(rules.values()), report=report)
    assert report.failures == []
    expected: dict[str, set[str]] = {title: set() for title in rules}
    for event_id, (_, title) in zip(ids, EVTX_FIELD_CASES, strict=True):
        if title is not None:
            expected[title].add(event_id)
    assert {title: event_ids_of(matches, title) for title in rules} == expected


class SingleIndexStore(EventStore):
    """The events store with every event in one index, as the Sigma benchmark runs it."""

    def index_for(self, moment: datetime) -> str:
        """One index whatever the event's day (the samples span about 210 days)."""
        return self.names.events_index_for(DAY.date())


@pytest.mark.slow
@pytest.mark.skipif(
    not (EVTX_SAMPLES.is_dir() and SIGMAHQ.is_dir()),
    reason=f"shared EVTX samples or SigmaHQ rules not found under {SHARED_DATASETS}",
)
def test_sigmahq_rules_on_the_evtx_attack_samples(
    sigma_settings: Settings, client: Elasticsearch
) -> None:
    """The benchmark's coverage as a floor: files with an alert, no rule refused at run time."""
    from collectors.inputs.evtx_file import read_evtx
    from lianfang.schema import document_id

    files = sorted(EVTX_SAMPLES.rglob("*.evtx"))
    store = SingleIndexStore(client, IndexNames(sigma_settings.index_prefix))
    file_of: dict[str, Path] = {}

    def records():
        for path in files:
            for record, origin in read_evtx(path):
                file_of[document_id(Origin(origin.source, origin.offset))] = path
                yield record, origin

    ingest_records(records(), settings=sigma_settings, store=store, format_name="windows")
    store.refresh()
    catalogue = convert_rule_set(
        load_rule_set([SIGMAHQ / "rules" / "windows", SIGMAHQ / "rules-emerging-threats"])
    )
    kinds = catalogue.unsupported_by_kind()
    assert set(kinds) <= {"unsupported-logsource", "unsupported-feature"}, kinds
    assert all(rule.reason for rule in catalogue.unsupported)
    report = RunReport()
    matches = SigmaRunner(client, store.names).search(catalogue.converted, report=report)
    assert report.failures == []
    hit = {
        file_of[event["event"]["id"]]
        for found in matches
        for event in found.events
        if event["event"]["id"] in file_of
    }
    assert len(hit) >= MIN_SAMPLE_FILES_WITH_ALERTS, sorted(
        str(path.relative_to(EVTX_SAMPLES)) for path in set(files) - hit
    )


def test_values_too_long_to_index_are_decided_in_python(
    sigma_settings: Settings,
    store: EventStore,
    client: Elasticsearch,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value over the keyword limit: its clauses decided in Python, the rest by the node."""
    guid = "1131f6ad-9c07-11d1-f79f-00c04fc2dcd2"
    with_right = "O:BAG:BAD:AI" + "(A;;RP;;;AU)" * 800 + f"(OA;;CR;{guid.upper()};;BA)"
    without_right = "O:BAG:BAD:AI" + "(A;;RP;;;AU)" * 800
    events = [
        # 0: long ACL with the right (case differs): ACL rule; not the dnsZone-filtered one
        evtx_record(
            "Security",
            5136,
            SECURITY_PROVIDER,
            1,
            AttributeLDAPDisplayName="nTSecurityDescriptor",
            AttributeValue=with_right,
            ObjectClass="domainDNS",
        ),
        # 1: long ACL without it: no rule
        evtx_record(
            "Security",
            5136,
            SECURITY_PROVIDER,
            2,
            AttributeLDAPDisplayName="nTSecurityDescriptor",
            AttributeValue=without_right,
            ObjectClass="domainDNS",
        ),
        # 2: the right on a filtered object class: NOT decided by the node
        evtx_record(
            "Security",
            5136,
            SECURITY_PROVIDER,
            3,
            AttributeLDAPDisplayName="nTSecurityDescriptor",
            AttributeValue=with_right,
            ObjectClass="dnsZone",
        ),
        # 3: long command line: Echo rule through Python, Cmd Image through the node
        evtx_record(
            SYSMON,
            1,
            SYSMON_PROVIDER,
            4,
            Image="C:\\Windows\\System32\\cmd.exe",
            CommandLine="cmd /c ECHO " + "A" * 9000,
        ),
    ]
    ingest_events(sigma_settings, store, events)
    ids = [
        hit["_id"]
        for hit in client.search(
            index=store.names.events_alias, size=10, sort=[{"@timestamp": "asc"}]
        )["hits"]["hits"]
    ]
    rules = {
        "acl": f"""
title: Extended Right In ACL
id: 0d0b4e2a-0000-4000-8000-000000000030
level: high
logsource: {{product: windows, service: security}}
detection:
    selection:
        EventID: 5136
        AttributeValue|contains: '{guid}'
    filter:
        ObjectClass: 'dnsZone'
    condition: selection and not filter
""",
        "cmd": """
title: Echo In Command Line
id: 0d0b4e2a-0000-4000-8000-000000000031
level: low
logsource: {product: windows, category: process_creation}
detection:
    selection:
        CommandLine|contains: 'echo'
    condition: selection
""",
        "image": """
title: Cmd Image
id: 0d0b4e2a-0000-4000-8000-000000000032
level: low
logsource: {product: windows, category: process_creation}
detection:
    selection:
        Image|endswith: '\\cmd.exe'
    condition: selection
""",
    }
    converted = converted_by_title(write_rules(tmp_path / "r", **rules))
    report = RunReport()
    matches = SigmaRunner(client, store.names).search(list(converted.values()), report=report)
    assert report.failures == []
    assert report.unindexed == {}
    assert event_ids_of(matches, "Extended Right In ACL") == {ids[0]}
    assert event_ids_of(matches, "Echo In Command Line") == {ids[3]}
    assert event_ids_of(matches, "Cmd Image") == {ids[3]}
    # Past the per-rule limit the rule is not decided but named, with the field.
    monkeypatch.setattr("detection.sigma.execution.MAX_UNINDEXED_DOCUMENTS", 1)
    report = RunReport()
    matches = SigmaRunner(client, store.names).search(list(converted.values()), report=report)
    assert report.unindexed == {
        "0d0b4e2a-0000-4000-8000-000000000030": ["winlog.event_data.AttributeValue"]
    }
    assert event_ids_of(matches, "Extended Right In ACL") == set()
    assert event_ids_of(matches, "Echo In Command Line") == {ids[3]}
    assert "unindexed" in report.as_dict()


def test_clauses_on_a_field_are_found_and_decided() -> None:
    """Regex, value lists and escaped terms as the backend writes them; regex text is skipped."""
    from detection.sigma.unindexed import decided_queries, field_clauses, value_matcher

    query = (
        "event.code:1 AND (f:/.*[aA]\\:b.*/ OR NOT f:(x\\*y OR c*d OR /[eE]/)) "
        "AND g:/f:not\\/a\\ clause/"
    )
    clauses = field_clauses(query, ["f"])
    assert [clause.value for clause in clauses] == ["/.*[aA]\\:b.*/", "(x\\*y OR c*d OR /[eE]/)"]
    assert value_matcher(clauses[1].value)("x*y") and value_matcher(clauses[1].value)("cZd")
    assert not value_matcher(clauses[1].value)("xy")
    decided = dict(
        (query, ids)
        for query, ids in decided_queries(
            query, ["f"], {"1": {"f": "zA:bz"}, "2": {"f": "E"}, "3": {"f": "A:b"}}
        )
    )
    assert decided == {
        "event.code:1 AND ((*:*) OR NOT (NOT *:*)) AND g:/f:not\\/a\\ clause/": ["1", "3"],
        "event.code:1 AND ((NOT *:*) OR NOT (*:*)) AND g:/f:not\\/a\\ clause/": ["2"],
    }


NETWORK_RULES = {
    "dns": """
title: Bad Domain Lookup
id: 0d0b4e2a-0000-4000-8000-000000000040
level: high
logsource: {category: dns}
detection:
    selection:
        query|endswith: '.bad-c2.example'
    condition: selection
""",
    "firewall": """
title: Bad Address Traffic
id: 0d0b4e2a-0000-4000-8000-000000000041
level: high
logsource: {category: firewall}
detection:
    selection:
        - dst_ip: '198.51.100.23'
        - src_ip: '198.51.100.23'
    condition: selection
""",
    "unmapped": """
title: Firewall Action
id: 0d0b4e2a-0000-4000-8000-000000000042
level: low
logsource: {category: firewall}
detection:
    selection:
        action: 'blocked'
        dst_port: 445
    condition: selection
""",
    "web": """
title: Web Path
id: 0d0b4e2a-0000-4000-8000-000000000043
level: low
logsource: {category: webserver}
detection:
    selection:
        cs-uri-query|contains: '/etc/passwd'
    condition: selection
""",
}


def test_productless_dns_and_firewall_rules_run_on_ecs_network_fields(
    sigma_settings: Settings, store: EventStore, client: Elasticsearch, tmp_path: Path
) -> None:
    """`category: dns|firewall` without a product: ECS fields; unmapped fields are refused."""
    catalogue = convert_rule_set(load_rule_set([write_rules(tmp_path / "r", **NETWORK_RULES)]))
    converted = {rule.title: rule for rule in catalogue.converted}
    refused = {rule.title: rule for rule in catalogue.unsupported}
    assert set(converted) == {"Bad Domain Lookup", "Bad Address Traffic"}
    assert converted["Bad Domain Lookup"].pipeline == "network"
    assert "dns.question.name:" in converted["Bad Domain Lookup"].query
    assert "destination.ip:198.51.100.23" in converted["Bad Address Traffic"].query
    assert refused["Firewall Action"].kind == "conversion-error"
    assert "src_ip" in refused["Firewall Action"].reason
    assert refused["Web Path"].kind == "unsupported-logsource"
    events = [
        evtx_record(
            SYSMON,
            22,
            SYSMON_PROVIDER,
            1,
            QueryName="Beacon.Bad-C2.example",
            QueryStatus="0",
            Image="C:\\Windows\\System32\\rundll32.exe",
        ),
        evtx_record(
            SYSMON,
            22,
            SYSMON_PROVIDER,
            2,
            QueryName="bad-c2.example.org",
            QueryStatus="0",
            Image="C:\\Windows\\System32\\rundll32.exe",
        ),
        evtx_record(
            SYSMON,
            3,
            SYSMON_PROVIDER,
            3,
            Image="C:\\Temp\\x.exe",
            Initiated="true",
            Protocol="tcp",
            SourceIp="10.0.0.9",
            SourcePort="50000",
            DestinationIp="198.51.100.23",
            DestinationPort="443",
        ),
    ]
    ingest_events(sigma_settings, store, events)
    hits = client.search(index=store.names.events_alias, size=10, sort=[{"@timestamp": "asc"}])
    ids = [hit["_id"] for hit in hits["hits"]["hits"]]
    report = RunReport()
    matches = SigmaRunner(client, store.names).search(list(converted.values()), report=report)
    assert report.failures == []
    assert event_ids_of(matches, "Bad Domain Lookup") == {ids[0]}
    assert event_ids_of(matches, "Bad Address Traffic") == {ids[2]}


def test_contains_lists_without_letters_are_one_alternation(tmp_path: Path) -> None:
    """Values without letters but with wildcards share one regex, not one wildcard query each."""
    rule = """
title: Emoji Sequences
id: 0d0b4e2a-0000-4000-8000-000000000050
level: low
logsource: {product: windows, category: process_creation}
detection:
    selection:
        CommandLine|contains: ['\U0001f937\U0001f3fc', '\U0001f64e\U0001f3fc', '--%%']
    condition: selection
"""
    query = converted_by_title(write_rules(tmp_path / "r", emoji=rule))["Emoji Sequences"].query
    assert query.count("process.command_line.keyword:") == 1
    assert "process.command_line.keyword:/.*((" in query
    assert "*" not in query.split("process.command_line.keyword:")[1].replace(".*", "")
