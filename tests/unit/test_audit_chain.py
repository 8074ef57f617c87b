"""The audit chain's pure core: canonical JSON, digests, and `verify` finding and locating every
kind of tampering (edits, deletions, insertions, reordering, broken links, malformed records and
a cut-off tail), on chains built with `ChainSigner.seal`."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import math
import time
from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridroute.audit.chain import (
    GENESIS,
    Anchor,
    ChainSigner,
    IntegrityReport,
    Problem,
    canonical_json,
    verify,
)
from hybridroute.storage.control import AuditRecord

KEY = b"audit-key-A"
SIGNER = ChainSigner(KEY)


def _data(seq: int) -> dict[str, object]:
    return {
        "route": "bedrock" if seq % 2 else "mcp",
        "change": {"old": {"flags": [f"f{seq}", True, seq, 0.5]}, "new": None},
        "cost": seq / 7,
    }


def build(
    count: int, signer: ChainSigner = SIGNER, *, start: int = 1, prev: str = GENESIS
) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for seq in range(start, start + count):
        record = signer.seal(
            seq=seq,
            at=1_800_000_000.0 + seq * 1.25,
            kind="decision" if seq % 3 else "flag_changed",
            actor="gateway" if seq % 2 else "ops-token",
            subject=None if seq % 4 else f"subject-{seq}",
            data=_data(seq),
            prev=prev,
        )
        records.append(record)
        prev = record.digest
    return records


def reseal(record: AuditRecord, signer: ChainSigner, **changes: object) -> AuditRecord:
    """`record` with fields changed and sealed again by `signer`."""
    edited = dataclasses.replace(record, **changes)  # type: ignore[arg-type]
    return signer.seal(
        seq=edited.seq,
        at=edited.at,
        kind=edited.kind,
        actor=edited.actor,
        subject=edited.subject,
        data=orjson.loads(edited.data),
        prev=edited.prev,
    )


def kinds(report: IntegrityReport) -> list[tuple[str, int | None, int]]:
    return [(problem.kind, problem.seq, problem.position) for problem in report.problems]


def head_of(records: list[AuditRecord]) -> tuple[int, str]:
    return records[-1].seq, records[-1].digest


# -- intact chains, keys and digests -------------------------------------------------------------


def test_an_intact_chain_verifies() -> None:
    records = build(50)
    report = verify(records, SIGNER, head=head_of(records))
    assert report.ok
    assert report.problems == ()
    assert report.checked == 50
    assert (report.first_seq, report.last_seq) == (1, 50)
    assert report.head_digest == records[-1].digest
    assert report.keyed
    assert records[0].prev == GENESIS == "0" * 64
    assert all(b.prev == a.digest for a, b in itertools.pairwise(records))
    as_dict = report.as_dict()
    assert orjson.loads(orjson.dumps(as_dict)) == {
        "ok": True,
        "checked": 50,
        "first_seq": 1,
        "last_seq": 50,
        "head_digest": records[-1].digest,
        "keyed": True,
        "problems": [],
    }


def test_an_empty_chain_verifies_and_a_remembered_head_makes_it_truncated() -> None:
    assert verify([], SIGNER).ok
    assert verify([], SIGNER, anchor=Anchor(9, "ab" * 32), head=(9, "ab" * 32)).ok
    report = verify([], SIGNER, anchor=Anchor(9, "ab" * 32), head=(12, "cd" * 32))
    assert kinds(report) == [("truncated", None, 0)]
    assert "records 10 to 12" in report.problems[0].detail
    assert (report.first_seq, report.last_seq, report.head_digest) == (None, None, None)


def test_unkeyed_digests_are_plain_sha256_over_the_canonical_record() -> None:
    signer = ChainSigner()
    assert not signer.keyed
    record = signer.seal(
        seq=3, at=12, kind="alert", actor="guard", subject=None, data={"b": 1, "a": [1]}, prev="p"
    )
    assert record.data == '{"a":[1],"b":1}'
    assert record.at == 12.0
    assert isinstance(record.at, float)
    body = canonical_json(
        {
            "seq": 3,
            "at": 12.0,
            "kind": "alert",
            "actor": "guard",
            "subject": None,
            "data": {"a": [1], "b": 1},
            "prev": "p",
        }
    )
    assert record.digest == hashlib.sha256(body).hexdigest()

    def digest(signer: ChainSigner, data: object) -> str:
        return signer.digest(
            seq=3, at=12.0, kind="alert", actor="guard", subject=None, data=data, prev="p"
        )

    # Reproducible, whatever the key order or sequence type.
    assert digest(ChainSigner(), {"b": 1, "a": (1,)}) == record.digest
    keyed = digest(ChainSigner(KEY), {"a": [1], "b": 1})
    assert keyed == hmac.new(KEY, body, hashlib.sha256).hexdigest() != record.digest


def test_a_chain_signed_with_one_key_fails_with_another_or_none() -> None:
    records = build(5, ChainSigner(b"key A"))
    assert verify(records, ChainSigner(b"key A")).ok
    for other in (ChainSigner(b"key B"), ChainSigner()):
        report = verify(records, other)
        assert not report.ok
        assert kinds(report)[0] == ("edited", 1, 0)
        assert report.keyed is other.keyed
    with pytest.raises(ValueError, match="empty"):
        ChainSigner(b"")


# -- edits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "rollback"),
        ("actor", "intruder"),
        ("at", 1_800_000_008.76),
        ("subject", "someone-else"),
        ("prev", "f" * 64),
        ("digest", "e" * 64),
        ("data", '{"route":"mcp"}'),
    ],
)
def test_an_edited_field_is_reported_at_its_record(field: str, value: object) -> None:
    records = build(12)
    records[6] = dataclasses.replace(records[6], **{field: value})  # type: ignore[arg-type]
    report = verify(records, SIGNER, head=head_of(records))
    assert kinds(report) == [("edited", 7, 6)]
    assert report.problems[0].detail == (
        "record 7 was edited: its digest does not match its contents"
    )


def test_an_edit_deep_inside_data_is_reported() -> None:
    records = build(12)
    data = orjson.loads(records[6].data)
    data["change"]["old"]["flags"][2] = 8
    records[6] = dataclasses.replace(records[6], data=canonical_json(data).decode())
    assert kinds(verify(records, SIGNER)) == [("edited", 7, 6)]


def test_reformatting_data_without_changing_it_is_not_an_edit() -> None:
    records = build(3)
    pretty = orjson.dumps(orjson.loads(records[1].data), option=orjson.OPT_INDENT_2).decode()
    records[1] = dataclasses.replace(records[1], data=pretty)
    assert verify(records, SIGNER).ok


def test_an_edited_seq_is_an_edit_not_a_gap() -> None:
    records = build(12)
    records[6] = dataclasses.replace(records[6], seq=700)
    report = verify(records, SIGNER)
    assert kinds(report) == [("edited", 700, 6)]
    assert "record 7 was edited: its seq was changed to 700" in report.problems[0].detail


def test_a_record_resealed_without_the_key_is_caught_once() -> None:
    records = build(12)
    forged = reseal(records[6], ChainSigner(), actor="intruder")
    assert forged.prev == records[6].prev
    records[6] = forged
    report = verify(records, SIGNER, head=head_of(records))
    assert kinds(report) == [("edited", 7, 6)]  # not also a broken link from record 8


def test_an_unkeyed_record_resealed_shows_as_a_broken_link_from_the_next() -> None:
    signer = ChainSigner()
    records = build(12, signer)
    records[6] = reseal(records[6], signer, actor="intruder")
    report = verify(records, signer)
    assert kinds(report) == [("broken_link", 8, 7)]
    assert "record 8 does not link to record 7" in report.problems[0].detail


def test_a_forged_prev_resealed_without_the_key_breaks_the_link() -> None:
    signer = ChainSigner()
    records = build(12, signer)
    records[6] = reseal(records[6], signer, prev="a" * 64)
    report = verify(records, signer)
    assert kinds(report) == [("broken_link", 7, 6)]
    assert report.problems[0].detail == (
        "record 7 was replaced: it does not link to record 6, and record 8 does not link to it"
    )


# -- deletions, truncation and anchors -----------------------------------------------------------


def test_a_deleted_record_is_named() -> None:
    records = build(50)
    del records[19]
    report = verify(records, SIGNER, head=head_of(records))
    assert kinds(report) == [("deleted", 21, 19)]
    assert (
        report.problems[0].detail == "record 20 is missing before record 21 (position 19): deleted"
    )


def test_several_deleted_records_are_named_as_a_run() -> None:
    records = build(50)
    del records[19:23]
    report = verify(records, SIGNER)
    assert kinds(report) == [("deleted", 24, 19)]
    assert report.problems[0].detail.startswith("records 20 to 23 are missing before record 24")


def test_the_first_record_deleted_is_noticed_without_an_anchor() -> None:
    records = build(10)[1:]
    report = verify(records, SIGNER)
    assert kinds(report) == [("deleted", 2, 0)]
    assert "record 1 is missing" in report.problems[0].detail


def test_a_deleted_tail_is_truncation_when_the_head_is_known() -> None:
    records = build(50)
    head = head_of(records)
    kept = records[:47]
    assert verify(kept, SIGNER).ok  # without the head, a cut tail cannot be seen
    report = verify(kept, SIGNER, head=head)
    assert kinds(report) == [("truncated", None, 47)]
    assert "records 48 to 50 are missing from the end" in report.problems[0].detail


def test_a_replaced_tail_does_not_match_the_remembered_head() -> None:
    signer = ChainSigner()
    records = build(10, signer)
    head = head_of(records)
    records[-1] = reseal(records[-1], signer, kind="rollback")
    report = verify(records, signer, head=head)
    assert kinds(report) == [("edited", 10, 9)]
    assert "not the remembered head" in report.problems[0].detail


def test_a_head_at_the_anchor_must_match_it() -> None:
    anchor = Anchor(5, "ab" * 32)
    report = verify([], SIGNER, anchor=anchor, head=(5, "cd" * 32))
    assert kinds(report) == [("edited", None, 0)]
    assert report.problems[0].detail.startswith("the anchor (record 5) is not the remembered head")


def test_records_after_the_remembered_head_are_inserted() -> None:
    records = build(10)
    report = verify(records, SIGNER, head=head_of(records[:8]))
    assert kinds(report) == [("inserted", 9, 8), ("inserted", 10, 9)]
    assert "the chain ends at the remembered head, record 8" in report.problems[0].detail


def test_a_purged_prefix_verifies_from_its_anchor() -> None:
    records = build(30)
    suffix = records[10:]
    anchor = Anchor(records[9].seq, records[9].digest)
    report = verify(suffix, SIGNER, anchor=anchor, head=head_of(records))
    assert report.ok
    assert (report.checked, report.first_seq, report.last_seq) == (20, 11, 30)
    assert kinds(verify(suffix, SIGNER)) == [("deleted", 11, 0)]
    wrong = verify(suffix, SIGNER, anchor=Anchor(10, "1" * 64))
    assert kinds(wrong) == [("broken_link", 11, 0)]
    assert "does not link to the anchor" in wrong.problems[0].detail
    stale = verify(records[9:], SIGNER, anchor=anchor)
    assert kinds(stale) == [("inserted", 10, 0)]


# -- reordering and insertion --------------------------------------------------------------------


def test_two_swapped_records_are_reordered() -> None:
    records = build(20)
    records[4], records[5] = records[5], records[4]
    report = verify(records, SIGNER, head=head_of(records))
    assert kinds(report) == [("reordered", 6, 4)]
    assert "record 6 at position 4 is out of order: it comes before record 5" in (
        report.problems[0].detail
    )


def test_a_record_moved_to_the_end_is_reordered() -> None:
    records = build(20)
    records.append(records.pop(4))
    report = verify(records, SIGNER)
    assert kinds(report) == [("reordered", 6, 4)]
    assert "record 5, which is at position 19" in report.problems[0].detail


def test_a_forged_record_with_a_taken_seq_is_inserted() -> None:
    records = build(20)
    forged = ChainSigner().seal(
        seq=8,
        at=1.0,
        kind="config_applied",
        actor="ops",
        subject=None,
        data={},
        prev=records[6].digest,
    )
    records.insert(7, forged)
    report = verify(records, SIGNER, head=head_of(records))
    assert kinds(report) == [("inserted", 8, 7)]
    assert "the chain runs through the other record 8, at position 8" in report.problems[0].detail


def test_a_well_forged_unkeyed_duplicate_is_inserted_not_the_original() -> None:
    signer = ChainSigner()
    records = build(20, signer)
    forged = reseal(records[7], signer, actor="intruder")  # same seq, same prev, valid digest
    records.insert(9, forged)
    assert kinds(verify(records, signer)) == [("inserted", 8, 9)]


def test_a_forged_record_with_a_new_seq_is_inserted() -> None:
    original = build(20)
    forged = ChainSigner(b"guess").seal(
        seq=77, at=1.0, kind="erasure", actor="ops", subject="x", data={}, prev=original[9].digest
    )
    records = [*original[:10], forged, *original[10:]]
    report = verify(records, SIGNER, head=head_of(original))
    assert kinds(report) == [("inserted", 77, 10)]


# -- malformed records, several problems, the cap ------------------------------------------------


def test_malformed_records_are_reported_not_raised() -> None:
    records = build(10)
    records[3] = dataclasses.replace(records[3], data="{not json")
    records[6] = dataclasses.replace(records[6], seq="7")  # type: ignore[arg-type]
    records[8] = dataclasses.replace(records[8], at=math.inf)
    report = verify(records, SIGNER)
    assert kinds(report) == [("malformed", 4, 3), ("malformed", None, 6), ("malformed", 9, 8)]
    assert "its data is not valid JSON" in report.problems[0].detail
    assert "at position 6" in report.problems[1].detail
    assert report.as_dict()["problems"] == [problem.as_dict() for problem in report.problems]


def test_separate_problems_in_one_chain_are_all_reported() -> None:
    records = build(60)
    records[4] = dataclasses.replace(records[4], kind="rollback")  # record 5
    records[30], records[31] = records[31], records[30]  # records 31 and 32
    del records[19]  # record 20
    forged = ChainSigner().seal(
        seq=41, at=0.0, kind="decision", actor="x", subject=None, data=[], prev=records[38].digest
    )
    records.insert(40, forged)
    head = head_of(build(62))
    report = verify(records, SIGNER, head=head)
    assert kinds(report) == [
        ("edited", 5, 4),
        ("deleted", 21, 19),
        ("reordered", 32, 29),
        ("inserted", 41, 40),
        ("truncated", None, len(records)),
    ]
    assert not report.ok
    assert report.checked == len(records)


def test_a_long_scrambled_chain_is_walked_in_linear_time() -> None:
    records = build(20_000, ChainSigner())
    for start in range(0, len(records) - 1, 10):  # 2,000 swapped pairs
        records[start], records[start + 1] = records[start + 1], records[start]
    began = time.perf_counter()
    report = verify(records, ChainSigner(), head=head_of(records))
    elapsed = time.perf_counter() - began
    assert [problem.kind for problem in report.problems] == ["reordered"] * 100
    report = verify(records, ChainSigner(), max_problems=10_000)
    assert len(report.problems) == 2_000
    assert {problem.kind for problem in report.problems} == {"reordered"}
    assert elapsed < 2.0


def test_problems_stop_at_the_cap() -> None:
    records = build(30)
    report = verify(records, ChainSigner(b"wrong"), max_problems=5)
    assert len(report.problems) == 5
    assert report.checked == 5
    with pytest.raises(ValueError, match="max_problems"):
        verify(records, SIGNER, max_problems=0)


def test_a_problem_kind_must_be_known() -> None:
    with pytest.raises(ValueError, match="unknown problem kind"):
        Problem(0, 1, "vanished", "record 1 vanished")


# -- canonical JSON ------------------------------------------------------------------------------


def test_canonical_json_does_not_depend_on_insertion_order() -> None:
    one = {"b": {"y": 1, "x": [{"d": 1, "c": 2}]}, "a": (1, "two")}
    two = {"a": [1, "two"], "b": {"x": [{"c": 2, "d": 1}], "y": 1}}
    assert (
        canonical_json(one)
        == canonical_json(two)
        == (b'{"a":[1,"two"],"b":{"x":[{"c":2,"d":1}],"y":1}}')
    )
    assert canonical_json({"null": None, "text": "null"}) == b'{"null":null,"text":"null"}'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_json_refuses_non_finite_numbers(bad: float) -> None:
    for value in (bad, [1, bad], {"a": {"b": (bad,)}}):
        with pytest.raises(ValueError, match="no JSON form"):
            canonical_json(value)
    with pytest.raises(ValueError, match="not finite"):
        SIGNER.seal(seq=1, at=bad, kind="k", actor="a", subject=None, data={}, prev=GENESIS)


# -- property: any single change to any field of any record is noticed -------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


def _mutations() -> dict[str, Callable[[st.DrawFn, AuditRecord], object]]:
    return {
        "seq": lambda draw, r: draw(st.integers(-5, 40).filter(lambda s: s != r.seq)),
        "at": lambda draw, r: draw(st.floats(0, 2e9).filter(lambda a: a != r.at)),
        "kind": lambda draw, r: draw(st.text(max_size=6).filter(lambda k: k != r.kind)),
        "actor": lambda draw, r: draw(st.text(max_size=6).filter(lambda a: a != r.actor)),
        "subject": lambda draw, r: draw(
            st.none() | st.text(max_size=6).filter(lambda s: s != r.subject)
        ),
        "data": lambda draw, r: draw(
            _json.map(lambda v: canonical_json(v).decode()).filter(lambda d: d != r.data)
        ),
        "prev": lambda draw, r: draw(st.text("0123456789abcdef", min_size=64, max_size=64)),
        "digest": lambda draw, r: draw(st.text("0123456789abcdef", min_size=64, max_size=64)),
    }


@st.composite
def _tampered(draw: st.DrawFn) -> tuple[list[AuditRecord], ChainSigner, tuple[int, str]]:
    signer = ChainSigner(b"property") if draw(st.booleans()) else ChainSigner()
    records: list[AuditRecord] = []
    prev = GENESIS
    for seq in range(1, draw(st.integers(1, 8)) + 1):
        record = signer.seal(
            seq=seq,
            at=draw(st.floats(0, 2e9)),
            kind=draw(st.sampled_from(["decision", "alert", "rollback"])),
            actor=draw(st.text(max_size=4)),
            subject=draw(st.none() | st.text(max_size=4)),
            data=draw(_json),
            prev=prev,
        )
        records.append(record)
        prev = record.digest
    head = head_of(records)
    assert verify(records, signer, head=head).ok
    position = draw(st.integers(0, len(records) - 1))
    field = draw(st.sampled_from(sorted(_mutations())))
    original = records[position]
    value = _mutations()[field](draw, original)
    changed = dataclasses.replace(original, **{field: value})  # type: ignore[arg-type]
    if changed == original:  # a drawn prev or digest equal to the original (never, in practice)
        changed = dataclasses.replace(original, digest=original.digest[::-1] + "0")
    records[position] = changed
    return records, signer, head


@settings(max_examples=200, deadline=None)
@given(_tampered())
def test_any_single_field_change_is_noticed(
    case: tuple[list[AuditRecord], ChainSigner, tuple[int, str]],
) -> None:
    records, signer, head = case
    report = verify(records, signer)
    assert not report.ok
    assert report.problems
    assert not verify(records, signer, head=head).ok
