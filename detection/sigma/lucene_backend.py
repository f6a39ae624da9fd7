"""pySigma's Elasticsearch Lucene backend, matching strings case-insensitively as Sigma requires.

Sigma compares strings case-insensitively unless a rule says `|cased`. Elastic gets that
from lower-cased `.caseless` sub-fields and the `wildcard` field type (an X-Pack plugin);
the core distribution has neither, and `query_string` has no case-insensitive switch. So
every string value with a cased letter is written as a Lucene regular expression whose
letters are character classes (`\\whoami.exe` -> `/.*\\\\[wW][hH][oO][aA][mM][iI]\\.[eE][xX][eE]/`).
Elasticsearch builds the same automaton for a `wildcard` query with `case_insensitive`, so
this costs no more than the wildcard query it replaces. Values without letters (event ids,
ports) stay plain terms.

Sigma's `re` modifier means Python `re.search`; Lucene regular expressions match the whole
value and differ in syntax, so `translate_regex` rewrites them: unanchored ends get `.*`,
`(?:` becomes `(`, `(?i)` and the `i` flag become character classes, `\\n`/`\\t`/`\\xHH`
become the characters, and Lucene's extra operators (`# @ & < > ~ "`) are escaped.
Lookarounds, back-references, word boundaries and anchors inside groups have no Lucene
equivalent: such a rule is reported as unsupported with that reason, never run wrongly.

Values without a field (keyword lists) are searched in `message` (its `.keyword`), the
only field holding the whole log line.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sigma.backends.elasticsearch import LuceneBackend
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.conversion.state import ConversionState
from sigma.exceptions import SigmaFeatureNotSupportedByBackendError
from sigma.types import (
    Placeholder,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SpecialChars,
)

from detection.sigma.pipelines import LOWER_CASE_FIELDS

KEYWORD_FIELD = "message.keyword"
# Elasticsearch's default `index.max_regex_length`: longer regexes are refused per query.
MAX_REGEX_LENGTH = 1000
# Characters Lucene's RegExp treats as operators (with all syntax flags on, as query_string
# parses them) and the query_string delimiter; a backslash makes any of them literal.
LUCENE_REGEX_SPECIAL = frozenset('.?+*|{}[]()"\\#@&<>~/^$')
CLASS_SHORTHANDS = frozenset("dDsSwW")
UNSUPPORTED_ESCAPES = {
    "b": "word boundary \\b",
    "B": "non-boundary \\B",
    "A": "anchor \\A",
    "Z": "anchor \\Z",
    "z": "anchor \\z",
    "G": "anchor \\G",
}
CONTROL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a", "e": "\x1b"}


class UnsupportedRegex(SigmaFeatureNotSupportedByBackendError):
    """A Sigma regular expression that Lucene's regular expressions cannot express."""

    def __init__(self, pattern: str, construct: str) -> None:
        super().__init__(f"regular expression {pattern!r}: {construct} has no Lucene equivalent")
        self.pattern = pattern
        self.construct = construct


def literal_char(char: str, ignore_case: bool) -> str:
    """One literal character as a Lucene regex atom."""
    if char == "\\":
        # `\\` right before the closing `/` reads as an escaped delimiter to the query_string
        # parser (`\\/`), so a backslash is always written as the class `[\\]`.
        return "[\\\\]"
    if ignore_case:
        lower, upper = char.lower(), char.upper()
        if lower != upper and len(lower) == 1 and len(upper) == 1:
            return f"[{lower}{upper}]"
    if char in LUCENE_REGEX_SPECIAL or (
        char.isascii() and not char.isalnum() and char.isprintable()
    ):
        return "\\" + char
    return char


def has_cased_letter(text: str) -> bool:
    """Whether lower- and upper-casing change the text."""
    return text.lower() != text.upper()


def sigma_string_regex(value: SigmaString, ignore_case: bool = True) -> str:
    """A Sigma string (with * and ? wildcards) as a Lucene regex matching the whole value."""
    parts: list[str] = []
    for item in value.s:
        if isinstance(item, str):
            parts.append("".join(literal_char(char, ignore_case) for char in item))
        elif item is SpecialChars.WILDCARD_MULTI:
            parts.append(".*")
        elif item is SpecialChars.WILDCARD_SINGLE:
            parts.append(".")
        elif isinstance(item, Placeholder):
            raise SigmaFeatureNotSupportedByBackendError(
                f"placeholder %{item.name}% is not resolved (the `expand` modifier needs a value list)"
            )
    return "".join(parts)


def translate_regex(pattern: str, ignore_case: bool = False) -> str:
    """A Python `re.search` pattern as an equivalent whole-value Lucene regular expression."""
    if pattern.startswith("(?i)"):
        ignore_case, pattern = True, pattern[4:]
    translated = [
        _translate_alternative(pattern, _unwrap_group(alternative), ignore_case)
        for alternative in _split_alternatives(pattern)
    ]
    if len(translated) == 1:
        return translated[0]
    return "|".join(f"({item})" for item in translated)


def _split_alternatives(pattern: str) -> list[str]:
    """The top-level `|` branches of a pattern (escapes, classes and groups respected)."""
    branches, depth, start, index, in_class = [], 0, 0, 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[index + 1 : index + 2] == "]" or pattern[index + 1 : index + 3] == "^]":
                index += 2 if pattern[index + 1] == "]" else 3  # a leading ] is a member
                continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            branches.append(pattern[start:index])
            start = index + 1
        index += 1
    branches.append(pattern[start:])
    return branches


def _unwrap_group(branch: str) -> str:
    """`(^abc$)` -> `^abc$` when one plain group spans the whole branch without alternatives."""
    if not (branch.startswith("(") and branch.endswith(")")) or branch.startswith("(?"):
        return branch
    inner = branch[1:-1]
    if len(_split_alternatives(inner)) != 1 or not _balanced(inner):
        return branch
    return inner


def _balanced(text: str) -> bool:
    depth, index = 0, 0
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth < 0:
            return False
        index += 1
    return depth == 0


def _translate_alternative(pattern: str, branch: str, ignore_case: bool) -> str:
    """One top-level branch, padded with `.*` where Python's search is not anchored."""
    parts: list[str] = []
    anchored_start = anchored_end = False
    depth = 0
    index = 0
    length = len(branch)
    while index < length:
        char = branch[index]
        if char == "\\":
            atom, index = _escape(branch, index, ignore_case, in_class=False)
            parts.append(atom)
            continue
        if char == "[":
            atom, index = _char_class(branch, index, ignore_case)
            parts.append(atom)
            continue
        if char == "(":
            if branch.startswith("(?:", index):
                index += 3
            elif branch.startswith("(?P<", index) or (
                branch.startswith("(?<", index) and branch[index + 3 : index + 4] not in "=!"
            ):
                close = branch.find(">", index)
                if close < 0:
                    raise UnsupportedRegex(pattern, "an unterminated group name")
                index = close + 1
            elif branch.startswith("(?", index):
                raise UnsupportedRegex(pattern, f"the group {branch[index : index + 4]!r}")
            else:
                index += 1
            depth += 1
            parts.append("(")
            continue
        if char == ")":
            depth -= 1
            parts.append(")")
            index += 1
            continue
        if char == "^":
            if depth or parts:
                raise UnsupportedRegex(pattern, "an anchor ^ inside the expression")
            anchored_start = True
            index += 1
            continue
        if char == "$":
            if depth or index + 1 != length:
                raise UnsupportedRegex(pattern, "an anchor $ inside the expression")
            anchored_end = True
            index += 1
            continue
        if char in "*+?" or (char == "{" and _is_interval(branch, index)):
            end = branch.find("}", index) + 1 if char == "{" else index + 1
            parts.append(branch[index:end])
            index = end
            if index < length and branch[index] in "?+":  # lazy or possessive: same matches
                index += 1
            continue
        if char in ".|":  # a | left here separates branches of a group
            parts.append(char)
            index += 1
            continue
        parts.append(literal_char(char, ignore_case))
        index += 1
    body = "".join(parts)
    return ("" if anchored_start else ".*") + body + ("" if anchored_end else ".*")


def _is_interval(pattern: str, index: int) -> bool:
    close = pattern.find("}", index)
    if close < 0:
        return False
    inner = pattern[index + 1 : close]
    low, _, high = inner.partition(",")
    return low.isdigit() and (high == "" or high.isdigit())


def _escape(pattern: str, index: int, ignore_case: bool, in_class: bool) -> tuple[str, int]:
    """The escape sequence at pattern[index] (a backslash) as Lucene text, and the next index."""
    if index + 1 >= len(pattern):
        raise UnsupportedRegex(pattern, "a trailing backslash")
    char = pattern[index + 1]
    if char in CLASS_SHORTHANDS:
        return "\\" + char, index + 2
    if char in UNSUPPORTED_ESCAPES and not in_class:
        raise UnsupportedRegex(pattern, UNSUPPORTED_ESCAPES[char])
    if char.isdigit():
        raise UnsupportedRegex(pattern, f"the back-reference or octal escape \\{char}")
    if char in CONTROL_ESCAPES:
        return CONTROL_ESCAPES[char], index + 2
    if char in "xu":
        width = 2 if char == "x" else 4
        digits = pattern[index + 2 : index + 2 + width]
        try:
            decoded = chr(int(digits, 16))
        except ValueError:
            raise UnsupportedRegex(pattern, f"the escape \\{char}{digits}") from None
        text = "\\" + decoded if in_class else literal_char(decoded, ignore_case)
        return text, index + 2 + width
    if char.isalpha():
        raise UnsupportedRegex(pattern, f"the escape \\{char}")
    if in_class:
        return "\\" + char, index + 2
    return literal_char(char, False), index + 2


def _char_class(pattern: str, index: int, ignore_case: bool) -> tuple[str, int]:
    """The character class starting at pattern[index] ('['), and the next index."""
    out = ["["]
    position = index + 1
    if position < len(pattern) and pattern[position] == "^":
        out.append("^")
        position += 1
    first = True
    members: list[str] = []
    while position < len(pattern):
        char = pattern[position]
        if char == "]" and not first:
            break
        first = False
        if char == "\\":
            atom, position = _escape(pattern, position, False, in_class=True)
            members.append(atom)
            continue
        if char == "[" and pattern.startswith("[:", position):
            raise UnsupportedRegex(pattern, "a POSIX character class")
        is_range = (
            position + 2 < len(pattern)
            and pattern[position + 1] == "-"
            and pattern[position + 2] != "]"
        )
        if is_range:
            low, high = char, pattern[position + 2]
            members.append(f"{_class_char(low)}-{_class_char(high)}")
            if (
                ignore_case
                and low.isalpha()
                and high.isalpha()
                and low.isascii()
                and high.isascii()
            ):
                swapped = f"{low.swapcase()}-{high.swapcase()}"
                if low.swapcase() <= high.swapcase():
                    members.append(swapped)
            position += 3
            continue
        members.append(_class_char(char))
        if ignore_case and has_cased_letter(char) and len(char.swapcase()) == 1:
            members.append(_class_char(char.swapcase()))
        position += 1
    else:
        raise UnsupportedRegex(pattern, "an unterminated character class")
    out.extend(members)
    out.append("]")
    return "".join(out), position + 1


def _class_char(char: str) -> str:
    if char in ']\\^-[/"':
        return "\\" + char
    return char


def java_length(text: str) -> int:
    """The length Elasticsearch (Java) sees: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def checked_length(regex: str, original: str) -> str:
    """The regex, or an unsupported-feature error when Elasticsearch would refuse its length."""
    # Elasticsearch measures Java string length: UTF-16 code units (an emoji counts twice).
    if java_length(regex) > MAX_REGEX_LENGTH - 8:  # room for an alternation's parentheses
        raise SigmaFeatureNotSupportedByBackendError(
            f"value {original[:60]!r}... gives a {java_length(regex)}-character case-insensitive regex, "
            f"over Elasticsearch's index.max_regex_length ({MAX_REGEX_LENGTH})"
        )
    return regex


def alternation_query(values: list[SigmaString]) -> str:
    """Values OR-ed as few case-insensitive regexes: `/.*((a)|(b)).*/`, split by length.

    A `.*` that every value starts (or ends) with is written once outside the alternation:
    `.*((a)|(b)).*` determinizes like one Aho-Corasick automaton, while `(.*a.*)|(.*b.*)`
    makes Elasticsearch spend seconds on the same language for long `contains` lists. A
    value with a wildcard inside (`'net*|*find'`) gets a regex of its own: alternatives of
    several `.*` each multiply the states of a combined automaton.
    """
    prefix = all(value.startswith(SpecialChars.WILDCARD_MULTI) for value in values)
    suffix = all(value.endswith(SpecialChars.WILDCARD_MULTI) for value in values)
    trimmed = []
    for value in values:
        if prefix:
            value = value[1:]
        if suffix and len(value):
            value = value[:-1]
        trimmed.append(value)
    head, tail = (".*" if prefix else ""), (".*" if suffix else "")
    room = MAX_REGEX_LENGTH - len(head) - len(tail) - 2
    simple: list[str] = []
    chunks: list[str] = []
    singles: list[str] = []  # one-character values (emoji lists) share a character class
    for value, original in zip(trimmed, values, strict=True):
        plain = value.s[0] if len(value.s) == 1 and isinstance(value.s[0], str) else None
        if plain is not None and len(plain) == 1 and not has_cased_letter(plain):
            singles.append(plain)
            continue
        regex = checked_length(sigma_string_regex(value), original.original)
        if SpecialChars.WILDCARD_MULTI in value.s:
            chunks.append(f"/{head}{regex}{tail}/")
        else:
            simple.append(regex)
    if len(singles) == 1:
        simple.append(literal_char(singles[0], False))
    elif singles:
        members: list[str] = []
        for char in dict.fromkeys(singles):  # classes within the length limit
            if members and java_length("".join(members) + char) > room - 10:
                simple.append("[" + "".join(members) + "]")
                members = []
            members.append(_class_char(char))
        simple.append("[" + "".join(members) + "]")
    if simple:
        chunks[:0] = [f"/{head}({chunk}){tail}/" for chunk in alternation_chunks(simple, room)]
    return chunks[0] if len(chunks) == 1 else "(" + " OR ".join(chunks) + ")"


def alternation_chunks(regexes: list[str], limit: int = MAX_REGEX_LENGTH) -> list[str]:
    """`(a)|(b)|...` alternations, each within `limit` characters, to be OR-ed."""
    chunks: list[str] = []
    current = ""
    for regex in regexes:
        piece = f"({regex})"
        candidate = f"{current}|{piece}" if current else piece
        if current and java_length(candidate) > limit:
            chunks.append(current)
            candidate = piece
        current = candidate
    if current:
        chunks.append(current)
    return chunks


class CaseInsensitiveLuceneBackend(LuceneBackend):
    """The Elasticsearch Lucene backend with Sigma's case-insensitive string semantics."""

    name: ClassVar[str] = "Elasticsearch Lucene, case-insensitive (Lianfang)"
    # Fields whose stored values are lower case (hashes): lower-cased plain terms suffice.
    lower_case_fields: ClassVar[frozenset[str]] = LOWER_CASE_FIELDS

    def _lower_case_terms(self, field_name: str, values: list[SigmaString]) -> str:
        terms = [
            LuceneBackend.convert_value_str(
                self, SigmaString(str(value).lower()), ConversionState()
            )
            for value in values
        ]
        joined = terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"
        return f"{self.escape_and_quote_field(field_name)}{self.eq_token}{joined}"

    def convert_condition_field_eq_val_str(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> Any:
        """A string comparison; on a lower-case field, a plain lower-case term."""
        if cond.field in self.lower_case_fields and isinstance(cond.value, SigmaString):
            return self._lower_case_terms(cond.field, [cond.value])
        return super().convert_condition_field_eq_val_str(cond, state)

    def convert_value_str(self, s: SigmaString, state: ConversionState) -> str:
        """Plain values stay terms; values with letters become case-insensitive regexes."""
        placeholders = [item.name for item in s.s if isinstance(item, Placeholder)]
        if placeholders:
            raise SigmaFeatureNotSupportedByBackendError(
                f"unresolved placeholder %{placeholders[0]}% (the `expand` modifier needs a "
                "value list for it)"
            )
        if not has_cased_letter(str(s)):
            return super().convert_value_str(s, state)
        return "/" + checked_length(sigma_string_regex(s), s.original) + "/"

    def convert_condition_as_in_expression(
        self, cond: ConditionOR | ConditionAND, state: ConversionState
    ) -> Any:
        """`field:(a OR b OR ...)`; with letters or wildcards, one alternation regex.

        One automaton instead of one per value: SigmaHQ's emoji rules list hundreds of
        `contains` values without letters, which as separate wildcard queries cost seconds.
        """
        values = [
            arg.value for arg in cond.args if isinstance(arg, ConditionFieldEqualsValueExpression)
        ]
        strings = [value for value in values if isinstance(value, SigmaString)]
        first_field = getattr(cond.args[0], "field", None)
        if (
            isinstance(cond, ConditionOR)
            and len(strings) == len(cond.args)
            and first_field in self.lower_case_fields
        ):
            return self._lower_case_terms(str(first_field), strings)
        if (
            isinstance(cond, ConditionOR)
            and len(values) == len(cond.args)
            and all(isinstance(value, SigmaString) for value in values)
            and any(has_cased_letter(str(value)) or value.contains_special() for value in values)
        ):
            first = cond.args[0]
            assert isinstance(first, ConditionFieldEqualsValueExpression)
            strings = [value for value in values if isinstance(value, SigmaString)]
            field_name = self.escape_and_quote_field(first.field)
            return f"{field_name}{self.eq_token}{alternation_query(strings)}"
        return super().convert_condition_as_in_expression(cond, state)

    def convert_condition_field_eq_val_str_case_sensitive(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> Any:
        """`|cased`: the stock case-sensitive wildcard term."""
        value = cond.value
        assert isinstance(value, SigmaString)
        return (
            self.escape_and_quote_field(cond.field)
            + self.eq_token
            + LuceneBackend.convert_value_str(self, value, state)
        )

    def convert_condition_field_eq_val_re(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> Any:
        """`|re`: Python search semantics translated into a whole-value Lucene regex."""
        value = cond.value
        assert isinstance(value, SigmaRegularExpression)
        ignore_case = SigmaRegularExpressionFlag.IGNORECASE in value.flags
        regex = checked_length(translate_regex(str(value.regexp), ignore_case), str(value.regexp))
        return f"{self.escape_and_quote_field(cond.field)}{self.eq_token}/{regex}/"

    def convert_condition_val_str(
        self, cond: ConditionValueExpression, state: ConversionState
    ) -> Any:
        """A keyword (value without field): anywhere in the log line."""
        value = cond.value
        assert isinstance(value, SigmaString)
        regex = checked_length(f".*{sigma_string_regex(value)}.*", value.original)
        return f"{KEYWORD_FIELD}:/{regex}/"

    def convert_condition_val_re(
        self, cond: ConditionValueExpression, state: ConversionState
    ) -> Any:
        """A keyword regular expression: searched in the log line."""
        value = cond.value
        assert isinstance(value, SigmaRegularExpression)
        ignore_case = SigmaRegularExpressionFlag.IGNORECASE in value.flags
        regex = checked_length(translate_regex(str(value.regexp), ignore_case), str(value.regexp))
        return f"{KEYWORD_FIELD}:/{regex}/"
