"""The simulators' deterministic "model": an echo answer, a word-count tokenizer, max-token cuts.

Both simulators answer with `simulated_answer`, so a test or a demo can tell from the text alone
which upstream (and which model, region or operation) produced a response.
"""

from __future__ import annotations

__all__ = ["ECHO_LIMIT", "count_tokens", "simulated_answer"]

ECHO_LIMIT = 200


def count_tokens(text: str) -> int:
    """Whitespace-separated words; a non-empty text counts at least one token."""
    if not text:
        return 0
    return max(1, len(text.split()))


def simulated_answer(
    source: str, last_user_text: str, max_tokens: int | None
) -> tuple[str, str, int]:
    """(text, finish_reason, output_tokens) for the answer `source` gives to `last_user_text`.

    finish_reason is "length" when `max_tokens` cut the answer short, else "stop".
    """
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    echo = " ".join(last_user_text.split())[:ECHO_LIMIT]
    text = f"Simulated answer from {source}: {echo}"
    words = text.split()
    if max_tokens is not None and len(words) > max_tokens:
        return " ".join(words[:max_tokens]), "length", max_tokens
    return text, "stop", len(words)
