"""A scripted engine for tests: per-role queues of outputs, a record of every prompt, cancel support."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, Union

from .base import Generation, TokenCallback
from .context import left_cut

BOS_ID, EOS_ID = 1, 2
_OFFSET = 3  # ids 0-2 are unk/bos/eos, so character c is id ord(c) + 3


@dataclass(frozen=True)
class Scripted:
    """One scripted output: `text` after `delay` seconds (cancel honoured meanwhile), or raise `error`.
    `token_delay`: seconds between output tokens (one per character), so streaming shows them arrive."""

    text: str = ""
    delay: float = 0.0
    error: BaseException | None = None
    token_delay: float = 0.0


Output = Union[str, Scripted, Callable[[str], Union[str, Scripted]]]


class FakeEngine:
    """Implements engine.base.RoleEngine with a character tokenizer; `grammar` is recorded, not enforced.

    `prompts` holds each prompt decoded back to text (BOS dropped, EOS shown as `</s>`), so tests can
    compare the exact strings the loop sent; `grammars` and `max_tokens` hold the other arguments.
    """

    bos_id = BOS_ID
    eos_id = EOS_ID
    enforces_grammar = True     # recorded, not enforced: the loop's behaviour is that of a constraining engine

    def __init__(self, outputs: Iterable[Output] = (), *, n_ctx: int = 1 << 20, name: str = "fake",
                 has_trunk: bool = False):
        self.outputs: deque[Output] = deque(outputs)
        self.has_trunk = has_trunk      # True: the loop passes generate(trunk=n), recorded in `trunks`
        self.trunks: list[int] = []
        self.n_ctx = n_ctx
        self.name = name
        self.prompts: list[str] = []
        self.prompt_ids: list[list[int]] = []
        self.grammars: list[str | None] = []
        self.max_tokens: list[int] = []
        self._held: list[int] = []  # what a real context's KV cache would hold
        self._lock = threading.Lock()

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) + _OFFSET for c in text]

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join("</s>" if i == EOS_ID else "" if i == BOS_ID else chr(i - _OFFSET) for i in ids)

    def push(self, *outputs: Output) -> None:
        self.outputs.extend(outputs)

    def generate(self, prompt: Sequence[int], *, max_tokens: int, grammar: str | None = None,
                 cancel: threading.Event | None = None, trunk: int = 0,
                 on_token: TokenCallback | None = None) -> Generation:
        with self._lock:  # one generation per context at a time, like a real one
            self.trunks.append(trunk)
            return self._generate(list(prompt), max_tokens, grammar, cancel, on_token)

    def _generate(self, prompt, max_tokens, grammar, cancel, on_token=None) -> Generation:
        self.prompts.append(self.detokenize(prompt))
        self.prompt_ids.append(prompt)
        self.grammars.append(grammar)
        self.max_tokens.append(max_tokens)
        if not self.outputs:
            raise RuntimeError(f"FakeEngine({self.name}): no scripted output left")
        out = self.outputs.popleft()
        if callable(out):
            out = out(self.prompts[-1])
        if isinstance(out, str):
            out = Scripted(out)
        prompt, truncated = left_cut(prompt, self.n_ctx, max_tokens)
        reused = 0
        for a, b in zip(prompt, self._held):
            if a != b:
                break
            reused += 1
        reused = max(0, min(reused, len(prompt) - 1))  # the last prompt token is always evaluated for logits
        t0 = time.monotonic()
        stop = "eos"
        if out.delay and not _wait(t0 + out.delay, cancel):
            stop = "cancelled"
        if out.error is not None:
            raise out.error
        tokens = [] if stop == "cancelled" else self.tokenize(out.text)
        if len(tokens) > max_tokens:
            tokens, stop = tokens[:max_tokens], "length"
        if on_token is not None or out.token_delay:
            for i, t in enumerate(tokens):
                if out.token_delay and not _wait(time.monotonic() + out.token_delay, cancel):
                    tokens, stop = tokens[:i], "cancelled"
                    break
                if on_token is not None:
                    on_token(t)
        self._held = prompt + tokens
        return Generation(
            text=self.detokenize(tokens), tokens=tuple(tokens), stop_reason=stop, n_prompt=len(prompt),
            n_reused=reused, n_evaluated=len(prompt) - reused, n_generated=len(tokens), n_truncated=truncated,
            decode_seconds=time.monotonic() - t0,
        )


def _wait(end: float, cancel: threading.Event | None) -> bool:
    """Sleep until `end`; False as soon as `cancel` is set."""
    while time.monotonic() < end:
        if cancel is not None and cancel.is_set():
            return False
        time.sleep(0.005)
    return True


def fake_roles(planner: Iterable[Output] = (), caller: Iterable[Output] = (),
               summarizer: Iterable[Output] = (), **kwargs) -> dict[str, FakeEngine]:
    """{"planner": FakeEngine(...), "caller": ..., "summarizer": ...} with the given scripts."""
    return {role: FakeEngine(outs, name=role, **kwargs)
            for role, outs in (("planner", planner), ("caller", caller), ("summarizer", summarizer))}
