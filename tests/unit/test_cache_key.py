"""The cache key: what makes two requests the same, what keeps them apart, and the tags."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from hybridroute.caching import CacheScope, cache_key, tags_for
from hybridroute.types import ChatMessage, GenerationRequest, Priority

SCOPE = CacheScope(tenant="acme", residency="eu")


def request(**changes: object) -> GenerationRequest:
    base = GenerationRequest(
        operation_type="standard",
        priority=Priority.MEDIUM,
        system=("You are terse.",),
        messages=(
            ChatMessage("user", "What is 2 + 2?"),
            ChatMessage("assistant", "4"),
            ChatMessage("user", "And 3 + 3?"),
        ),
        max_tokens=256,
        temperature=0.2,
        top_p=0.9,
        stop=("\n\n",),
        decision_id="d-1",
        requested_model="claude-sonnet",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def key(req: GenerationRequest | None = None, scope: CacheScope = SCOPE) -> str:
    return cache_key(req if req is not None else request(), scope)


def test_the_key_is_a_hex_sha256_and_the_same_content_gives_the_same_key():
    assert re.fullmatch(r"[0-9a-f]{64}", key())
    assert key(request()) == key(request())


def test_decision_id_and_priority_do_not_change_the_key():
    assert key(request(decision_id="d-2", priority=Priority.CRITICAL)) == key()


def test_whitespace_at_the_ends_of_texts_is_ignored():
    padded = request(
        system=("  You are terse.\n",),
        messages=(
            ChatMessage("user", "\tWhat is 2 + 2?  "),
            ChatMessage("assistant", " 4\n"),
            ChatMessage("user", "And 3 + 3?\n\n"),
        ),
    )
    assert key(padded) == key()


def test_whitespace_inside_a_text_is_kept():
    changed = request(messages=(ChatMessage("user", "What  is 2 + 2?"), *request().messages[1:]))
    assert key(changed) != key()


def test_nfc_variants_give_the_same_key():
    composed = request(messages=(ChatMessage("user", "caf\u00e9"),))
    decomposed = request(messages=(ChatMessage("user", "cafe\u0301"),))
    assert key(composed) == key(decomposed)
    system_composed = request(system=("r\u00e9sum\u00e9",))
    system_decomposed = request(system=("re\u0301sume\u0301",))
    assert key(system_composed) == key(system_decomposed)


def test_equal_floats_give_the_same_key_whatever_their_spelling():
    assert key(request(temperature=0.7)) == key(request(temperature=float("0.70")))
    assert key(request(temperature=0)) == key(request(temperature=0.0))
    assert key(request(temperature=-0.0)) == key(request(temperature=0.0))
    assert key(request(top_p=1)) == key(request(top_p=1.0))


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("operation type", {"operation_type": "background"}),
        ("model", {"requested_model": "claude-haiku"}),
        ("system text", {"system": ("You are verbose.",)}),
        ("system split", {"system": ("You are", "terse.")}),
        ("no system", {"system": ()}),
        ("max_tokens", {"max_tokens": 257}),
        ("temperature 0.8", {"temperature": 0.8}),
        ("temperature None", {"temperature": None}),
        ("top_p", {"top_p": 0.95}),
        ("top_p None", {"top_p": None}),
        ("stop", {"stop": ("\n",)}),
        ("no stop", {"stop": ()}),
        ("stop order", {"stop": ("a", "b")}),
    ],
)
def test_any_change_of_content_changes_the_key(name: str, changes: dict[str, object]):
    assert key(request(**changes)) != key(), name


def test_none_and_zero_are_different():
    assert key(request(temperature=None)) != key(request(temperature=0.0))
    assert key(request(top_p=None)) != key(request(top_p=0.0))
    assert key(request(stop=("a", "b"))) != key(request(stop=("b", "a")))


def test_messages_role_text_and_order_are_part_of_the_key():
    base = request().messages
    variants = [
        (ChatMessage("user", "What is 2 + 5?"), *base[1:]),  # a message's text
        (ChatMessage("system", "What is 2 + 2?"), *base[1:]),  # a role
        (base[2], base[1], base[0]),  # the order
        base[:2],  # one fewer
        (*base, ChatMessage("user", "")),  # one more, even empty
    ]
    keys = {key(request(messages=m)) for m in variants}
    assert len(keys) == len(variants)
    assert key() not in keys


def test_texts_are_not_joined_so_a_split_message_is_a_different_request():
    one = request(messages=(ChatMessage("user", "ab"),))
    two = request(messages=(ChatMessage("user", "a"), ChatMessage("user", "b")))
    assert key(one) != key(two)


def test_tenant_and_residency_keep_the_same_request_apart():
    keys = {
        key(scope=CacheScope("acme", "eu")),
        key(scope=CacheScope("acme", "us")),
        key(scope=CacheScope("acme", None)),
        key(scope=CacheScope("globex", "eu")),
        key(scope=CacheScope("default", None)),
    }
    assert len(keys) == 5


def test_no_separator_trick_makes_two_scopes_collide():
    assert key(scope=CacheScope("a", "b")) != key(scope=CacheScope("a|b", None))
    assert key(scope=CacheScope("a", "b|c")) != key(scope=CacheScope("a|b", "c"))
    assert key(scope=CacheScope("None", None)) != key(scope=CacheScope("None", "None"))
    assert key(scope=CacheScope("", "")) != key(scope=CacheScope("", None))


def test_tags_name_the_tenant_and_the_operation():
    assert tags_for(request(), SCOPE) == ("tenant:acme", "operation:standard")
    assert tags_for(request(operation_type="emergency"), CacheScope("default", None)) == (
        "tenant:default",
        "operation:emergency",
    )
