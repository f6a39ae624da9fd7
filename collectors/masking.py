"""Personal-data masking at ingest (数据脱敏): identity numbers, mobiles, bank cards, e-mails.

Every match is replaced by a token carrying a keyed hash (HMAC-SHA256 under the setting
`masking_key`, first 12 hex digits), so the same value always gives the same token and
events stay correlatable, while nobody without the key can test a guess against it:

    resident identity number   110105199003071239   ->  [ID:3f9a1c2b8e4d]
    mainland mobile            +86 138 1234 5678     ->  [MOBILE:138*:5b0e9c41d2aa]
    bank card                  6222 0212 3456 7894   ->  [CARD:*7894:0c1d2e3f4a5b]
    e-mail address             zhang.wei@example.cn  ->  [EMAIL:9e8d7c6b5a41:example.cn]
    a `redact_fields` value    (anything)            ->  [REDACTED:77aa01bc93de]

What stays visible, and why it is safe: nothing of an identity number (its digits encode
the birth place, birth date and sex); a mobile's first three digits (the carrier's
number segment, shared by ~100 million numbers); a card's last four digits (what
receipts print and PCI DSS allows); an e-mail's domain (the provider or organisation,
which analysts need for leak detection; the person is in the local part). The hash is
over the normalised value (digits only, upper-case X, +86 dropped, lower-case e-mail),
so `138-1234-5678` and `+8613812345678` get the same token.

Detection rules:

- identity number: 18 characters, 17 digits then a digit or X, not inside a longer digit
  run, a known province code, a real birth date from 1900 to today, and a valid
  ISO 7064 MOD 11-2 check character. Random 18-digit numbers fail and stay.
- mobile: 1[3-9] plus 9 digits, alone (not inside a longer digit run), optionally
  prefixed +86/0086/86 (with or without a space or dash) or written 3-4-4 with spaces
  or dashes.
- bank card: 13-19 digits, contiguous or in groups of four separated by spaces or
  dashes, Luhn-valid, and starting 2-9 (0 is unused and 1 is only the airlines' UATP,
  while 13-digit epoch-millisecond timestamps start with 1 and are in every log).
- e-mail: an ASCII address, also with the @ URL-encoded as %40.
Digits may be any Unicode decimal digits (full-width １３８… as typed in Chinese forms).
Tokens contain no @ and no digit run a detector takes (at most 12 digits between
colons and brackets), so masking masked text changes nothing (idempotent) without any
"already masked" exception that a crafted pseudo-token could use to smuggle a value past.

Fields scanned: `message`, `event.original`, `db.statement`, `url.original`, `url.full`,
`url.query`, `url.path`, `http.request.referrer`, `user.email`, the matched values that
threat-intelligence enrichment copies (`threat.enrichments.matched.atomic`,
`threat.enrichments.indicator.name`, `threat.enrichments.indicator.url.full`), plus the
configured `fields` ("*" scans every string of the document). `redact_fields` are
replaced whole. A dotted path walks through lists of objects. When anything was
masked, the event id (an unkeyed hash of the raw line) is re-derived under the key too,
since it could otherwise confirm a guessed value offline.

Configuration (lianfang.toml; `LIANFANG_MASKING_KEY` for the key, never the file in
production)::

    masking_key = "..."               # at least 16 characters; rotate = new tokens
    [masking]
    enabled = true                    # default
    ephemeral_key = false             # true: run without masking_key on a random per-run
                                      # key (tokens then differ between runs), with a warning
    detectors = ["id_number", "mobile", "bank_card", "email"]   # default: all four
    fields = ["labels.contact"]       # scanned in addition to the built-in fields
    redact_fields = ["user.full_name"]  # replaced whole
    [masking.departments.finance]     # a department's override: each key replaces the
    detectors = ["id_number", "mobile", "email"]   # top-level value, others inherit
    redact_fields = ["user.full_name", "customer.name"]
    [masking.departments.energy]
    enabled = false

With masking enabled and no key, building the stage raises `MaskingKeyMissing`: data is
never stored unmasked because a key was forgotten.
"""

from __future__ import annotations

import hmac
import logging
import operator
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

from lianfang.dead_letter import DeadLetterFile
from lianfang.schema import Event
from lianfang.settings import ALL_MASKING_DETECTORS, Settings

log = logging.getLogger(__name__)

BUILT_IN_FIELDS = (
    "message",
    "event.original",
    "db.statement",
    "url.original",
    "url.full",
    "url.query",
    "url.path",
    "http.request.referrer",
    "user.email",
    "threat.enrichments.matched.atomic",
    "threat.enrichments.indicator.name",
    "threat.enrichments.indicator.url.full",
)
ALL_FIELDS = "*"
MIN_KEY_LENGTH = 16
HASH_HEX_DIGITS = 12
# Bounded memo of value -> token: logs repeat the same numbers and addresses a lot.
TOKEN_CACHE_SIZE = 65536

# GB 11643 province-level codes (also 71/81/82/83 for Taiwan, Hong Kong and Macao residents'
# permits and 91 for the foreigners' permanent residence card, which share the format).
PROVINCE_CODES = frozenset(
    str(code)
    for first, last in ((11, 15), (21, 23), (31, 37), (41, 46), (50, 54), (61, 65))
    for code in range(first, last + 1)
) | {"71", "81", "82", "83", "91"}
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK_CHARACTERS = "10X98765432"
# Luhn: the digit sum of twice each digit in the doubled positions.
_LUHN_DOUBLED = {str(digit): (2 * digit) % 9 if digit != 9 else 9 for digit in range(10)}
OLDEST_BIRTH_YEAR = 1900

_EMAIL = r"""(?P<email>(?<![A-Za-z0-9._%+-])(?P<local>[A-Za-z0-9._%+-]{1,64}?)(?:@|%40)
    (?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24})(?![A-Za-z0-9-]))"""
_MOBILE = r"""(?P<prefixed_mobile>(?<![\d+])(?:\+|00)?86[ -]?(?P<prefixed_number>1[3-9]\d{9})(?!\d))
    |(?P<grouped_mobile>(?<![\d+])(?:(?:\+|00)?86[ -]?)?(?P<grouped_number>1[3-9]\d(?P<mobile_sep>[ -])
        \d{4}(?P=mobile_sep)\d{4})(?!\d))"""
_CARD = r"""(?P<grouped_card>(?<!\d)[2-9]\d{3}(?P<card_sep>[ -])\d{4}(?:(?P=card_sep)\d{4}){1,2}
    (?:(?P=card_sep)\d{1,4})?(?!\d))"""
_ID_WITH_X = r"(?P<id_x>(?<!\d)\d{17}[Xx](?![A-Za-z0-9]))"
_RUN = r"(?P<run>(?<!\d)\d{11,19}(?!\d))"
# Cheap tests that reject most strings before the full pattern runs.
# Every detected number holds 9 digits in a row or two groups of four (a superset test;
# the ASCII form is three times faster and non-ASCII text is rare).
_DIGITS_PREFILTER_ASCII = re.compile(r"[0-9]{4}[0-9 -][0-9]{4}")
_DIGITS_PREFILTER_UNICODE = re.compile(r"\d{4}[\d -]\d{4}")
_EMAIL_LOCAL_CHARACTERS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-"
)
_EMAIL_DOMAIN_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_REDACTED_TOKEN = re.compile(rf"\[REDACTED:[0-9a-f]{{{HASH_HEX_DIGITS}}}\]")


class MaskingKeyMissing(ValueError):
    """Masking is enabled but no usable key is configured."""


def is_valid_id_number(text: str) -> bool:
    """A resident identity number with a known province, a real birth date and a valid check character."""
    if len(text) != 18 or not text[:17].isdecimal():
        return False
    text = _ascii_digits(text)
    if text[:2] not in PROVINCE_CODES:
        return False
    try:
        birth = date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
    except ValueError:
        return False
    if birth.year < OLDEST_BIRTH_YEAR or birth > date.today():
        return False
    return id_check_character(text[:17]) == text[17].upper()


def id_check_character(first_17: str) -> str:
    """The MOD 11-2 check character for the first 17 digits of an identity number."""
    if len(first_17) != 17:
        raise ValueError(f"need 17 digits, got {len(first_17)}")
    return ID_CHECK_CHARACTERS[sum(map(operator.mul, map(int, first_17), ID_WEIGHTS)) % 11]


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a digit string is valid."""
    total = sum(map(int, digits[-1::-2])) + sum(_LUHN_DOUBLED[c] for c in digits[-2::-2])
    return total % 10 == 0


def _ascii_digits(text: str) -> str:
    if text.isascii():
        return text
    return "".join(
        str(unicodedata.decimal(character)) if character.isdecimal() else character
        for character in text
    )


class TextMasker:
    """Finds personal data in text and replaces it with keyed tokens."""

    def __init__(self, key: bytes, detectors: Iterable[str] = ALL_MASKING_DETECTORS) -> None:
        self.detectors = frozenset(detectors)
        unknown = self.detectors - set(ALL_MASKING_DETECTORS)
        if unknown:
            raise ValueError(f"unknown masking detector(s): {', '.join(sorted(unknown))}")
        self._key = key
        self._tokens: dict[tuple[str, str], str] = {}
        digit_parts = []
        if "mobile" in self.detectors:
            digit_parts.append(_MOBILE)
        if "bank_card" in self.detectors:
            digit_parts.append(_CARD)
        if "id_number" in self.detectors:
            digit_parts.append(_ID_WITH_X)
        if digit_parts:
            digit_parts.append(_RUN)
        self._email_pattern = re.compile(_EMAIL, re.VERBOSE) if "email" in self.detectors else None
        self._digit_pattern = (
            re.compile("(?=[\\d+])(?:" + "|".join(digit_parts) + ")", re.VERBOSE)
            if digit_parts
            else None
        )

    def mask(self, text: str) -> str:
        """`text` with every detected value replaced by its token."""
        # E-mails first: a mobile used as a mailbox name goes with its address.
        if self._email_pattern is not None and _may_hold_email(text):
            text = self._email_pattern.sub(self._replace, text)
        if self._digit_pattern is not None and _may_hold_number(text):
            text = self._digit_pattern.sub(self._replace, text)
        return text

    def token(self, kind: str, value: str) -> str:
        """The token of one normalised value of a kind (ID, MOBILE, CARD, EMAIL, REDACTED)."""
        cache_key = (kind, value)
        token = self._tokens.get(cache_key)
        if token is None:
            digest = hmac.digest(
                self._key, f"{kind}\x00{value}".encode("utf-8", "surrogatepass"), "sha256"
            )
            hashed = digest.hex()[:HASH_HEX_DIGITS]
            if kind == "MOBILE":
                token = f"[MOBILE:{value[:3]}*:{hashed}]"
            elif kind == "CARD":
                token = f"[CARD:*{value[-4:]}:{hashed}]"
            elif kind == "EMAIL":
                token = f"[EMAIL:{hashed}:{value.rpartition('@')[2]}]"
            else:
                token = f"[{kind}:{hashed}]"
            if len(self._tokens) >= TOKEN_CACHE_SIZE:
                self._tokens.clear()
            self._tokens[cache_key] = token
        return token

    def keyed_id(self, event_id: str) -> str:
        """An event id re-derived under the key (32 hex digits, like the unkeyed ones)."""
        return hmac.digest(self._key, f"EVENT\x00{event_id}".encode(), "sha256").hex()[:32]

    def redact(self, value: Any) -> str:
        """A whole field value replaced by its token (a token stays as it is)."""
        text = value if isinstance(value, str) else str(value)
        if _REDACTED_TOKEN.fullmatch(text):
            return text
        return self.token("REDACTED", text)

    def _replace(self, match: re.Match[str]) -> str:
        kind = match.lastgroup
        text = match.group(0)
        if kind == "email":
            address = f"{match.group('local')}@{match.group('domain')}".lower()
            return self.token("EMAIL", address)
        if kind == "prefixed_mobile":
            return self.token("MOBILE", _ascii_digits(match.group("prefixed_number")))
        if kind == "grouped_mobile":
            return self.token("MOBILE", _ascii_digits(_only_digits(match.group("grouped_number"))))
        if kind == "grouped_card":
            digits = _ascii_digits(_only_digits(text))
            if 13 <= len(digits) <= 19 and luhn_valid(digits):
                return self.token("CARD", digits)
            return text
        if kind == "id_x":
            return (
                self.token("ID", _ascii_digits(text).upper()) if is_valid_id_number(text) else text
            )
        return self._classify_run(text)

    def _classify_run(self, text: str) -> str:
        digits = _ascii_digits(text)
        length = len(digits)
        if length == 18 and "id_number" in self.detectors and is_valid_id_number(digits):
            return self.token("ID", digits)
        if (
            length == 11
            and "mobile" in self.detectors
            and digits[0] == "1"
            and digits[1] in "3456789"
        ):
            return self.token("MOBILE", digits)
        if (
            13 <= length <= 19
            and "bank_card" in self.detectors
            and digits[0] in "23456789"
            and luhn_valid(digits)
        ):
            return self.token("CARD", digits)
        return text


def _may_hold_email(text: str) -> bool:
    """An @ between a local-part and a domain character, or a URL-encoded @ (cheap)."""
    at = text.find("@", 1)  # an @ at the start has no local part
    while at != -1:
        if (
            at + 1 < len(text)
            and text[at - 1] in _EMAIL_LOCAL_CHARACTERS
            and text[at + 1] in _EMAIL_DOMAIN_START
        ):
            return True
        at = text.find("@", at + 1)
    return "%40" in text


def _may_hold_number(text: str) -> bool:
    if text.isascii():
        return _DIGITS_PREFILTER_ASCII.search(text) is not None
    return _DIGITS_PREFILTER_UNICODE.search(text) is not None


def _only_digits(text: str) -> str:
    return "".join(character for character in text if character.isdecimal())


class Masker:
    """One masking policy: which detectors, which fields are scanned, which are redacted."""

    def __init__(
        self,
        text_masker: TextMasker,
        *,
        fields: Iterable[str] = (),
        redact_fields: Iterable[str] = (),
    ) -> None:
        self.text = text_masker
        extra = list(fields)
        self.scan_everything = ALL_FIELDS in extra
        self.fields = tuple(
            dict.fromkeys([*BUILT_IN_FIELDS, *(f for f in extra if f != ALL_FIELDS)])
        )
        self.redact_fields = tuple(dict.fromkeys(redact_fields))
        self._paths = [(name, name.split(".")) for name in self.fields]
        self._redact_paths = [(name, name.split(".")) for name in self.redact_fields]

    def mask_document(self, document: dict[str, Any]) -> bool:
        """Mask the document in place; True when anything was replaced."""
        changed = False
        for dotted, parts in self._redact_paths:
            changed |= _transform(document, dotted, parts, self._redact_value)
        if self.scan_everything:
            changed |= self._mask_all(document)
        else:
            for dotted, parts in self._paths:
                changed |= _transform(document, dotted, parts, self._mask_value)
        return changed

    def mask_value(self, value: Any) -> Any:
        """Any JSON-like value with every string in it masked (a copy when it changes)."""
        if isinstance(value, str):
            return self.text.mask(value)
        if isinstance(value, dict):
            return {key: self.mask_value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_value(item) for item in value]
        return value

    def _mask_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text.mask(value)
        if isinstance(value, int) and not isinstance(value, bool):
            # A number in a scanned field (a phone sent as a JSON number) is masked too.
            text = str(value)
            masked = self.text.mask(text)
            return value if masked == text else masked
        return value

    def _redact_value(self, value: Any) -> Any:
        if value is None or isinstance(value, dict):
            return value
        return self.text.redact(value)

    def _mask_all(self, value: dict[str, Any]) -> bool:
        changed = False
        for key, item in value.items():
            if isinstance(item, dict):
                changed |= self._mask_all(item)
            elif isinstance(item, list):
                for index, element in enumerate(item):
                    if isinstance(element, dict):
                        changed |= self._mask_all(element)
                    else:
                        masked = self._mask_value(element)
                        if masked is not element:
                            item[index] = masked
                            changed = True
            else:
                masked = self._mask_value(item)
                if masked is not item and masked != item:
                    value[key] = masked
                    changed = True
        return changed


def _transform(
    document: dict[str, Any], dotted: str, parts: list[str], change: Callable[[Any], Any]
) -> bool:
    """Apply `change` to the value(s) at a dotted path, through lists; True if any changed."""
    if dotted in document and len(parts) > 1:  # a literal dotted key, as some sources send
        return _change_slot(document, dotted, change)
    return _walk(document, parts, change)


def _walk(container: Any, parts: list[str], change: Callable[[Any], Any]) -> bool:
    if isinstance(container, list):
        return any([_walk(item, parts, change) for item in container])
    if not isinstance(container, dict):
        return False
    head = parts[0]
    if head not in container:
        return False
    if len(parts) == 1:
        return _change_slot(container, head, change)
    return _walk(container[head], parts[1:], change)


def _change_slot(container: dict[str, Any], key: str, change: Callable[[Any], Any]) -> bool:
    value = container[key]
    if isinstance(value, list):
        changed = False
        for index, element in enumerate(value):
            if isinstance(element, dict | list):
                continue
            new = change(element)
            if new is not element and new != element:
                value[index] = new
                changed = True
        return changed
    new = change(value)
    if new is value or new == value:
        return False
    container[key] = new
    return True


class MaskingPolicy:
    """The maskers of every department, from the `[masking]` settings and the key."""

    def __init__(
        self,
        default: Masker | None,
        departments: Mapping[str, Masker | None],
        dead_letter_masker: Masker | None = None,
    ) -> None:
        self.default = default
        self.departments = dict(departments)
        # Dead letters hold raw, unparsed input: they are masked with every detector.
        self.dead_letter_masker = dead_letter_masker

    def for_department(self, department_id: str | None) -> Masker | None:
        """The department's masker (None: masking is off for it)."""
        if department_id is not None and department_id in self.departments:
            return self.departments[department_id]
        return self.default

    @property
    def any_enabled(self) -> bool:
        """Whether some department (or the default) masks at all."""
        return self.default is not None or any(m is not None for m in self.departments.values())

    @classmethod
    def from_settings(cls, settings: Settings) -> MaskingPolicy:
        """Build every department's masker; raises MaskingKeyMissing for a missing or weak key."""
        config = settings.masking
        overrides = config.departments
        enabled_anywhere = config.enabled or any(o.enabled for o in overrides.values())
        if not enabled_anywhere:
            return cls(None, {})
        key = masking_key(settings)
        text_maskers: dict[frozenset[str], TextMasker] = {}

        def build(
            enabled: bool, detectors: Iterable[str], fields: Iterable[str], redact: Iterable[str]
        ) -> Masker | None:
            if not enabled:
                return None
            chosen = frozenset(detectors)
            if chosen not in text_maskers:
                text_maskers[chosen] = TextMasker(key, chosen)
            return Masker(text_maskers[chosen], fields=fields, redact_fields=redact)

        default = build(config.enabled, config.detectors, config.fields, config.redact_fields)
        departments = {
            department: build(
                config.enabled if override.enabled is None else override.enabled,
                config.detectors if override.detectors is None else override.detectors,
                config.fields if override.fields is None else override.fields,
                config.redact_fields if override.redact_fields is None else override.redact_fields,
            )
            for department, override in overrides.items()
        }
        return cls(default, departments, Masker(TextMasker(key, ALL_MASKING_DETECTORS)))


# One random key per process, so that every file of one run gets consistent tokens.
_ephemeral_key: bytes | None = None


def masking_key(settings: Settings) -> bytes:
    """The HMAC key: `masking_key`, or a random per-process one when `ephemeral_key` allows it."""
    key = settings.masking_key.get_secret_value()
    if key:
        if len(key) < MIN_KEY_LENGTH:
            raise MaskingKeyMissing(
                f"masking_key is {len(key)} characters; use at least {MIN_KEY_LENGTH} "
                "(a short key lets anyone confirm guessed identity numbers from tokens)"
            )
        return key.encode("utf-8")
    if settings.masking.ephemeral_key:
        global _ephemeral_key
        if _ephemeral_key is None:
            log.warning(
                "masking with an ephemeral random key: tokens will differ from every other "
                "run and cannot be correlated across runs; set LIANFANG_MASKING_KEY for production"
            )
            _ephemeral_key = secrets.token_bytes(32)
        return _ephemeral_key
    raise MaskingKeyMissing(
        "masking is enabled but no masking_key is set: set LIANFANG_MASKING_KEY (at least "
        f"{MIN_KEY_LENGTH} characters), or set [masking] ephemeral_key = true for a trial, "
        "or [masking] enabled = false to store personal data unmasked"
    )


class MaskingStage:
    """Enrichment stage: masks the event with its department's policy."""

    def __init__(self, policy: MaskingPolicy, department_id: str | None = None) -> None:
        self.policy = policy
        self.fixed_department = department_id
        self._fixed = policy.for_department(department_id) if department_id is not None else None

    def __call__(self, event: Event) -> Event:
        """Mask in place; a masked event also gets a keyed id."""
        masker = self._fixed if self.fixed_department is not None else self._masker_for(event)
        if masker is None:
            return event
        if masker.mask_document(event.document):
            event.id = masker.text.keyed_id(event.id)
            event.document.setdefault("event", {})["id"] = event.id
        return event

    def _masker_for(self, event: Event) -> Masker | None:
        organization = event.document.get("organization")
        department = organization.get("id") if isinstance(organization, dict) else None
        return self.policy.for_department(department if isinstance(department, str) else None)


class MaskingDeadLetterFile(DeadLetterFile):
    """A dead-letter file that masks the reason and the input before writing them."""

    def __init__(self, directory: Path, masker: Masker) -> None:
        super().__init__(directory)
        self.masker = masker

    def write(self, *, stage: str, source: str, offset: int, reason: str, input: Any) -> None:
        """Record one rejected input, masked with every detector."""
        super().write(
            stage=stage,
            source=source,
            offset=offset,
            reason=self.masker.text.mask(reason),
            input=self.masker.mask_value(input),
        )
