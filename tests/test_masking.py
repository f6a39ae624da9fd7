"""Personal-data masking: detectors, tokens, idempotence, fields, policy and key handling."""

from __future__ import annotations

import json
import logging
import random
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from collectors import masking
from collectors.masking import (
    Masker,
    MaskingDeadLetterFile,
    MaskingKeyMissing,
    MaskingPolicy,
    MaskingStage,
    TextMasker,
    is_valid_id_number,
    luhn_valid,
)
from lianfang.schema import Event, Origin, document_id
from lianfang.settings import Settings, load_settings

KEY = b"unit-test-masking-key-0123456789"
TOKEN = re.compile(r"\[(?:ID|MOBILE|CARD|EMAIL|REDACTED):[^\]]+\]")

# Computed here, independently of the module: GB 11643 weights and check characters.
WEIGHTS = [2 ** (17 - i) % 11 for i in range(17)]


def check_character(first_17: str) -> str:
    remainder = sum(int(d) * w for d, w in zip(first_17, WEIGHTS, strict=True)) % 11
    return "10X98765432"[remainder]


def make_id(region: str = "110105", birth: str = "19900307", sequence: str = "123") -> str:
    body = region + birth + sequence
    return body + check_character(body)


def luhn_complete(partial: str) -> str:
    """`partial` plus the digit that makes it Luhn-valid (computed here, not by the module)."""
    for last in "0123456789":
        digits = [int(d) for d in partial + last][::-1]
        total = sum(
            d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(digits)
        )
        if total % 10 == 0:
            return partial + last
    raise AssertionError("unreachable")


@pytest.fixture
def masker() -> TextMasker:
    return TextMasker(KEY)


# -- identity numbers


def test_weights_match_the_standard() -> None:
    assert WEIGHTS == [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


@pytest.mark.parametrize(
    "number",
    [
        make_id(),
        make_id("440305", "20000229", "001"),  # leap day
        make_id("650102", "19451001", "987"),
        make_id("810000", "19880808", "018"),  # Hong Kong residence permit
    ],
)
def test_valid_identity_numbers_are_masked_completely(masker: TextMasker, number: str) -> None:
    text = f"身份证号:{number}，已核验"
    masked = masker.mask(text)
    assert number not in masked
    assert number[6:14] not in masked  # not even the birth date
    assert re.fullmatch(r"身份证号:\[ID:[0-9a-f]{12}\]，已核验", masked)


def test_check_character_x_in_either_case() -> None:
    sequence = next(
        f"{n:03d}" for n in range(1000) if check_character("11010519900307" + f"{n:03d}") == "X"
    )
    upper = make_id(sequence=sequence)
    assert upper.endswith("X")
    masker = TextMasker(KEY)
    lower = upper[:-1] + "x"
    assert masker.mask(upper) == masker.mask(lower)
    assert TOKEN.fullmatch(masker.mask(f"{lower}"))
    assert masker.mask(f"{upper}Y") == f"{upper}Y"  # glued to a word: not a standalone number


@pytest.mark.parametrize(
    "number",
    [
        make_id()[:-1] + ("0" if make_id()[-1] != "0" else "1"),  # wrong check digit
        "110105199002301234"[:17] + check_character("11010519900230123"),  # 30 February
        "000105199003071234"[:17] + check_character("00010519900307123"),  # no such province
        "990105199003071234"[:17] + check_character("99010519900307123"),
        "11010518800307123" + check_character("11010518800307123"),  # born 1880
    ],
)
def test_invalid_identity_numbers_stay(masker: TextMasker, number: str) -> None:
    assert not is_valid_id_number(number)
    assert masker.mask(f"ref {number} end") == f"ref {number} end"


def test_future_birth_date_is_not_an_identity_number() -> None:
    tomorrow = date.today() + timedelta(days=1)
    number = make_id(birth=tomorrow.strftime("%Y%m%d"))
    assert not is_valid_id_number(number)


def test_random_18_digit_numbers_that_fail_the_check_stay(masker: TextMasker) -> None:
    generator = random.Random(11)
    kept = 0
    for _ in range(300):
        number = "1" + "".join(generator.choice("0123456789") for _ in range(17))
        if is_valid_id_number(number):
            continue
        kept += 1
        assert masker.mask(f"order {number}") == f"order {number}"
    assert kept > 250


def test_identity_number_inside_a_longer_digit_run_stays(masker: TextMasker) -> None:
    number = make_id()
    for text in (f"1{number}", f"{number}1", f"0{number}9"):
        assert masker.mask(text) == text


# -- mobile numbers


@pytest.mark.parametrize(
    "text",
    [
        "13812345678",
        "+8613812345678",
        "+86 13812345678",
        "+86-13812345678",
        "008613812345678",
        "8613812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "１３８１２３４５６７８",  # full-width digits, as typed in Chinese forms
    ],
)
def test_mobile_forms_give_one_token(masker: TextMasker, text: str) -> None:
    expected = masker.mask("13812345678")
    assert re.fullmatch(r"\[MOBILE:138\*:[0-9a-f]{12}\]", expected)
    assert masker.mask(f"电话{text}。") == f"电话{expected}。"


@pytest.mark.parametrize(
    "text",
    [
        "213812345678",  # inside a longer digit run
        "138123456789",
        "9913812345678",
        "12812345678",  # 12x is not a mobile segment
        "1381234567",  # ten digits
        "138-1234-567",
        "138 1234-5678",  # mixed separators
    ],
)
def test_not_mobiles(masker: TextMasker, text: str) -> None:
    assert masker.mask(f"n={text};") == f"n={text};"


def test_mobile_keeps_only_the_carrier_segment(masker: TextMasker) -> None:
    masked = masker.mask("call 15912345678 now")
    assert "12345678" not in masked and "5678" not in masked
    assert masked.startswith("call [MOBILE:159*:")


# -- bank cards


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("79927398710")


@pytest.mark.parametrize(
    "card",
    [
        "4111111111111111",
        luhn_complete("622202123456789012"),  # 19-digit UnionPay
        luhn_complete("520000000000"),  # 13 digits
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        luhn_complete("6222 0212 3456 7890 12"[:-1].replace(" ", "")),
    ],
)
def test_luhn_valid_cards_are_masked_keeping_the_last_four(masker: TextMasker, card: str) -> None:
    masked = masker.mask(f"card {card} paid")
    digits = card.replace(" ", "").replace("-", "")
    assert re.fullmatch(rf"card \[CARD:\*{digits[-4:]}:[0-9a-f]{{12}}\] paid", masked)
    assert digits[:6] not in masked


def test_grouped_19_digit_card() -> None:
    digits = luhn_complete("622202123456789012")
    grouped = " ".join(digits[i : i + 4] for i in range(0, 19, 4))
    masker = TextMasker(KEY)
    assert masker.mask(grouped) == masker.mask(digits)


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn fails
        "4111 1111 1111 1112",
        luhn_complete("173278080012"),  # epoch milliseconds: starts with 1
        luhn_complete("0" * 12 + "1"),  # starts with 0
        "4111 1111-1111 1111",  # mixed separators are not a card layout
        luhn_complete("41111111111111111111")[:20],  # 20 digits is too long
    ],
)
def test_not_cards(masker: TextMasker, text: str) -> None:
    assert masker.mask(f"x {text} y") == f"x {text} y"


# -- e-mail


def test_email_keeps_the_domain_and_normalises_case_and_encoding(masker: TextMasker) -> None:
    plain = masker.mask("to zhang.wei@example.cn.")
    assert re.fullmatch(r"to \[EMAIL:[0-9a-f]{12}:example\.cn\]\.", plain)
    assert masker.mask("to Zhang.Wei@Example.CN.") == plain
    assert masker.mask("to zhang.wei%40example.cn.") == plain
    assert "zhang" not in plain


def test_email_next_to_chinese_text_and_in_a_query(masker: TextMasker) -> None:
    masked = masker.mask("联系邮箱lisi_01@qq.com谢谢")
    assert masked.startswith("联系邮箱[EMAIL:") and masked.endswith(":qq.com]谢谢")
    query = masker.mask("a=1&email=wang%2Bx%40corp.example&b=2")
    assert "wang" not in query and query.startswith("a=1&email=[EMAIL:")


def test_things_that_are_not_emails(masker: TextMasker) -> None:
    for text in ('{"@timestamp":"2026-01-01"}', "user@localhost", "a @ b.cn", "@example.com"):
        assert masker.mask(text) == text


def test_mobile_used_as_a_mailbox_is_one_email_token(masker: TextMasker) -> None:
    masked = masker.mask("13812345678@163.com")
    assert re.fullmatch(r"\[EMAIL:[0-9a-f]{12}:163\.com\]", masked)


# -- tokens


def test_tokens_are_stable_per_value_and_key_dependent() -> None:
    number = make_id()
    first = TextMasker(KEY).mask(number)
    assert TextMasker(KEY).mask(f"again {number}") == f"again {first}"
    assert TextMasker(b"another-key-of-enough-length-00").mask(number) != first
    assert TextMasker(KEY).mask(make_id(sequence="124")) != first


def test_same_digits_as_different_kinds_give_unrelated_hashes(masker: TextMasker) -> None:
    mobile = masker.mask("13812345678")
    mailbox = masker.mask("13812345678@example.cn")
    assert mobile.split(":")[-1] != mailbox.split(":")[1]


def _mixed_text(generator: random.Random) -> str:
    pieces = [
        make_id(sequence=f"{generator.randint(0, 999):03d}"),
        f"1{generator.choice('3456789')}{generator.randint(0, 10**9 - 1):09d}",
        luhn_complete(f"62{generator.randint(0, 10**14 - 1):014d}"),
        f"user{generator.randint(1, 99)}@example.cn",
        f"{generator.randint(10**11, 10**12 - 1)}",  # 12 digits: no kind of its own
        "2026-11-28T10:00:00Z",
        "10.20.1.14",
        "中文",
    ]
    generator.shuffle(pieces)
    return " ".join(pieces)


def test_masking_is_idempotent_and_leaves_no_original() -> None:
    masker = TextMasker(KEY)
    generator = random.Random(5)
    for _ in range(200):
        text = _mixed_text(generator)
        masked = masker.mask(text)
        assert masker.mask(masked) == masked
        assert len(TOKEN.findall(masked)) == 4
        for value in text.split()[:]:
            if TOKEN.search(masker.mask(value)):
                assert value not in masked


def test_a_crafted_token_does_not_protect_a_value(masker: TextMasker) -> None:
    number = make_id()
    masked = masker.mask(f"[ID:{number}] [EMAIL:zhang@example.cn]")
    assert number not in masked and "zhang" not in masked


def test_detectors_can_be_switched_off() -> None:
    only_email = TextMasker(KEY, ["email"])
    text = f"{make_id()} 13812345678 4111111111111111 a@b.cn"
    masked = only_email.mask(text)
    assert masked.startswith(f"{make_id()} 13812345678 4111111111111111 [EMAIL:")
    with pytest.raises(ValueError, match="unknown masking detector"):
        TextMasker(KEY, ["passport"])


# -- documents


def _event(document: dict, offset: int = 0) -> Event:
    return Event(document=document, origin=Origin("test", offset))


def test_built_in_fields_lists_numbers_and_literal_dotted_keys() -> None:
    number = make_id()
    document = {
        "@timestamp": "2026-11-28T00:00:00.000Z",
        "message": f"id {number}",
        "event": {"original": f"raw {number}"},
        "db": {"statement": "SELECT * FROM t WHERE phone='13812345678'"},
        "url": {"query": "mail=a%40b.cn", "full": "https://x.cn/?m=13812345678"},
        "user": {"email": "Li.Si@Example.cn", "name": "13812345678"},  # user.name: not scanned
        "threat": {"enrichments": [{"matched": {"atomic": "https://x.cn/?m=13812345678"}}]},
        "labels": {"phone": 13812345678},
        "db.user": "unchanged",
    }
    masker = Masker(TextMasker(KEY), fields=["labels.phone"])
    assert masker.mask_document(document)
    flat = json.dumps(document, ensure_ascii=False)
    assert number not in flat
    assert flat.count("13812345678") == 1  # only user.name, which is not configured
    assert document["labels"]["phone"].startswith("[MOBILE:138*:")
    assert document["threat"]["enrichments"][0]["matched"]["atomic"].startswith(
        "https://x.cn/?m=[MOBILE"
    )
    assert not masker.mask_document(document)  # idempotent: nothing left to change


def test_star_scans_every_string_and_redact_fields_replace_whole_values() -> None:
    document = {
        "user": {"name": "13812345678", "full_name": "张伟"},
        "json": {"rows": [{"contact": "a@b.cn"}], "list": ["x", "13912345678"]},
        "source": {"ip": "10.1.1.1"},
    }
    masker = Masker(TextMasker(KEY), fields=["*"], redact_fields=["user.full_name"])
    assert masker.mask_document(document)
    assert document["user"]["name"].startswith("[MOBILE:")
    assert re.fullmatch(r"\[REDACTED:[0-9a-f]{12}\]", document["user"]["full_name"])
    assert document["json"]["rows"][0]["contact"].startswith("[EMAIL:")
    assert document["json"]["list"][1].startswith("[MOBILE:")
    assert document["source"]["ip"] == "10.1.1.1"
    token = document["user"]["full_name"]
    masker.mask_document(document)
    assert document["user"]["full_name"] == token  # a redaction is not redacted again


def test_masked_events_get_a_keyed_id_and_clean_ones_keep_theirs() -> None:
    policy = MaskingPolicy(Masker(TextMasker(KEY)), {})
    stage = MaskingStage(policy)
    line = f"login by {make_id()}"
    event = _event({"message": line, "event": {"original": line}})
    unkeyed = document_id(Origin("test", 0), line)
    assert event.id == unkeyed
    stage(event)
    assert event.id != unkeyed and re.fullmatch(r"[0-9a-f]{32}", event.id)
    assert event.document["event"]["id"] == event.id
    again = _event({"message": line, "event": {"original": line}})
    assert stage(again).id == event.id  # deterministic: re-ingest still deduplicates
    clean = _event({"message": "nothing personal", "event": {"original": "nothing personal"}})
    before = clean.id
    assert stage(clean).id == before


# -- configuration


def _settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str) -> Settings:
    config = tmp_path / "lianfang.toml"
    config.write_text(toml, encoding="utf-8")
    monkeypatch.setenv("LIANFANG_CONFIG", str(config))
    monkeypatch.delenv("LIANFANG_MASKING_KEY", raising=False)
    return load_settings()


POLICY_TOML = """
masking_key = "a-test-key-that-is-long-enough"
[masking]
fields = ["labels.contact"]
redact_fields = ["user.full_name"]
[masking.departments.finance]
detectors = ["email"]
[masking.departments.energy]
enabled = false
"""


def test_toml_policy_with_department_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, monkeypatch, POLICY_TOML)
    policy = MaskingPolicy.from_settings(settings)
    default = policy.for_department("transport")
    finance = policy.for_department("finance")
    assert default is not None and finance is not None
    assert policy.for_department("energy") is None
    assert default.text.detectors == {"id_number", "mobile", "bank_card", "email"}
    assert finance.text.detectors == {"email"}
    assert "labels.contact" in finance.fields and finance.redact_fields == ("user.full_name",)

    stage = MaskingStage(policy)  # no fixed department: chosen per event
    finance_event = _event({"organization": {"id": "finance"}, "message": "13812345678 a@b.cn"})
    energy_event = _event({"organization": {"id": "energy"}, "message": "13812345678 a@b.cn"}, 1)
    other_event = _event({"message": "13812345678"}, 2)
    assert stage(finance_event).document["message"].startswith("13812345678 [EMAIL:")
    assert stage(energy_event).document["message"] == "13812345678 a@b.cn"
    assert stage(other_event).document["message"].startswith("[MOBILE:")


def test_policy_typos_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError):
        _settings(tmp_path, monkeypatch, '[masking]\ndetector = ["email"]\n')
    with pytest.raises(ValidationError):
        _settings(tmp_path, monkeypatch, '[masking]\ndetectors = ["passport"]\n')


def test_missing_or_short_key_refuses_to_mask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, monkeypatch, "")
    with pytest.raises(MaskingKeyMissing, match="LIANFANG_MASKING_KEY"):
        MaskingPolicy.from_settings(settings)
    with pytest.raises(MaskingKeyMissing, match="at least 16"):
        MaskingPolicy.from_settings(settings.model_copy(update={"masking_key": SecretStr("short")}))
    disabled = _settings(tmp_path, monkeypatch, "[masking]\nenabled = false\n")
    assert not MaskingPolicy.from_settings(disabled).any_enabled


def test_ephemeral_key_warns_once_and_is_shared_within_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(masking, "_ephemeral_key", None)
    settings = _settings(tmp_path, monkeypatch, "[masking]\nephemeral_key = true\n")
    with caplog.at_level(logging.WARNING, logger="collectors.masking"):
        first = MaskingPolicy.from_settings(settings)
        second = MaskingPolicy.from_settings(settings)
    assert sum("ephemeral" in record.message for record in caplog.records) == 1
    assert first.default is not None and second.default is not None
    assert first.default.text.mask("13812345678") == second.default.text.mask("13812345678")


def test_dead_letters_are_masked(tmp_path: Path) -> None:
    number = make_id()
    dead_letters = MaskingDeadLetterFile(tmp_path, Masker(TextMasker(KEY)))
    dead_letters.write(
        stage="parse",
        source="s",
        offset=0,
        reason=f"unreadable timestamp '{number}'",
        input=f"garbage {number} 13812345678 a@b.cn",
    )
    dead_letters.write(
        stage="index", source="s", offset=1, reason="x", input={"json": {"v": [number]}}
    )
    content = dead_letters.current_path.read_text(encoding="utf-8")
    assert number not in content and "13812345678" not in content and "a@b.cn" not in content
    assert content.count("[ID:") == 3
