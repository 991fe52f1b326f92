"""One role's generation inside a run: encoding, the trunk prefix, fitting the prompt into the context,
grammar capability, streaming, accounting, and the planner's route completion."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from ..engine.base import Generation, RoleEngine
from ..engine.context import output_limit, prompt_budget
from ..errors import ConfigError
from ..events import Event, Notice, Token, Usage
from ..protocol import Prompt, Turn
from .driver import Run

Render = Callable[[Sequence[Turn]], Prompt]


@dataclass(frozen=True)
class Called:
    """A finished generation and the prompt it was given (ids as sent, leading tokens under the trunk)."""

    gen: Generation
    seconds: float
    ids: list[int]
    trunk: int


class RoleCalls:
    """Every generation of one run goes through here."""

    def __init__(self, run: Run):
        self.run = run
        self.unenforced: set[str] = set()   # roles told (by a Notice) that their server decodes grammar-free
        self._trunk_ids: tuple[str, list[int]] | None = None   # the last trunk encoded, to encode it once a step

    def max_tokens(self, role: str, engine_role: str | None = None) -> int:
        """The role's limit, capped by the one context rule (engine/context.py)."""
        return output_limit(self.run.roles[engine_role or role].n_ctx, self.run.limits.max_tokens(role))

    def enforces(self, role: str) -> bool:
        """Whether `role`'s engine enforces grammars (a remote server may not; local engines always do)."""
        return self.run.roles[role].enforces_grammar

    def encode(self, engine: RoleEngine, prompt: Prompt) -> list[int]:
        return self.run.proto.encode(prompt, engine.tokenize, engine.bos_id, engine.eos_id)

    def prompt(self, step: int, role: str, render: Render, history: Sequence[Turn], *,
               trunk: Render | None = None, grammar: str | None = None) -> Iterator[Event]:
        """Render `history` into the role's prompt, fit it, generate; returns a Called.

        On overflow, by default the oldest whole steps after the query go (the instructions, tool docs and
        query stay); Limits.truncation = "left" keeps the reference's left cut, also the fallback when even
        the head does not fit. `trunk` renders the shared head, which matters only to an engine with a trunk
        adapter (`has_trunk`): it evaluates those leading tokens under that adapter."""
        engine = self.run.roles[role]
        budget = self._budget(role)
        history = list(history)
        ids = self.encode(engine, render(history))
        if len(ids) > budget and self.run.limits.truncation == "head":
            n_turns = len(history)
            while len(ids) > budget and len(history) > 1:
                del history[1]
                while len(history) > 1 and history[1].role not in ("user", "assistant", "planner"):
                    del history[1]     # a step leaves whole: plan, call and observation together
                ids = self.encode(engine, render(history))
            if len(history) < n_turns:
                yield Notice(step=step, role=role, code="context_truncated",
                             text=f"dropped the {n_turns - len(history)} oldest history turn(s) to fit n_ctx "
                                  f"{engine.n_ctx}; instructions, tool docs and the query kept")
        n_trunk = 0
        if trunk is not None and engine.has_trunk:
            # a common prefix, not the trunk's own length: a token may merge across the boundary
            n_trunk = _common_prefix(self._encode_trunk(engine, trunk(history)), ids)
        return (yield from self.ids(step, role, ids, trunk=n_trunk, grammar=grammar))

    def _encode_trunk(self, engine: RoleEngine, trunk: Prompt) -> list[int]:
        if self._trunk_ids is None or self._trunk_ids[0] != trunk:
            self._trunk_ids = (trunk, self.encode(engine, trunk))
        return self._trunk_ids[1]

    def _budget(self, role: str, engine_role: str | None = None) -> int:
        engine = self.run.roles[engine_role or role]
        budget = prompt_budget(engine.n_ctx, self.max_tokens(role, engine_role))
        if budget < 1:
            raise ConfigError(f"{engine_role or role}: n_ctx {engine.n_ctx} leaves no room for a prompt "
                              f"with max_tokens {self.max_tokens(role, engine_role)}")
        return budget

    def ids(self, step: int, role: str, ids: list[int], *, trunk: int = 0, grammar: str | None = None,
            engine_role: str | None = None) -> Iterator[Event]:
        """Generate from prompt ids (left-cut to fit); returns a Called."""
        key = engine_role or role
        engine = self.run.roles[key]
        max_tokens = self.max_tokens(role, engine_role)
        keep = self._budget(role, engine_role)
        if len(ids) > keep:
            yield Notice(step=step, role=key, code="context_truncated",
                         text=f"prompt of {len(ids)} tokens cut to its last {keep} to fit n_ctx {engine.n_ctx}")
            trunk = max(0, trunk - (len(ids) - keep))
            ids = ids[-keep:]
        if grammar is not None and not self.enforces(key):
            grammar = None      # a server without grammars: decoded free, its calls validated as unconstrained
            if key not in self.unenforced:
                self.unenforced.add(key)
                yield Notice(step=step, role=key, code="grammar_unenforced",
                             text=f"{key} runs on a server that cannot enforce grammars: it decodes unconstrained "
                                  f"and its output is validated as in an unconstrained run")
        t = time.monotonic()
        stream = None if self.run.on_token is None else _TokenText(engine, step, key, self.run.on_token)
        gen = engine.generate(ids, max_tokens=max_tokens, grammar=grammar, cancel=self.run.stop, trunk=trunk,
                              on_token=None if stream is None else stream.push)
        if stream is not None:
            stream.finish(gen.text)
        seconds = time.monotonic() - t
        self.run.usage[key] = self.run.usage.get(key, Usage()) + Usage.of(gen)
        if gen.stop_reason == "length":
            yield Notice(step=step, role=key, code="max_tokens",
                         text=f"{role} output stopped at max_tokens={max_tokens}")
        if gen.n_truncated:
            yield Notice(step=step, role=key, code="context_truncated",
                         text=f"engine dropped {gen.n_truncated} prompt tokens to fit n_ctx {engine.n_ctx}")
        if gen.stop_reason == "cancelled" or self.run.stop.is_set():
            self.run.halt()
        return Called(gen, seconds, ids, trunk)

    def complete_route(self, step: int, called: Called, grammar: str) -> Iterator[Event]:
        """Continue the planner's output (its EOS dropped) under a route grammar; returns a Called."""
        eos = self.run.roles["planner"].eos_id
        tokens = list(called.gen.tokens)
        if tokens and tokens[-1] == eos:
            tokens.pop()
        self.run.check()
        return (yield from self.ids(step, "route", called.ids + tokens, grammar=grammar, engine_role="planner",
                                    trunk=called.trunk))

    def reroute(self, step: int, called: Called, thought: str, grammar: str) -> Iterator[Event]:
        """Decode a route marker after `thought` (the planner's output up to its marker), reusing the tokens it
        was decoded as where they are a prefix of it; returns a Called."""
        engine = self.run.roles["planner"]
        tokens = [t for t in called.gen.tokens if t != engine.eos_id]
        k = len(tokens)
        while k and len(engine.detokenize(tokens[:k])) > len(thought):
            k -= 1
        head = engine.detokenize(tokens[:k])
        if not thought.startswith(head):   # not prefix-stable: tokenize the thought afresh
            k, head = 0, ""
        rest = thought[len(head):]
        self.run.check()
        ids = called.ids + tokens[:k] + (engine.tokenize(rest) if rest else [])
        return (yield from self.ids(step, "route", ids, grammar=grammar, engine_role="planner", trunk=called.trunk))


class _TokenText:
    """An engine's output token ids → Token events of newly decoded text, whole characters only (a token
    that ends inside a UTF-8 sequence decodes to U+FFFD and waits for the rest)."""

    def __init__(self, engine: RoleEngine, step: int, role: str, emit: Callable[[Token], None]):
        self.engine, self.step, self.role, self.emit = engine, step, role, emit
        self.ids: list[int] = []
        self.sent = ""

    def push(self, token: int) -> None:
        self.ids.append(token)
        text = self.engine.detokenize(self.ids)   # whole prefix: merges across tokens decode right
        if not text.endswith("\ufffd"):
            self._send(text)

    def finish(self, text: str) -> None:
        self._send(text)

    def _send(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            delta, self.sent = text[len(self.sent):], text
            self.emit(Token(step=self.step, role=self.role, text=delta))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n, limit = 0, min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n
