"""PII detection and redaction (`hybridroute.compliance.redaction`).

Positive cases put each kind inside a sentence, at the start or end of the string and next to
punctuation, and state the exact span that must be found; negative cases are the everyday
strings of a gateway (dates, times, versions, prices, ids, paths, UUIDs, token counts) and
near misses (a Luhn-invalid card, an IBAN with a wrong check, reserved SSN areas) that must not
be flagged. Hypothesis checks that redaction is idempotent, leaves no finding behind, and never
touches text made only of letters and spaces.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridroute.compliance.redaction import Finding, PiiKind, Redactor

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5" * 3 + "F6g7H8"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

# (text, kind, the exact text of the one finding)
POSITIVES: list[tuple[str, PiiKind, str]] = [
    # EMAIL
    ("Contact alice@example.com for access.", PiiKind.EMAIL, "alice@example.com"),
    ("bob.smith+tag@mail.example.co.uk", PiiKind.EMAIL, "bob.smith+tag@mail.example.co.uk"),
    ("(carol_99@example.org), please", PiiKind.EMAIL, "carol_99@example.org"),
    ("mailto:dave@example.io;", PiiKind.EMAIL, "dave@example.io"),
    # PHONE
    ("Call +49 30 1234567 today", PiiKind.PHONE, "+49 30 1234567"),
    ("+1 (555) 123-4567", PiiKind.PHONE, "+1 (555) 123-4567"),
    ("Tel: 030 1234567.", PiiKind.PHONE, "030 1234567"),
    ("mobile: 0171-1234567, evenings", PiiKind.PHONE, "0171-1234567"),
    ("(555) 123-4567 is the front desk", PiiKind.PHONE, "(555) 123-4567"),
    ("reach me on +4915112345678", PiiKind.PHONE, "+4915112345678"),
    ("UK office: +44 20 7946 0958!", PiiKind.PHONE, "+44 20 7946 0958"),
    # IBAN
    ("IBAN DE89 3704 0044 0532 0130 00, thanks", PiiKind.IBAN, "DE89 3704 0044 0532 0130 00"),
    ("GB82WEST12345698765432", PiiKind.IBAN, "GB82WEST12345698765432"),
    ("pay to FR1420041010050500013M02606.", PiiKind.IBAN, "FR1420041010050500013M02606"),
    ("(NL91ABNA0417164300)", PiiKind.IBAN, "NL91ABNA0417164300"),
    ("IBAN DE89 3704 0044 0532 0130 00 PAID", PiiKind.IBAN, "DE89 3704 0044 0532 0130 00"),
    # CARD
    ("card 4111 1111 1111 1111 expires soon", PiiKind.CARD, "4111 1111 1111 1111"),
    ("4111-1111-1111-1111", PiiKind.CARD, "4111-1111-1111-1111"),
    ("Amex: 378282246310005.", PiiKind.CARD, "378282246310005"),
    ("charged (5555555555554444) twice", PiiKind.CARD, "5555555555554444"),
    ("Discover 6011111111111117", PiiKind.CARD, "6011111111111117"),
    # IP_ADDRESS
    ("request from 192.168.1.10 at noon", PiiKind.IP_ADDRESS, "192.168.1.10"),
    ("10.0.0.1", PiiKind.IP_ADDRESS, "10.0.0.1"),
    ("resolver=8.8.8.8:53,", PiiKind.IP_ADDRESS, "8.8.8.8"),
    ("http://[2001:db8::1]:8080/health", PiiKind.IP_ADDRESS, "2001:db8::1"),
    ("peer fe80::1ff:fe23:4567:890a.", PiiKind.IP_ADDRESS, "fe80::1ff:fe23:4567:890a"),
    ("::ffff:192.0.2.128", PiiKind.IP_ADDRESS, "::ffff:192.0.2.128"),
    (
        "v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        PiiKind.IP_ADDRESS,
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    ),
    # NATIONAL_ID
    ("SSN 123-45-6789 on file", PiiKind.NATIONAL_ID, "123-45-6789"),
    ("123-45-6789", PiiKind.NATIONAL_ID, "123-45-6789"),
    ("NI number: AB 12 34 56 C.", PiiKind.NATIONAL_ID, "AB 12 34 56 C"),
    ("JG103759A", PiiKind.NATIONAL_ID, "JG103759A"),
    ("passport no. X1234567", PiiKind.NATIONAL_ID, "X1234567"),
    ("Personalausweis: L01X00T47, valid", PiiKind.NATIONAL_ID, "L01X00T47"),
    ("His Tax ID: 98-7654321x.", PiiKind.NATIONAL_ID, "98-7654321x"),
    ("national id #AB-123456", PiiKind.NATIONAL_ID, "AB-123456"),
    # SECRET
    ("AKIAIOSFODNN7EXAMPLE", PiiKind.SECRET, "AKIAIOSFODNN7EXAMPLE"),
    ("key id (ASIAY34FZKBOKMUTVV7A) rotated", PiiKind.SECRET, "ASIAY34FZKBOKMUTVV7A"),
    (
        "Authorization: Bearer abcdef1234567890ghijkl",
        PiiKind.SECRET,
        "abcdef1234567890ghijkl",
    ),
    ("bearer " + JWT + ".", PiiKind.SECRET, JWT),
    (
        "use sk-proj-abc123DEF456ghi789JKL012 here",
        PiiKind.SECRET,
        "sk-proj-abc123DEF456ghi789JKL012",
    ),
    ("GITHUB_TOKEN is " + GITHUB_TOKEN, PiiKind.SECRET, GITHUB_TOKEN),
    ("slack: xoxb-1234567890-abcdefghij!", PiiKind.SECRET, "xoxb-1234567890-abcdefghij"),
    (JWT, PiiKind.SECRET, JWT),
    ("password=hunter2&user=bob", PiiKind.SECRET, "hunter2"),
    ('{"api_key": "abcd1234efgh5678"}', PiiKind.SECRET, "abcd1234efgh5678"),
    ("token: Zx81-kq2LmNo", PiiKind.SECRET, "Zx81-kq2LmNo"),
    ("db_password = 'correct horse'", PiiKind.SECRET, "correct horse"),
    ("x-api-key: 0123456789abcdef", PiiKind.SECRET, "0123456789abcdef"),
    ("accessToken=abc123def456&page=2", PiiKind.SECRET, "abc123def456"),
    ('SECRET_KEY: "x1y2z3w4v5"', PiiKind.SECRET, "x1y2z3w4v5"),
    ("aws_secret_access_key = " + AWS_SECRET, PiiKind.SECRET, AWS_SECRET),
    ("the AWS secret is " + AWS_SECRET + ".", PiiKind.SECRET, AWS_SECRET),
]


@pytest.mark.parametrize(("text", "kind", "expected"), POSITIVES)
def test_finds_each_kind(text: str, kind: PiiKind, expected: str) -> None:
    start = text.index(expected)
    assert Redactor().findings(text) == [Finding(kind, start, start + len(expected))]


@pytest.mark.parametrize(("text", "kind", "expected"), POSITIVES)
def test_redacts_each_kind(text: str, kind: PiiKind, expected: str) -> None:
    marker = f"[REDACTED:{kind.value.upper()}]"
    assert Redactor().redact(text) == text.replace(expected, marker, 1)


NEGATIVES = [
    # dates, times, timestamps, years, plain numbers
    "Released 2026-12-05 at 12:30:45",
    "due 05.12.2026, or 05/12/2026",
    "2026-12-05T10:30:00Z",
    "2026-12-05T10:30:00.123456789+00:00",
    "meeting at 10:30 in 2026",
    "1234 12345 12345678 and 1733400000000 ms",
    # versions, prices, counts
    "version 1.2.3.4.5, v10.0.19045, Python 3.11.4",
    "costs 0.0031 per 1k tokens, $1,234.56 total",
    "max_tokens=1024",
    '{"prompt_tokens": 123, "completion_tokens": 4567, "total_tokens": 4690}',
    # the gateway's own identifiers and paths
    "decision dec-1a2b3c4d-0000000f took route direct_bedrock",
    "routes: direct_bedrock, mcp_tools",
    "GET /v1/chat/completions HTTP/1.1",
    "/admin/routes/direct_bedrock/health?window=60",
    # UUIDs (not cards, not phones)
    "123e4567-e89b-12d3-a456-426614174000",
    "00000000-0000-0000-0000-000000000000",
    "12345678-1234-5678-1234-567812345678",
    # near misses
    "card 4111 1111 1111 1112",
    "IBAN DE89370400440532013001",
    "SSNs 000-12-3456, 666-12-3456 and 900-12-3456",
    "IPs 256.1.1.1 and 1.2.3",
    "+12 and 5+1234567",
    # prose and code that looks a little like PII
    "my passport expired yesterday",
    "Password: incorrect",
    "token: none, secret = null, password=*****",
    "Bearer authentication is used",
    "std::vector<int> and a::b and x[1::2]",
    "MAC 00:1a:2b:3c:4d:5e",
    "user@localhost",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_ordinary_text_is_not_flagged(text: str) -> None:
    redactor = Redactor()
    assert redactor.findings(text) == []
    assert redactor.redact(text) is text


def test_several_kinds_in_one_text_sorted_by_start() -> None:
    text = "mail a@example.com, call 030 1234567, card 4111111111111111 from 10.0.0.1"
    found = Redactor().findings(text)
    assert [f.kind for f in found] == [
        PiiKind.EMAIL,
        PiiKind.PHONE,
        PiiKind.CARD,
        PiiKind.IP_ADDRESS,
    ]
    assert [f.start for f in found] == sorted(f.start for f in found)
    assert Redactor().redact(text) == (
        "mail [REDACTED:EMAIL], call [REDACTED:PHONE], card [REDACTED:CARD] "
        "from [REDACTED:IP_ADDRESS]"
    )


def test_overlap_keeps_the_earliest_start() -> None:
    # The IPv4 address inside the email's domain overlaps the email, which starts earlier.
    text = "write to ops@10.0.0.1.example.com now"
    expected = "ops@10.0.0.1.example.com"
    start = text.index(expected)
    assert Redactor().findings(text) == [Finding(PiiKind.EMAIL, start, start + len(expected))]


def test_overlap_same_span_is_one_finding() -> None:
    # The Bearer rule and the JWT rule both find the token; the keyword id rule and the SSN
    # rule both find the number; a card number as a password value is one secret.
    for text, kind, expected in [
        ("Bearer " + JWT, PiiKind.SECRET, JWT),
        ("ssn: 123-45-6789", PiiKind.NATIONAL_ID, "123-45-6789"),
        ("password=4111111111111111", PiiKind.SECRET, "4111111111111111"),
    ]:
        start = text.index(expected)
        assert Redactor().findings(text) == [Finding(kind, start, start + len(expected))]


def test_overlap_keeps_the_longest_from_the_same_start() -> None:
    # `token=` takes the whole value; the email inside it starts at the same place but is
    # shorter.
    text = "token=alice@example.com/extra1"
    value = "alice@example.com/extra1"
    start = text.index(value)
    assert Redactor().findings(text) == [Finding(PiiKind.SECRET, start, start + len(value))]


def test_redact_returns_the_same_object_when_nothing_is_found() -> None:
    text = "".join(["route ", "direct_bedrock ", "answered in 0.42 s"])
    assert Redactor().redact(text) is text


def test_disabled_redactor_changes_nothing() -> None:
    redactor = Redactor(enabled=False)
    text = "mail alice@example.com"
    value = {"alice@example.com": ["call 030 1234567"]}
    assert redactor.enabled is False
    assert redactor.redact(text) is text
    assert redactor.redact_value(value) is value
    assert redactor.redacted_total == 0
    assert Redactor().enabled is True


def test_redact_value_walks_nested_containers() -> None:
    redactor = Redactor()
    value: object = {
        "alice@example.com": {"phone": "+49 30 1234567", "n": 3},
        "cards": ["4111 1111 1111 1111", ("10.0.0.1", None, 2.5)],
        "note": "nothing here",
        7: True,
    }
    assert redactor.redact_value(value) == {
        "[REDACTED:EMAIL]": {"phone": "[REDACTED:PHONE]", "n": 3},
        "cards": ["[REDACTED:CARD]", ("[REDACTED:IP_ADDRESS]", None, 2.5)],
        "note": "nothing here",
        7: True,
    }
    assert redactor.counts()["email"] == 1
    assert redactor.redacted_total == 4


def test_redact_value_returns_new_containers() -> None:
    redactor = Redactor()
    inner = ["plain"]
    value = {"k": inner}
    result = redactor.redact_value(value)
    assert result == value
    assert result is not value
    assert isinstance(result, dict)
    assert result["k"] is not inner
    assert redactor.redact_value(42) == 42
    assert redactor.redact_value(None) is None


def test_counts_accumulate_by_kind() -> None:
    redactor = Redactor()
    assert redactor.counts() == dict.fromkeys([kind.value for kind in PiiKind], 0)
    redactor.redact("a@example.com and b@example.com")
    redactor.redact("call 030 1234567")
    redactor.redact("nothing")
    redactor.redact_value(["c@example.com", {"ip": "10.0.0.1"}])
    counts = redactor.counts()
    assert set(counts) == {kind.value for kind in PiiKind}
    assert counts["email"] == 3
    assert counts["phone"] == 1
    assert counts["ip_address"] == 1
    assert counts["card"] == 0
    assert redactor.redacted_total == 5


def test_counts_are_a_copy() -> None:
    redactor = Redactor()
    redactor.counts()["email"] = 99
    assert redactor.counts()["email"] == 0


def test_markers_are_never_redacted_again() -> None:
    redactor = Redactor()
    text = 'password=[REDACTED:SECRET] {"token": "[REDACTED:SECRET]"} [REDACTED:NATIONAL_ID]'
    assert redactor.findings(text) == []


def test_a_finding_exposed_by_redacting_its_neighbour_is_redacted_too() -> None:
    # Glued to the first number, the second `+44 …` is not a phone number on its own (a digit
    # precedes its `+`); once the first is a marker it is, and `redact` rescans until clean.
    redactor = Redactor()
    text = "+1 (555) 123-4567+44 20 7946 0958"
    assert [f.kind for f in redactor.findings(text)] == [PiiKind.PHONE]
    assert redactor.redact(text) == "[REDACTED:PHONE][REDACTED:PHONE]"
    assert redactor.counts()["phone"] == 2


# --- properties ------------------------------------------------------------------------------

FRAGMENTS = [expected for _, _, expected in POSITIVES] + [
    "password=",
    "token: ",
    "Bearer ",
    "passport ",
    "ssn ",
    "secret ",
    "@",
    "+",
    ".",
    ":",
    "::",
    "-",
    "0",
    "2026-12-05",
    "12:30:45",
    "0.0031",
    "dec-1a2b3c4d-0000000f",
    "[REDACTED:EMAIL]",
]
_fragment = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(alphabet="abcXYZ0123456789 @.:-+_=/()[]'\"", max_size=10),
)
mixed_text = st.lists(_fragment, max_size=8).map("".join)


@settings(max_examples=150, deadline=None)
@given(mixed_text)
def test_redaction_is_idempotent(text: str) -> None:
    redactor = Redactor()
    once = redactor.redact(text)
    assert redactor.redact(once) == once


@settings(max_examples=150, deadline=None)
@given(mixed_text)
def test_redacted_text_has_no_findings(text: str) -> None:
    redactor = Redactor()
    assert redactor.findings(redactor.redact(text)) == []


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(categories=["Lu", "Ll", "Zs"]), max_size=60))
def test_letters_and_spaces_are_unchanged(text: str) -> None:
    assert Redactor().redact(text) is text


@settings(max_examples=100, deadline=None)
@given(mixed_text)
def test_findings_are_sorted_and_disjoint(text: str) -> None:
    found = Redactor().findings(text)
    for before, after in itertools.pairwise(found):
        assert before.end <= after.start
    assert all(0 <= f.start < f.end <= len(text) for f in found)
