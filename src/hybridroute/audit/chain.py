"""The pure core of the audit chain: canonical JSON, record digests and chain verification.

Each `AuditRecord` is sealed with a digest over its whole canonical form (every field but the
digest itself, `data` as the nested object it encodes) and names the digest of the record
before it in `prev`, from `GENESIS` (or from the anchor a retention purge left). The digest is
plain SHA-256, or HMAC-SHA256 when a key is configured: without the key, a record that was
edited cannot be sealed again so that it verifies.

`verify` walks stored records once, in storage order, and says which record is wrong and how:
edited, deleted, inserted, reordered, a broken link, malformed, or a tail cut off (when the
chain head was remembered separately). It never raises on bad records; it reports them. No I/O
happens here: the trail (`hybridroute.audit.trail`) reads and writes the store.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from hybridroute.storage.control import CHAIN_START, AuditRecord

__all__ = [
    "GENESIS",
    "Anchor",
    "ChainSigner",
    "IntegrityReport",
    "Problem",
    "canonical_json",
    "verify",
]

GENESIS = CHAIN_START
"""The `prev` of the very first record of a chain."""

_SORTED = orjson.OPT_SORT_KEYS
_MAX_NAMED_RANGES = 5


def canonical_json(value: object) -> bytes:
    """`value` as compact JSON with object keys sorted at every depth (tuples as arrays).

    Raises `ValueError` for NaN and infinities (JSON has no such numbers) and `TypeError` for
    what JSON cannot hold (non-string keys, integers beyond 64 bits, arbitrary objects)."""
    text = orjson.dumps(value, option=_SORTED)
    if b"null" in text:  # orjson writes NaN and ±inf as null: only then look for them
        _refuse_non_finite(value)
    return text


def _refuse_non_finite(value: object) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no JSON form")
    elif isinstance(value, dict):
        for item in value.values():
            _refuse_non_finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_non_finite(item)


def _finite_time(at: float) -> float:
    moment = float(at)
    if not math.isfinite(moment):
        raise ValueError(f"record time {at} is not finite")
    return moment


class ChainSigner:
    """Computes record digests: SHA-256 over the canonical serialisation of the whole record
    (every field except `digest`, `data` included as the parsed nested object, not as text),
    or HMAC-SHA256 with a key when one is configured."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and not key:
            raise ValueError("an audit key must not be empty (pass None for unkeyed digests)")
        self._key = key

    @property
    def keyed(self) -> bool:
        """Whether digests are HMACs (records cannot be re-sealed without the key)."""
        return self._key is not None

    def digest(
        self,
        *,
        seq: int,
        at: float,
        kind: str,
        actor: str,
        subject: str | None,
        data: object,
        prev: str,
    ) -> str:
        """The hex digest of a record with these fields."""
        return self._digest(seq, _finite_time(at), kind, actor, subject, canonical_json(data), prev)

    def seal(
        self,
        *,
        seq: int,
        at: float,
        kind: str,
        actor: str,
        subject: str | None,
        data: object,
        prev: str,
    ) -> AuditRecord:
        """The record with these fields, `data` stored as canonical JSON, and its digest."""
        moment = _finite_time(at)
        data_json = canonical_json(data)
        digest = self._digest(seq, moment, kind, actor, subject, data_json, prev)
        return AuditRecord(seq, moment, kind, actor, subject, data_json.decode(), prev, digest)

    def _digest(
        self,
        seq: int,
        at: float,
        kind: str,
        actor: str,
        subject: str | None,
        data_json: bytes,
        prev: str,
    ) -> str:
        """The digest from fields already checked, `data_json` canonical JSON."""
        body = orjson.dumps(
            {
                "seq": seq,
                "at": at,
                "kind": kind,
                "actor": actor,
                "subject": subject,
                "data": orjson.Fragment(data_json),
                "prev": prev,
            },
            option=_SORTED,
        )
        if self._key is None:
            return hashlib.sha256(body).hexdigest()
        return hmac.digest(self._key, body, "sha256").hex()


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where verification starts: the seq and digest of the last record before the first one
    held (after a retention purge), or (0, GENESIS) for a whole chain."""

    seq: int = 0
    digest: str = GENESIS


_PROBLEM_KINDS = frozenset(
    {"edited", "deleted", "inserted", "reordered", "broken_link", "malformed", "truncated"}
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the chain, located: the 0-based `position` in the records given
    (for a missing tail, the position just past the last record) and the record's `seq` (None
    when the record has no usable seq or the problem is a missing tail)."""

    position: int
    seq: int | None
    kind: str
    detail: str

    def __post_init__(self) -> None:
        if self.kind not in _PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")

    def as_dict(self) -> dict[str, object]:
        return {
            "position": self.position,
            "seq": self.seq,
            "kind": self.kind,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class IntegrityReport:
    """What `verify` found: `checked` records walked (fewer than given when it stopped at the
    problem cap), the seqs of the first and last records given, the last record's digest (the
    head to remember), the problems in walking order, and whether digests were keyed."""

    ok: bool
    checked: int
    first_seq: int | None
    last_seq: int | None
    head_digest: str | None
    problems: tuple[Problem, ...]
    keyed: bool

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready values."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "head_digest": self.head_digest,
            "keyed": self.keyed,
            "problems": [problem.as_dict() for problem in self.problems],
        }


def verify(
    records: Sequence[AuditRecord],
    signer: ChainSigner,
    *,
    anchor: Anchor = Anchor(),
    head: tuple[int, str] | None = None,
    max_problems: int = 100,
) -> IntegrityReport:
    """Check `records` (in storage order) against `anchor` and, when given, the remembered
    `head` (seq, digest) of the chain: every digest, every link, and seqs contiguous from
    `anchor.seq + 1` up to the head. Each problem is located and classified; after one the walk
    picks up again from the last good record, so separate problems are all reported, up to
    `max_problems` (then the walk stops). One pass, O(n) (plus one sort of the seqs)."""
    if max_problems < 1:
        raise ValueError("max_problems must be at least 1")
    walk = _Walk(records, signer, anchor, head, max_problems)
    checked = walk.run()
    if head is not None and checked == len(records) and not walk.full:
        walk.check_head(head)
    problems = tuple(walk.problems[:max_problems])
    first = walk.seqs[0] if records else None
    last = walk.seqs[-1] if records else None
    head_digest = records[-1].digest if records else None
    return IntegrityReport(
        ok=not problems,
        checked=checked,
        first_seq=first,
        last_seq=last,
        head_digest=head_digest if isinstance(head_digest, str) else None,
        problems=problems,
        keyed=signer.keyed,
    )


def _inspect(record: AuditRecord, signer: ChainSigner) -> tuple[str | None, bool]:
    """(why the record cannot be checked or None, whether its digest matches its contents)."""
    fault = _field_fault(record)
    if fault is not None:
        return fault, False
    try:
        data_json = orjson.dumps(orjson.loads(record.data), option=_SORTED)
    except orjson.JSONDecodeError:
        return "its data is not valid JSON", False
    try:
        digest = signer._digest(
            record.seq,
            float(record.at),
            record.kind,
            record.actor,
            record.subject,
            data_json,
            record.prev,
        )
    except (TypeError, ValueError) as exc:
        return f"its digest cannot be computed ({exc})", False
    return None, digest == record.digest


def _field_fault(record: AuditRecord) -> str | None:
    at: object = record.at
    subject: object = record.subject
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        return "its time is not a finite number"
    texts: tuple[object, ...] = (record.kind, record.actor, record.prev, record.digest)
    if not all(isinstance(text, str) for text in texts) or not isinstance(record.data, str):
        return "a text field holds something other than text"
    if subject is not None and not isinstance(subject, str):
        return "its subject is neither text nor null"
    return None


def _usable_seq(record: AuditRecord) -> int | None:
    seq: object = record.seq
    return seq if type(seq) is int else None


def _plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def _ranges(present: Sequence[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """The runs of [lo, hi] not in `present` (sorted, all within [lo, hi])."""
    runs: list[tuple[int, int]] = []
    start = lo
    for seq in present:
        if seq > start:
            runs.append((start, seq - 1))
        start = seq + 1
    if start <= hi:
        runs.append((start, hi))
    return runs


def _name_runs(runs: Sequence[tuple[int, int]]) -> str:
    """'record 7', 'records 7 to 9', 'records 3, 7 to 9 and 12' (at most a few runs named)."""
    count = sum(hi - lo + 1 for lo, hi in runs)
    parts = [str(lo) if lo == hi else f"{lo} to {hi}" for lo, hi in runs[:_MAX_NAMED_RANGES]]
    if len(runs) > _MAX_NAMED_RANGES:
        parts.append(f"{len(runs) - _MAX_NAMED_RANGES} more runs")
    named = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    return f"{_plural(count, 'record', 'records')} {named}"


class _Walk:
    """One verification: facts about every record gathered up front (digests, where each seq
    is, which duplicate the chain runs through), then one walk in storage order that keeps a
    cursor on the last record accepted into the chain."""

    def __init__(
        self,
        records: Sequence[AuditRecord],
        signer: ChainSigner,
        anchor: Anchor,
        head: tuple[int, str] | None,
        max_problems: int,
    ) -> None:
        self.records = records
        self.signer = signer
        self.anchor = anchor
        self.head_seq = None if head is None else head[0]
        self.max_problems = max_problems
        self.problems: list[Problem] = []
        self.seqs: list[int | None] = [_usable_seq(record) for record in records]
        self.faults: list[str | None] = []
        self.sound: list[bool] = []
        for record in records:
            fault, sound = _inspect(record, signer)
            self.faults.append(fault)
            self.sound.append(sound)
        self.linked_to: set[str] = set()  # every prev named by some record
        self.held: set[tuple[int, str]] = set()  # every (seq, digest) present
        positions: dict[int, list[int]] = {}
        for position, (record, seq) in enumerate(zip(records, self.seqs, strict=True)):
            prev: object = record.prev
            digest: object = record.digest
            if isinstance(prev, str):
                self.linked_to.add(prev)
            if seq is not None:
                positions.setdefault(seq, []).append(position)
                if isinstance(digest, str):
                    self.held.add((seq, digest))
        self.position_of: dict[int, int] = {}
        self.intruders: set[int] = set()
        for seq, held in positions.items():
            self.position_of[seq] = held[0] if len(held) == 1 else self._through(held)
            self.intruders.update(p for p in held if p != self.position_of[seq])
        self.ordered = sorted(positions)
        self.cursor_seq = anchor.seq
        self.cursor_digest = anchor.digest
        self.suspect = False  # the cursor's record was edited: its digest is no guide
        self.skipped_from: list[int] = []  # seq runs jumped over (reported), ascending
        self.skipped_to: list[int] = []

    @property
    def full(self) -> bool:
        return len(self.problems) >= self.max_problems

    # -- facts -----------------------------------------------------------------------------------

    def _through(self, held: list[int]) -> int:
        """Of several records with one seq, the one the chain runs through: sound, linked to by
        a later record, linked to its predecessor; the first of equals."""

        def score(position: int) -> tuple[bool, bool, bool, int]:
            digest: object = self.records[position].digest
            return (
                self.sound[position],
                isinstance(digest, str) and digest in self.linked_to,
                self._links_back(position),
                -position,
            )

        return max(held, key=score)

    def _links_back(self, position: int) -> bool:
        seq = self.seqs[position]
        assert seq is not None
        prev: object = self.records[position].prev
        if seq - 1 == self.anchor.seq:
            return prev == self.anchor.digest
        return isinstance(prev, str) and (seq - 1, prev) in self.held

    def _predecessor_digest(self, seq: int) -> str | None:
        """The digest a sound record `seq` must link to, when it can be known."""
        if seq - 1 == self.anchor.seq:
            return self.anchor.digest
        position = self.position_of.get(seq - 1)
        if position is None or not self.sound[position]:
            return None
        return self.records[position].digest

    def _belongs(self, position: int, seq: int) -> bool:
        """Whether a record that jumps ahead still looks like part of the chain."""
        if not self.sound[position]:
            return False
        if self.records[position].digest in self.linked_to:
            return True
        expected = self._predecessor_digest(seq)
        return expected is None or expected == self.records[position].prev

    # -- the walk --------------------------------------------------------------------------------

    def run(self) -> int:
        """Walk every record; how many were walked (fewer when the problem cap was reached)."""
        for position in range(len(self.records)):
            self._step(position)
            if self.full:
                return position + 1
        return len(self.records)

    def _add(self, position: int, seq: int | None, kind: str, detail: str) -> None:
        self.problems.append(Problem(position, seq, kind, detail))

    def _advance(self, seq: int, digest: str, *, suspect: bool) -> None:
        self.cursor_seq, self.cursor_digest, self.suspect = seq, digest, suspect

    def _cursor_name(self) -> str:
        if self.cursor_seq != self.anchor.seq:
            return f"record {self.cursor_seq}"
        return "the start of the chain" if self.anchor == Anchor() else "the anchor"

    def _step(self, position: int) -> None:
        seq = self.seqs[position]
        if seq is None:
            self._unnumbered(position)
            return
        expected = self.cursor_seq + 1
        if seq != expected and self._renumbered(position, expected):
            return
        if position in self.intruders:
            other = self.position_of[seq]
            self._add(
                position,
                seq,
                "inserted",
                f"record {seq} at position {position} was inserted: the chain runs through "
                f"the other record {seq}, at position {other}",
            )
        elif seq <= self.anchor.seq:
            self._add(
                position,
                seq,
                "inserted",
                f"record {seq} at position {position} was inserted: verification starts after "
                f"record {self.anchor.seq}, so no record {seq} belongs here",
            )
        elif self.head_seq is not None and seq > self.head_seq:
            self._add(
                position,
                seq,
                "inserted",
                f"record {seq} at position {position} was inserted: the chain ends at the "
                f"remembered head, record {self.head_seq}",
            )
        elif seq == expected:
            self._in_order(position, seq)
        elif seq > expected:
            self._ahead(position, seq)
        else:
            self._behind(position, seq)

    def _content(self, position: int, seq: int) -> bool:
        """Report a record that is malformed or whose digest does not match; whether sound."""
        fault = self.faults[position]
        if fault is not None:
            self._add(position, seq, "malformed", f"record {seq} is malformed: {fault}")
            return False
        if not self.sound[position]:
            self._add(
                position,
                seq,
                "edited",
                f"record {seq} was edited: its digest does not match its contents",
            )
            return False
        return True

    def _check_link(self, position: int, seq: int, expected: str | None, to: str) -> None:
        if expected is None or self.records[position].prev == expected:
            return
        self._add(
            position,
            seq,
            "broken_link",
            f"record {seq} does not link to {to}: its prev is not that digest, so one of the "
            "two was replaced",
        )

    def _unnumbered(self, position: int) -> None:
        self._add(
            position,
            None,
            "malformed",
            f"the record at position {position} is malformed: its seq is not an integer",
        )
        # It stands in for the expected record when it is the last or the next one follows it.
        following = position + 1
        if following == len(self.seqs) or self.seqs[following] == self.cursor_seq + 2:
            self._advance(self.cursor_seq + 1, self.records[position].digest, suspect=True)

    def _renumbered(self, position: int, expected: int) -> bool:
        """Whether a record with an unexpected seq is the expected one with its seq edited."""
        if self.faults[position] is not None or self.sound[position]:
            return False
        record = self.records[position]
        try:
            digest = self.signer.digest(
                seq=expected,
                at=record.at,
                kind=record.kind,
                actor=record.actor,
                subject=record.subject,
                data=orjson.loads(record.data),
                prev=record.prev,
            )
        except (TypeError, ValueError):
            return False
        if digest != record.digest:
            return False
        self._add(
            position,
            record.seq,
            "edited",
            f"record {expected} was edited: its seq was changed to {record.seq}",
        )
        if not self.suspect:
            self._check_link(position, expected, self.cursor_digest, self._cursor_name())
        self._advance(expected, record.digest, suspect=False)
        return True

    def _in_order(self, position: int, seq: int) -> None:
        record = self.records[position]
        sound = self._content(position, seq)
        if sound and not self.suspect and record.prev != self.cursor_digest:
            following = position + 1
            if (
                following < len(self.seqs)
                and self.seqs[following] == seq + 1
                and self.records[following].prev != record.digest
            ):  # unlinked on both sides: this record, not its neighbours, was swapped
                self._add(
                    position,
                    seq,
                    "broken_link",
                    f"record {seq} was replaced: it does not link to {self._cursor_name()}, "
                    f"and record {seq + 1} does not link to it",
                )
                self._advance(seq, record.digest, suspect=True)
                return
            self._check_link(position, seq, self.cursor_digest, self._cursor_name())
        self._advance(seq, record.digest, suspect=not sound)

    def _ahead(self, position: int, seq: int) -> None:
        """A record whose seq skips past the expected one: an intruder (when the next record
        carries on from the cursor), or records deleted before it or placed after it."""
        lo, hi = self.cursor_seq + 1, seq - 1
        following = position + 1
        if (
            following < len(self.seqs)
            and self.seqs[following] == lo
            and following not in self.intruders
            and not self._belongs(position, seq)
        ):
            self._add(
                position,
                seq,
                "inserted",
                f"record {seq} at position {position} was inserted: the chain goes on from "
                f"{self._cursor_name()} to record {lo} after it",
            )
            return
        start = bisect.bisect_left(self.ordered, lo)
        later = self.ordered[start : bisect.bisect_right(self.ordered, hi)]
        missing = _ranges(later, lo, hi)
        if missing:
            named = _name_runs(missing)
            verb = "is" if named.startswith("record ") else "are"
            self._add(
                position,
                seq,
                "deleted",
                f"{named} {verb} missing before record {seq} (position {position}): deleted",
            )
        if later:
            self._add(
                position,
                seq,
                "reordered",
                f"record {seq} at position {position} is out of order: it comes before "
                f"record {later[0]}, which is at position {self.position_of[later[0]]}",
            )
        self.skipped_from.append(lo)
        self.skipped_to.append(hi)
        sound = self._content(position, seq)
        if sound:
            self._check_link(position, seq, self._predecessor_digest(seq), f"record {seq - 1}")
        self._advance(seq, self.records[position].digest, suspect=not sound)

    def _behind(self, position: int, seq: int) -> None:
        """A record that comes after one with a higher seq: already reported when the walk
        jumped over it; checked against its predecessor by seq; the cursor stays."""
        run = bisect.bisect_right(self.skipped_from, seq) - 1
        if run < 0 or self.skipped_to[run] < seq:
            self._add(
                position,
                seq,
                "reordered",
                f"record {seq} at position {position} is out of order: it comes after "
                f"record {self.cursor_seq}",
            )
        if self._content(position, seq):
            name = "the anchor" if seq - 1 == self.anchor.seq else f"record {seq - 1}"
            self._check_link(position, seq, self._predecessor_digest(seq), name)

    # -- the end ---------------------------------------------------------------------------------

    def check_head(self, head: tuple[int, str]) -> None:
        """Compare the end of the walk with the head remembered apart from the records."""
        head_seq, head_digest = head
        end = len(self.records)
        if head_seq > self.cursor_seq:
            named = _name_runs([(self.cursor_seq + 1, head_seq)])
            verb = "is" if head_seq == self.cursor_seq + 1 else "are"
            self._add(
                end,
                None,
                "truncated",
                f"the chain was truncated: {named} {verb} missing from the end (the remembered "
                f"head is record {head_seq})",
            )
            return
        if head_seq <= self.anchor.seq:
            held = self.anchor.digest if head_seq == self.anchor.seq else None
            position, seq, name = end, None, f"the anchor (record {head_seq})"
        else:
            found = self.position_of.get(head_seq)
            held = None if found is None else self.records[found].digest
            position, seq, name = found or 0, head_seq, f"record {head_seq}"
        if held is not None and held != head_digest:
            self._add(
                position,
                seq,
                "edited",
                f"{name} is not the remembered head: it was replaced after it was written",
            )
