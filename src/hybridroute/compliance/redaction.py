"""PII detection and redaction for text that leaves the gateway (logs, traces, stored prompts).

Owns the catalogue of what counts as personal or secret data (`PiiKind`), where it was found in
a text (`Finding`), and the `Redactor` that replaces each finding with `[REDACTED:<KIND>]` and
keeps a tally of what it redacted.

Detection is rule based, stdlib only, and tuned for precision: ordinary numbers, dates, times,
versions, prices, UUIDs, HTTP paths and the gateway's own identifiers (route ids such as
`direct_bedrock`, decision ids such as `dec-1a2b3c4d-0000000f`) are left alone. The rules:

- EMAIL: `local@domain.tld`, the TLD at least two letters.
- PHONE: `+` and 7–15 digits with single spaces, dashes, dots or a parenthesised group (written
  without any separator it needs at least 10 digits); a national number with a leading 0 and
  9–12 digits in at least two groups (`030 1234567`, `0171-1234567`, `(030) 1234567`); a US
  number `(555) 123-4567`, `555-123-4567` or `555.123.4567`. A number that starts with a date
  (`05.12.2026 …`) or `000`, or has the shape of an SSN, is not a phone number.
- IBAN: country letters, check digits and 11–30 alphanumerics, compact or in groups of four;
  only numbers that pass the ISO 13616 mod-97 check.
- CARD: 13–19 digits, optionally split by single spaces or dashes, from a card network's range
  (2221–2720, 30, 34–39, 4, 5, 6) and passing the Luhn check.
- IP_ADDRESS: IPv4 dotted quads (not part of a longer dotted number) and IPv6 addresses
  (validated by `ipaddress`; at least two colons; a compressed address with at most two short
  groups, such as `::1` or the slice `1::2`, is not taken).
- NATIONAL_ID: US SSNs `ddd-dd-dddd` (not area 000, 666 or 9xx, group 00 or serial 0000), UK
  National Insurance numbers, and the token (6–20 letters, digits or dashes, with at least one
  digit) that follows `passport`, `national id`, `id number`, `personalausweis`, `ssn` or
  `tax id`, optionally with `no.`/`nr.`/`number` and a few separator characters in between.
- SECRET: AWS access key ids; 40-character AWS secret keys near the word `secret`; the token of
  `Bearer <token>`; `sk-…`, GitHub, Slack and JWT tokens; and the value of a `password=…`,
  `"api_key": "…"`, `token: …` style assignment to a key ending in a password, secret, token
  or key word (a token or key value needs 8 characters; placeholders such as `null`, `***` or
  `$VAR` are not secrets, and a bare word after `:` is prose rather than a value).

Every finding contains at least one character that is not a letter or a space, so text made of
letters and spaces is never changed; no finding contains `[` or `]`, so a redaction marker is
never itself redacted. `Redactor.redact` rescans its output until it is clean (a marker in
place of one finding can expose a neighbour that the finding's characters hid, as in
`+1 555 123 4567+44 20 7946 0958`), so `findings(redact(x))` is always empty and redacting
twice equals redacting once.

Each rule has a cheap pre-check (an `@`, a digit, a keyword …) so the common text without PII
costs a handful of substring tests and few regex passes. All patterns are compiled at import.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Finding", "PiiKind", "Redactor"]


class PiiKind(StrEnum):
    """The kinds of personal or secret data the redactor recognises."""

    EMAIL = "email"
    PHONE = "phone"
    IBAN = "iban"
    CARD = "card"
    IP_ADDRESS = "ip_address"
    NATIONAL_ID = "national_id"
    SECRET = "secret"


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of PII: its kind and where it is, as `text[start:end]`."""

    kind: PiiKind
    start: int
    end: int


_MARKERS: dict[PiiKind, str] = {kind: f"[REDACTED:{kind.value.upper()}]" for kind in PiiKind}
# A safety stop for `Redactor.redact`'s rescans; each pass strictly shrinks the unredacted text,
# and in practice a second pass is the most ever needed.
_MAX_PASSES = 16
_MEMO_MAX_CHARS = 256
_MEMO_ENTRIES = 8192

_Span = tuple[int, int]
_Check = Callable[[re.Match[str]], _Span | None]


@dataclass(frozen=True, slots=True)
class _Probe:
    """What the cheap pre-checks look at: the text, whether it has a digit, and its lower case."""

    text: str
    has_digit: bool
    lowered: str


_Needed = Callable[[_Probe], bool]


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: PiiKind
    pattern: re.Pattern[str]
    needed: _Needed
    check: _Check


def _compile(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    flags = re.ASCII | re.VERBOSE
    if ignore_case:
        flags |= re.IGNORECASE
    return re.compile(pattern, flags)


# --- pre-checks -----------------------------------------------------------------------------


def _needs_digit(probe: _Probe) -> bool:
    return probe.has_digit


def _needs(*needles: str, digit: bool = False) -> _Needed:
    def needed(probe: _Probe) -> bool:
        if digit and not probe.has_digit:
            return False
        return any(needle in probe.text for needle in needles)

    return needed


def _needs_word(*words: str, digit: bool = False) -> _Needed:
    def needed(probe: _Probe) -> bool:
        if digit and not probe.has_digit:
            return False
        return any(word in probe.lowered for word in words)

    return needed


def _needs_two_colons(probe: _Probe) -> bool:
    return probe.text.count(":") >= 2


def _needs_assignment(probe: _Probe) -> bool:
    text = probe.text
    if "=" not in text and ":" not in text:
        return False
    lowered = probe.lowered
    return "pass" in lowered or "secret" in lowered or "token" in lowered or "key" in lowered


# --- checks ---------------------------------------------------------------------------------


def _whole(match: re.Match[str]) -> _Span | None:
    return match.span()


def _value(match: re.Match[str]) -> _Span | None:
    return match.span("v")


def _value_with_digit(match: re.Match[str]) -> _Span | None:
    value = match.group("v")
    return match.span("v") if any(ch.isdigit() for ch in value) else None


_DIGIT = re.compile(r"[0-9]", re.ASCII)
_NON_DIGIT = re.compile(r"[^0-9]", re.ASCII)
_DATE_PREFIX = re.compile(r"\(?[0-9]{1,2}[./-][0-9]{1,2}[./-][0-9]{2,4}(?![0-9])", re.ASCII)
_SSN_SHAPE = re.compile(r"[0-9]{3}-[0-9]{2}-[0-9]{4}", re.ASCII)


def _digit_count(text: str) -> int:
    return len(_NON_DIGIT.sub("", text))


def _check_international_phone(match: re.Match[str]) -> _Span | None:
    candidate = match.group()
    digits = _digit_count(candidate)
    compact = digits == len(candidate) - 1
    low = 10 if compact else 7
    return match.span() if low <= digits <= 15 else None


def _check_national_phone(match: re.Match[str]) -> _Span | None:
    candidate = match.group()
    if not 9 <= _digit_count(candidate) <= 12 or candidate.startswith("000"):
        return None
    if _DATE_PREFIX.match(candidate) or _SSN_SHAPE.fullmatch(candidate):
        return None  # `05.12.2026 14`, or an SSN the SSN rule turned down (`000-12-3456`)
    return match.span()


def _iban_valid(compact: str) -> bool:
    if not 15 <= len(compact) <= 34 or compact[2:4] in ("00", "01", "99"):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _check_iban(match: re.Match[str]) -> _Span | None:
    """Validate the IBAN; a grouped one may have swallowed a following upper-case word."""
    start, end = match.span()
    groups = match.group().split(" ")
    while groups:
        if _iban_valid("".join(groups)):
            return start, end
        dropped = groups.pop()
        if len(groups) < 2 or not dropped.isalpha():
            return None
        end -= len(dropped) + 1
    return None


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, ch in enumerate(reversed(digits)):
        value = ord(ch) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_network(digits: str) -> bool:
    first = digits[0]
    if first in "456":
        return True
    if first == "3":
        return digits[1] in "0456789"
    if first == "2":
        return 2221 <= int(digits[:4]) <= 2720
    return False


def _check_card(match: re.Match[str]) -> _Span | None:
    digits = _NON_DIGIT.sub("", match.group())
    if 13 <= len(digits) <= 19 and _card_network(digits) and _luhn_valid(digits):
        return match.span()
    return None


_IPV6_SEPARATORS = re.compile(r"[:.]")


def _check_ipv6(match: re.Match[str]) -> _Span | None:
    start, end = match.span()
    candidate = match.group()
    if candidate.endswith(":") and not candidate.endswith("::"):
        candidate = candidate[:-1]
        end -= 1
    if candidate.count(":") < 2:
        return None
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    if "::" in candidate:
        groups = [group for group in _IPV6_SEPARATORS.split(candidate) if group]
        if len(groups) <= 2 and all(len(group) <= 2 for group in groups):
            return None  # `::1`, `::`, or a slice such as `x[1::2]`
    return start, end


def _check_aws_key_id(match: re.Match[str]) -> _Span | None:
    return match.span() if _DIGIT.search(match.group(), 4) else None


def _check_aws_secret(match: re.Match[str]) -> _Span | None:
    value = match.group("v")
    mixed_case = any(ch.isupper() for ch in value) and any(ch.islower() for ch in value)
    if mixed_case and (_DIGIT.search(value) or "/" in value or "+" in value):
        return match.span("v")
    return None


def _check_bearer(match: re.Match[str]) -> _Span | None:
    start, end = match.span("v")
    token = match.group("v").rstrip(".")
    end = start + len(token)
    if len(token) < 16 or token.isalpha():
        return None
    return start, end


_PLACEHOLDERS = frozenset(
    {
        "none",
        "null",
        "nil",
        "true",
        "false",
        "undefined",
        "redacted",
        "empty",
        "required",
        "optional",
        "hidden",
        "masked",
    }
)
_BEARER_PREFIX = re.compile(r"bearer[ \t]+", re.ASCII | re.IGNORECASE)


def _assignment_check(min_length: int) -> _Check:
    def check(match: re.Match[str]) -> _Span | None:
        quoted = True
        name = "dq" if match.group("dq") is not None else "sq"
        if match.group(name) is None:
            name, quoted = "v", False
        start, end = match.span(name)
        value = match.group(name)
        if not quoted:
            if value.lower() == "bearer":
                return None  # `token: Bearer …`: the Bearer rule takes the token
            value = value.rstrip(".")
        else:
            prefix = _BEARER_PREFIX.match(value)
            if prefix:
                value = value[prefix.end() :]
                start += prefix.end()
        end = start + len(value)
        if len(value) < min_length or value.lower() in _PLACEHOLDERS:
            return None
        if value[0] in "$%<{" or (len(value) >= 3 and len(set(value)) == 1):
            return None  # `$VAR`, `%s`, `<token>`, `{{secret}}`, `***`, `xxxx`
        if not quoted and match.group("sep") == ":" and value.isalpha():
            return None  # `Password: incorrect` is prose
        return start, end

    return check


# --- patterns -------------------------------------------------------------------------------

_EMAIL = _compile(
    r"""
    (?<![A-Za-z0-9._%+-])
    [A-Za-z0-9_%+-][A-Za-z0-9._%+-]{0,63}
    @
    (?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+
    [A-Za-z]{2,63}
    (?![A-Za-z0-9-])
    """
)

_PHONE_INTERNATIONAL = _compile(
    r"""
    (?<![\w+])
    \+[1-9][0-9]{0,3}
    (?:[ .-]?\([0-9]{1,5}\))?
    (?:[ .-]?[0-9]+)*+
    (?!\w)
    """
)

_PHONE_NATIONAL = _compile(
    r"""
    (?<![\w.,+/-]) (?<![0-9]:)
    (?:\(0[0-9]{1,5}\)[ ]?|0[0-9]{1,5}[ ./-])
    [0-9]{2,}+(?:[ ./-][0-9]{2,}+)*+
    (?!\w) (?![./-][0-9])
    """
)

_PHONE_US = _compile(
    r"""
    (?<![\w.,+/-]) (?<![0-9]:)
    (?:
        \([2-9][0-9]{2}\)[ ]?[0-9]{3}[ .-][0-9]{4}
      | [2-9][0-9]{2}(?P<sep>[.-])[0-9]{3}(?P=sep)[0-9]{4}
    )
    (?!\w) (?![./-][0-9])
    """
)

_IBAN = _compile(
    r"""
    (?<![A-Za-z0-9-])
    [A-Z]{2}[0-9]{2}
    (?:[A-Z0-9]{11,30}|(?:[ ][A-Z0-9]{4}){2,7}(?:[ ][A-Z0-9]{1,3})?)
    (?![A-Za-z0-9])
    """
)

_CARD = _compile(
    r"""
    (?<![\w.,+/-])
    [0-9](?:[ -]?[0-9]){12,18}
    (?!\w) (?![.,/-]?[0-9])
    """
)

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = _compile(
    rf"""
    (?<![\w.])
    {_OCTET}(?:\.{_OCTET}){{3}}
    (?!\w) (?!\.[0-9])
    """
)

_IPV6 = _compile(
    r"""
    (?<![\w:.])
    (?:[0-9A-Fa-f]{0,4}:){2,7}
    (?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?
    (?![\w:]) (?!\.[0-9])
    """
)

_SSN = _compile(
    r"""
    (?<![\w-])
    (?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}
    (?![\w-])
    """
)

_UK_NINO = _compile(
    r"""
    (?<![A-Za-z0-9])
    (?!BG|GB|KN|NK|NT|TN|ZZ)
    [A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]
    [ ]?[0-9]{2}[ ]?[0-9]{2}[ ]?[0-9]{2}[ ]?[A-D]
    (?![A-Za-z0-9])
    """
)

_KEYWORD_ID = _compile(
    r"""
    \b(?:passport|national[ _-]?id|id[ _-]?number|personalausweis|ssn|tax[ _-]?id)
    (?:[ \t]*(?:number|num|no|nr)\b\.?)?
    [^A-Za-z0-9\n\[\]]{1,4}
    (?P<v>[A-Za-z0-9][A-Za-z0-9-]{5,19})
    (?![A-Za-z0-9-])
    """,
    ignore_case=True,
)

_AWS_KEY_ID = _compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])")

_AWS_SECRET = _compile(
    r"""
    (?<![A-Za-z0-9:])secret
    [^\n]{0,30}?
    (?<![A-Za-z0-9/+=])(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])
    """,
    ignore_case=True,
)

_BEARER = _compile(
    r"(?<![A-Za-z0-9_-])bearer[ \t]+(?P<v>[A-Za-z0-9._~+/-]{16,}=*)",
    ignore_case=True,
)

_OPENAI_KEY = _compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}")

_GITHUB_TOKEN = _compile(
    r"""
    (?<![A-Za-z0-9_])
    (?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{20,255})
    (?![A-Za-z0-9_])
    """
)

_SLACK_TOKEN = _compile(r"(?<![A-Za-z0-9_-])xox[abpr]-[A-Za-z0-9-]{10,}")

_JWT = _compile(
    r"""
    (?<![A-Za-z0-9_-])
    eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}
    (?![A-Za-z0-9_-])
    """
)


def _assignment(keys: str, first_letters: str) -> re.Pattern[str]:
    """`<key>=<value>`, `<key>: <value>`, `"<key>": "<value>"` for a key that ends in `keys`.

    Any key ending in one of `keys` counts (`aws_secret_access_key`, `accessToken`), so the
    pattern starts at the keyword itself (`max_tokens=` does not match: `s` is no separator).
    The lookahead on the keywords' `first_letters` lets the scan skip ahead quickly.
    """
    return _compile(
        rf"(?=[{first_letters}])(?:{keys})"
        + r"""
        ["']?[ \t]*(?P<sep>[:=])[ \t]*
        (?:
            "(?P<dq>[^"\\\n\[\]]+)"
          | '(?P<sq>[^'\\\n\[\]]+)'
          | (?P<v>[^\s"'`,;&<>()\[\]{}=$%][^\s"'`,;&<>()\[\]{}]*)
        )
        """,
        ignore_case=True,
    )


_PASSWORD_ASSIGNMENT = _assignment("password|passwd|passphrase", "p")
_TOKEN_ASSIGNMENT = _assignment("secret|token|(?:api|access|secret|private|auth)[_-]?key", "apst")

# The order breaks ties between findings with the same span: the earlier rule wins.
_RULES: tuple[_Rule, ...] = (
    _Rule(PiiKind.SECRET, _PASSWORD_ASSIGNMENT, _needs_assignment, _assignment_check(1)),
    _Rule(PiiKind.SECRET, _TOKEN_ASSIGNMENT, _needs_assignment, _assignment_check(8)),
    _Rule(PiiKind.SECRET, _BEARER, _needs_word("bearer"), _check_bearer),
    _Rule(PiiKind.SECRET, _JWT, _needs("eyJ"), _whole),
    _Rule(PiiKind.SECRET, _OPENAI_KEY, _needs("sk-"), _whole),
    _Rule(
        PiiKind.SECRET,
        _GITHUB_TOKEN,
        _needs("ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_"),
        _whole,
    ),
    _Rule(PiiKind.SECRET, _SLACK_TOKEN, _needs("xox"), _whole),
    _Rule(PiiKind.SECRET, _AWS_KEY_ID, _needs("AKIA", "ASIA", digit=True), _check_aws_key_id),
    _Rule(PiiKind.SECRET, _AWS_SECRET, _needs_word("secret"), _check_aws_secret),
    _Rule(PiiKind.NATIONAL_ID, _SSN, _needs("-", digit=True), _whole),
    _Rule(PiiKind.NATIONAL_ID, _UK_NINO, _needs_digit, _whole),
    _Rule(
        PiiKind.NATIONAL_ID,
        _KEYWORD_ID,
        _needs_word("passport", "national", "number", "personalausweis", "ssn", "tax", digit=True),
        _value_with_digit,
    ),
    _Rule(PiiKind.IBAN, _IBAN, _needs_digit, _check_iban),
    _Rule(PiiKind.CARD, _CARD, _needs_digit, _check_card),
    _Rule(PiiKind.EMAIL, _EMAIL, _needs("@"), _whole),
    _Rule(PiiKind.IP_ADDRESS, _IPV6, _needs_two_colons, _check_ipv6),
    _Rule(PiiKind.IP_ADDRESS, _IPV4, _needs(".", digit=True), _whole),
    _Rule(PiiKind.PHONE, _PHONE_INTERNATIONAL, _needs("+", digit=True), _check_international_phone),
    _Rule(PiiKind.PHONE, _PHONE_NATIONAL, _needs_digit, _check_national_phone),
    _Rule(PiiKind.PHONE, _PHONE_US, _needs_digit, _whole),
)


def _detect(text: str) -> list[Finding]:
    probe = _Probe(text, _DIGIT.search(text) is not None, text.lower())
    candidates: list[tuple[int, int, int, PiiKind]] = []
    for priority, rule in enumerate(_RULES):
        if not rule.needed(probe):
            continue
        for match in rule.pattern.finditer(text):
            span = rule.check(match)
            if span is not None and span[1] > span[0]:
                candidates.append((span[0], -span[1], priority, rule.kind))
    if not candidates:
        return []
    candidates.sort()
    findings: list[Finding] = []
    covered = 0
    for start, neg_end, _, kind in candidates:
        if start >= covered:
            findings.append(Finding(kind, start, -neg_end))
            covered = -neg_end
    return findings


def _replace(text: str, findings: list[Finding]) -> str:
    parts: list[str] = []
    position = 0
    for finding in findings:
        parts.append(text[position : finding.start])
        parts.append(_MARKERS[finding.kind])
        position = finding.end
    parts.append(text[position:])
    return "".join(parts)


class Redactor:
    """Finds PII in text and replaces it with `[REDACTED:<KIND>]` markers.

    A disabled redactor passes everything through unchanged (`findings` still reports what it
    would redact). `counts()` tallies the findings redacted so far, by kind; the tally is
    updated under a lock, so one redactor may be shared between threads.
    """

    __slots__ = ("_counts", "_enabled", "_lock", "_memo")

    def __init__(self, enabled: bool = True) -> None:
        self._enabled = enabled
        self._counts: dict[PiiKind, int] = dict.fromkeys(PiiKind, 0)
        self._lock = threading.Lock()
        # Short texts repeat (operation types, route ids, decision reasons): their verdicts are
        # remembered, so an audit record's fields cost a dictionary lookup, not a scan.
        self._memo: dict[str, tuple[str, tuple[tuple[PiiKind, int], ...]]] = {}

    @property
    def enabled(self) -> bool:
        return self._enabled

    def findings(self, text: str) -> list[Finding]:
        """The PII in `text`: non-overlapping, sorted by start.

        When candidates overlap, the earliest-starting one is kept, then the longest; for the
        same span, the more specific rule (secrets first, phone numbers last) decides the kind.
        """
        return _detect(text)

    def redact(self, text: str) -> str:
        """`text` with each finding replaced by its marker; `text` itself when nothing is found.

        The output is rescanned until it has no finding left (see the module docstring).
        """
        if not self._enabled:
            return text
        if type(text) is not str:  # a str subclass (a StrEnum member): plain text, so the memo
            text = str.__str__(text)  # never hands it out for an equal plain string later
        short = len(text) <= _MEMO_MAX_CHARS
        if short:
            remembered = self._memo.get(text)
            if remembered is not None:
                result, counted = remembered
                if counted:
                    self._add(dict(counted))
                return result
        found = _detect(text)
        if not found:
            if short:
                self._remember(text, text, ())
            return text
        tally = dict.fromkeys(PiiKind, 0)
        result = text
        for _ in range(_MAX_PASSES):
            for finding in found:
                tally[finding.kind] += 1
            result = _replace(result, found)
            found = _detect(result)
            if not found:
                break
        self._add(tally)
        if short:
            self._remember(text, result, tuple((k, n) for k, n in tally.items() if n))
        return result

    def _add(self, tally: dict[PiiKind, int]) -> None:
        with self._lock:
            for kind, count in tally.items():
                self._counts[kind] += count

    def _remember(self, text: str, result: str, counted: tuple[tuple[PiiKind, int], ...]) -> None:
        if len(self._memo) >= _MEMO_ENTRIES:
            self._memo.clear()
        self._memo[text] = (result, counted)

    def redact_value(self, value: object) -> object:
        """`value` with every string in it redacted, dict keys included.

        Dicts, lists and tuples are rebuilt as new `dict`, `list` and `tuple` objects (two keys
        that redact to the same string collapse into one, the later value winning); strings are
        redacted; any other value is returned as it is. A disabled redactor returns `value`.
        """
        if not self._enabled:
            return value
        return self._redact_value(value)

    def _redact_value(self, value: object) -> object:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self._redact_value(k): self._redact_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._redact_value(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self._redact_value(item) for item in value)
        return value

    def counts(self) -> dict[str, int]:
        """Findings redacted so far, by kind value; every kind present, zeros included."""
        with self._lock:
            return {kind.value: count for kind, count in self._counts.items()}

    @property
    def redacted_total(self) -> int:
        """All findings redacted so far."""
        with self._lock:
            return sum(self._counts.values())
