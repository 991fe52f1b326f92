"""The contract between the loop and an inference engine (llama.cpp or a scripted fake).

The engine is protocol-agnostic: it takes token ids and returns text. The protocol module decides how a
prompt string becomes ids (e.g. α-UMi's literal `</s>` → EOS with per-segment SentencePiece encoding).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from ..errors import ConfigError

# Streaming: called with each output token id as it is produced (sampled or forced by a grammar), from the
# generating thread, before generate() returns; an exception it raises propagates out of generate().
TokenCallback = Callable[[int], None]


@dataclass(frozen=True)
class Sampling:
    """Per-role sampling. temperature 0 means greedy; the α-UMi real-time reference used T=0.5, top_p 1."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0          # 0 = disabled (llama-cpp-python's own default of 40 is not the reference's)
    min_p: float = 0.0
    seed: int = 0

    def __post_init__(self):
        # llama.cpp aborts the process (SIGABRT) on a NaN or infinite temperature; refuse such values here
        for name in ("temperature", "top_p", "min_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"sampling: {name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class Generation:
    """One role's answer to one prompt, with the accounting the event stream reports."""

    text: str
    tokens: tuple[int, ...]
    stop_reason: str          # "eos" | "length" | "stop" | "cancelled"
    n_prompt: int             # prompt length in tokens (after any truncation)
    n_reused: int             # prompt tokens kept from the KV cache (longest common prefix)
    n_evaluated: int          # prompt tokens actually evaluated
    n_generated: int          # tokens produced (sampled or forced)
    n_forced: int = 0         # of n_generated, tokens appended without sampling (grammar had one choice)
    n_truncated: int = 0      # prompt tokens dropped from the left to fit n_ctx
    prompt_seconds: float = 0.0
    decode_seconds: float = 0.0


class RoleEngine(Protocol):
    """One role's context: its own KV cache, sampler chain and (optional) LoRA adapter. Everything the loop
    uses is declared here; the llama (engine/llama.py), remote (engine/remote.py) and fake (engine/fake.py)
    engines implement all of it.

    `has_trunk`: generate(trunk=n) evaluates the prompt's first n tokens under a trunk adapter of its own (the
    others ignore `trunk`). `enforces_grammar`: False for a remote server that cannot enforce GBNF; the loop
    then passes it no grammar and validates its output as in an unconstrained run."""

    bos_id: int
    eos_id: int
    n_ctx: int
    has_trunk: bool
    enforces_grammar: bool

    def tokenize(self, text: str) -> list[int]:
        """Plain text → ids: no BOS, no special-token parsing, the vocab's own space-prefix rule."""

    def detokenize(self, ids: Sequence[int]) -> str: ...

    def generate(
        self,
        prompt: Sequence[int],
        *,
        max_tokens: int,
        grammar: str | None = None,
        cancel: threading.Event | None = None,
        trunk: int = 0,
        on_token: TokenCallback | None = None,
    ) -> Generation:
        """Evaluate `prompt` (reusing the cached common prefix; prompts longer than engine/context.py allows are
        left-cut) and decode until EOS / max_tokens / cancel. `on_token` streams the output: each token id of
        `Generation.tokens`, in order, as it is produced."""
