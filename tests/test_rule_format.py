"""The behavioural rule format, its filter language, the pure metrics and per-department plans."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from detection.rule_executor import RulePlan, compile_filter
from detection.rule_format import (
    BUILTIN_RULES_DIR,
    RuleFormatError,
    builtin_rules,
    format_duration,
    load_rules,
    parse_duration,
    parse_filter,
    rule_from_mapping,
)
from detection.rule_metrics import (
    WorkingHours,
    compare_to_baseline,
    find_sequence,
    interval_stats,
    label_entropy,
    max_subdomains,
    parent_domain,
    render_explanation,
    shannon_entropy,
)
from detection.rule_overrides import plan_rules
from lianfang.settings import DetectionRuleSettings, RuleOverride

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def minimal(**overrides: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": "test-rule",
        "name": "Test rule",
        "severity": "high",
        "techniques": ["T1110.001"],
        "window": "10m",
        "filter": {"event.outcome": "failure"},
        "group_by": ["source.ip"],
        "parameters": {"min_failures": 5},
        "conditions": ["count >= $min_failures"],
        "explanation": "{count} failures from {source.ip}",
    }
    rule.update(overrides)
    return rule


def test_builtin_rules_are_valid_and_cover_the_required_behaviours() -> None:
    rules = builtin_rules()
    kinds = {rule.kind for rule in rules}
    assert kinds == {"threshold", "sequence", "baseline"}
    techniques = {t for rule in rules for t in rule.techniques}
    assert {"T1110.001", "T1110.003", "T1046", "T1071.004", "T1078", "T1213"} <= techniques
    assert all(rule.window > timedelta(0) for rule in rules)


def test_a_valid_rule_loads() -> None:
    rule = rule_from_mapping(minimal())
    assert rule.window == timedelta(minutes=10)
    assert rule.entity_field == "source.ip"
    assert rule.grouping_window == timedelta(hours=1)
    assert str(rule.parsed_conditions()[0]) == "count >= $min_failures"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"conditions": ["failures >= 3"]}, "unknown metric 'failures'"),
        ({"conditions": ["count >= $nope"]}, "undefined parameters: $nope"),
        ({"conditions": ["count ~ 3"]}, "is not `metric op value`"),
        ({"techniques": ["T0000"]}, "unknown ATT&CK technique"),
        ({"techniques": ["T1002"]}, "revoked"),
        ({"window": "ten minutes"}, "not a duration"),
        ({"filter": {"source.ip": {"near": "x"}}}, "unknown operator"),
        ({"severity": "urgent"}, "severity"),
        ({"explanation": "{count} from {destination.ip}"}, "unknown value {destination.ip}"),
        ({"kind": "sequence"}, "needs `sequence` steps"),
        ({"metrics": {"r": {"ratio": ["count", "missing"]}}}, "ratio of unknown metrics"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_invalid_rules_are_reported_with_the_problem(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(RuleFormatError) as caught:
        rule_from_mapping(minimal(**change), "bad.yaml")
    assert problem in str(caught.value)
    assert caught.value.source == "bad.yaml"


def test_bad_files_are_returned_and_good_ones_still_load(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("id: [unclosed\n")
    (tmp_path / "invalid.yaml").write_text("id: x\n")
    (tmp_path / "ssh-brute-force.yaml").write_text(
        (BUILTIN_RULES_DIR / "ssh-brute-force.yaml").read_text().replace("high", "critical")
    )
    rules, errors = load_rules([BUILTIN_RULES_DIR, tmp_path])
    assert {Path(error.source).name for error in errors} == {"broken.yaml", "invalid.yaml"}
    replaced = next(rule for rule in rules if rule.id == "ssh-brute-force")
    assert replaced.severity == "critical"  # a later directory replaces a built-in rule


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("7d") == timedelta(days=7)
    assert format_duration(timedelta(minutes=10)) == "10m"
    assert format_duration(timedelta(hours=36)) == "36h"
    with pytest.raises(ValueError):
        parse_duration("0m")


def test_filter_language_compiles_to_bool_queries() -> None:
    tree = parse_filter(
        {
            "event.category": "authentication",
            "event.action": ["ssh_login", "invalid_user"],
            "source.bytes": {"gt": 0},
            "url.path": {"wildcard": "$paths"},
            "any": [{"user.name": "root"}, {"host.name": {"prefix": "gc-"}}],
            "not": [{"source.ip": "10.0.0.0/8"}],
            "destination.port": {"exists": True, "not": [443]},
        }
    )
    query = compile_filter(tree, {"paths": ["*login*", "*auth*"]})
    clauses = query["bool"]["filter"]
    assert {"term": {"event.category": "authentication"}} in clauses
    assert {"terms": {"event.action": ["ssh_login", "invalid_user"]}} in clauses
    assert {"range": {"source.bytes": {"gt": 0}}} in clauses
    wildcard = next(
        c for c in clauses if "bool" in c and "should" in c["bool"] and "wildcard" in str(c)
    )
    assert len(wildcard["bool"]["should"]) == 2
    assert {"bool": {"must_not": [{"term": {"source.ip": "10.0.0.0/8"}}]}} in clauses


def test_entropy_and_domains() -> None:
    assert shannon_entropy("aaaa") == 0
    assert shannon_entropy("abcd") == pytest.approx(2.0)
    assert parent_domain("a.b.example.com") == "example.com"
    assert parent_domain("x.y.example.com.cn") == "example.com.cn"
    random_names = ["q8f3k2m9x7v1b5n4c6z0.t.c2.net", "m2n8b4v6c1x9z3l5k7j0.t.c2.net"]
    plain_names = ["aaaaaaaaaaaaaaaaaaaaaa.example.com"]
    assert label_entropy(random_names, 10) > 4 > label_entropy(plain_names, 10)
    assert label_entropy(["www.example.com"], 10) is None
    assert max_subdomains(["a.x.com", "b.x.com", "c.y.com"]) == (2, "x.com")


def test_interval_regularity() -> None:
    regular = [T0 + timedelta(seconds=60 * i) for i in range(10)]
    stats = interval_stats(regular)
    assert stats is not None and stats.mean_seconds == 60 and stats.coefficient_of_variation == 0
    irregular = [T0 + timedelta(seconds=s) for s in (0, 5, 200, 210, 900, 901)]
    assert interval_stats(irregular).coefficient_of_variation > 1
    assert interval_stats(regular[:2]) is None


def test_sequences_need_order_count_and_window() -> None:
    failures = [T0 + timedelta(seconds=10 * i) for i in range(5)]
    success = [T0 + timedelta(minutes=2)]
    match = find_sequence([failures, success], [5, 1], timedelta(minutes=5))
    assert match is not None and match.first == T0 and match.last == success[0]
    assert len(match.steps[0]) == 5
    assert (
        find_sequence([failures, [T0 - timedelta(minutes=1)]], [5, 1], timedelta(minutes=5)) is None
    )
    assert find_sequence([failures, success], [6, 1], timedelta(minutes=5)) is None
    assert find_sequence([failures, success], [5, 1], timedelta(seconds=90)) is None


def test_baseline_comparison_uses_the_entitys_own_history() -> None:
    hour = timedelta(hours=1)
    series = {T0 - hour * h: 10.0 for h in range(1, 5)} | {T0: 1000.0}
    comparison = compare_to_baseline(series, T0, hour, timedelta(days=7))
    assert comparison.mean == 10 and comparison.periods == 4 and comparison.ratio == 100
    quiet = {T0 - hour * 4: 10.0, T0: 50.0}  # three silent hours count as zero
    assert compare_to_baseline(quiet, T0, hour, timedelta(days=7)).mean == pytest.approx(2.5)
    new = compare_to_baseline({T0: 5.0}, T0, hour, timedelta(days=7))
    assert new.periods == 0 and math.isinf(new.ratio) and math.isinf(new.zscore)


def test_working_hours_in_the_departments_zone() -> None:
    hours = WorkingHours.parse("08:00-19:00", ["mon", "tue", "wed", "thu", "fri"], "Asia/Shanghai")
    tuesday = datetime(2026, 11, 24, tzinfo=UTC)  # 08:00 in Shanghai
    assert hours.is_working_time(tuesday + timedelta(hours=3))
    assert not hours.is_working_time(tuesday + timedelta(hours=12))  # 20:00 local
    off = hours.off_hours(tuesday - timedelta(hours=2), tuesday + timedelta(hours=14))
    # Tuesday 06:00-08:00 local, then from 19:00 local (11:00 UTC) on.
    assert off == [
        (tuesday - timedelta(hours=2), tuesday),
        (tuesday + timedelta(hours=11), tuesday + timedelta(hours=14)),
    ]
    saturday = datetime(2026, 11, 28, 4, tzinfo=UTC)
    assert hours.off_hours(saturday, saturday + timedelta(hours=3)) == [
        (saturday, saturday + timedelta(hours=3))
    ]
    with pytest.raises(ValueError):
        WorkingHours.parse("19:00-08:00", [1], "Asia/Shanghai")


def test_explanations() -> None:
    text = render_explanation(
        "{count} from {source.ip}: {bytes:bytes}, cv {cv:.2f}, {missing}",
        {"count": 1200, "source.ip": "203.0.113.5", "bytes": 2_400_000_000, "cv": 0.1234},
    )
    assert text == "1,200 from 203.0.113.5: 2.4 GB, cv 0.12, ?"


def test_department_overrides_become_scoped_plans() -> None:
    rules = [rule_from_mapping(minimal())]
    overrides = DetectionRuleSettings(
        rules={"test-rule": RuleOverride(severity="critical")},
        departments={
            "energy": {"test-rule": RuleOverride(parameters={"min_failures": 50})},
            "finance": {"test-rule": RuleOverride(enabled=False)},
            "transport": {"test-rule": RuleOverride(parameters={"nope": 1})},
        },
    )
    plans, problems = plan_rules(rules, overrides)
    by_label = {plan.label: plan for plan in plans}
    assert set(by_label) == {"test-rule", "test-rule@energy"}
    default = by_label["test-rule"]
    assert default.severity == "critical" and default.parameters["min_failures"] == 5
    assert set(default.excluded_organizations) == {"energy", "finance", "transport"}
    assert by_label["test-rule@energy"].parameters["min_failures"] == 50
    assert by_label["test-rule@energy"].organizations == ("energy",)
    assert [p.where for p in problems] == ["departments.transport.test-rule"]


def test_override_types_and_unknown_rules_are_reported() -> None:
    rules = [rule_from_mapping(minimal())]
    overrides = DetectionRuleSettings(
        rules={
            "test-rule": RuleOverride(parameters={"min_failures": "many"}),
            "no-such-rule": RuleOverride(enabled=False),
        }
    )
    plans, problems = plan_rules(rules, overrides)
    assert [plan.parameters["min_failures"] for plan in plans] == [5]
    reasons = " ".join(str(p) for p in problems)
    assert "no such rule" in reasons and "must be int" in reasons
    assert RulePlan.default(rules[0]).label == "test-rule"


def test_overrides_load_from_the_settings_file_and_a_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detection.rule_overrides import combine, read_overrides_file
    from lianfang.settings import load_settings

    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(
        "departments:\n  energy:\n    test-rule: {parameters: {min_failures: 7}, severity: low}\n"
    )
    config = tmp_path / "lianfang.toml"
    config.write_text(
        f'[detection_rules]\noverrides_file = "{overrides}"\n'
        "[detection_rules.departments.energy.test-rule]\nparameters = { min_failures = 9 }\n"
    )
    monkeypatch.setenv("LIANFANG_CONFIG", str(config))
    settings = load_settings().detection_rules
    assert settings.departments["energy"]["test-rule"].parameters == {"min_failures": 9}
    merged = combine(read_overrides_file(overrides), settings)
    energy = merged.departments["energy"]["test-rule"]
    assert energy.parameters == {"min_failures": 9} and energy.severity == "low"
    plans, problems = plan_rules([rule_from_mapping(minimal())], merged)
    assert not problems
    assert {p.label: p.severity for p in plans} == {"test-rule@energy": "low", "test-rule": "high"}
