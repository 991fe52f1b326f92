"""The one rule for fitting a prompt and its output into a context (protocol.md §4.4).

The output is capped at half the context, so that a prompt always has room; the prompt keeps at most
`n_ctx - max_tokens - 8` tokens, the real-time reference's margin. The loop, every engine and the bench use
these functions; nothing else writes the arithmetic.
"""
from __future__ import annotations

from typing import Sequence

MIN_N_CTX = 64        # the smallest context any role runs with (CLI, models.toml and engines check it)
CONTEXT_MARGIN = 8    # the real-time reference keeps n_ctx - max_new_tokens - 8 prompt tokens


def output_limit(n_ctx: int, max_tokens: int) -> int:
    """`max_tokens`, capped at half the context."""
    return max(0, min(max_tokens, n_ctx // 2))


def prompt_budget(n_ctx: int, max_tokens: int) -> int:
    """How many prompt tokens fit beside an output of `max_tokens` (capped as above) and the margin."""
    return n_ctx - output_limit(n_ctx, max_tokens) - CONTEXT_MARGIN


def left_cut(ids: Sequence[int], n_ctx: int, max_tokens: int) -> tuple[list[int], int]:
    """The reference's cut: (the last `prompt_budget` ids, how many were dropped from the left)."""
    dropped = max(0, len(ids) - max(1, prompt_budget(n_ctx, max_tokens)))
    return list(ids[dropped:]), dropped
