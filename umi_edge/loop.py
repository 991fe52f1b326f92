"""The collaborative loop: planner → (give up | summarizer | caller → tool → observation), as a generator
of typed events. The error policy lives here, in one place: faults of the model (unparseable call,
unknown tool, bad arguments, a tool that raised, hung or returned non-JSON) become observations the
model sees; faults of our code or the environment (engine failure, bad configuration) end the run
with an Error event and Outcome(status="error")."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from .engine.base import Generation, RoleEngine
from .errors import Cancelled, ConfigError
from .events import Answer, Call, Error, Event, GiveUp, Notice, Observation, Outcome, Plan, Token, Usage
from .protocol import DEFAULT as DEFAULT_PROTOCOL
from .protocol import Turn, get_protocol
from .tools import ToolSet, as_toolset
from .tools.isolation import ISOLATIONS
from .events import ToolsOffered
from .tools.retrieval import ToolRetriever

TEAM_ROLES = ("planner", "caller", "summarizer")
SINGLE_ROLES = ("backbone",)
CONTEXT_MARGIN = 8  # the real-time reference keeps n_ctx - max_new_tokens - 8 prompt tokens (protocol.md §4.4)


@dataclass(frozen=True)
class Limits:
    """Per-run limits; each default says where it comes from."""

    max_steps: int = 8                  # planner turns; ModelScope's linear driver stops at 10, DFSDT paths at 4
    planner_tokens: int = 512           # max_new_tokens of every reference runtime (protocol.md §4.5)
    caller_tokens: int = 512
    summarizer_tokens: int = 512
    backbone_tokens: int = 512          # the single-model baseline: thought + call or answer in one output
    route_tokens: int = 20              # "\n Next: conclusion." is 19 bytes: fits even a byte-level vocab
    budget_seconds: float | None = 600.0  # wall clock per run, so a rambling model cannot hold the device
    tool_timeout: float = 30.0          # per call; local tools answer in ms, a hung one must not stall the run
    tool_isolation: str = "auto"        # auto / thread / process: where calls run (umi_edge.tools.isolation)

    def __post_init__(self):
        for name in ("max_steps", "planner_tokens", "caller_tokens", "summarizer_tokens", "backbone_tokens",
                     "route_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"limits: {name} must be a positive integer, not {getattr(self, name)!r}")
        for name in ("budget_seconds", "tool_timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or not 0 < value < math.inf):
                raise ConfigError(f"limits: {name} must be a positive, finite number of seconds, not {value!r}")
        if self.tool_timeout is None:
            raise ConfigError("limits: tool_timeout must be a positive number of seconds, not None")
        if self.tool_isolation not in ISOLATIONS:
            raise ConfigError(f"limits: tool_isolation must be one of {', '.join(ISOLATIONS)}, "
                              f"not {self.tool_isolation!r}")

    def max_tokens(self, role: str) -> int:
        return {"planner": self.planner_tokens, "caller": self.caller_tokens, "summarizer": self.summarizer_tokens,
                "backbone": self.backbone_tokens, "route": self.route_tokens}[role]


ROUTE_KINDS = ("caller", "conclusion", "give_up")


@dataclass(frozen=True)
class Choice:
    """What the run's first planner turn may do (OpenAI's `tool_choice`): the routes it may take and the tools
    its call may name (None: any). A route the model did not pick is completed under a grammar of the allowed
    ones; the named tools bound the call grammar, so they need a constrained run."""

    routes: tuple[str, ...] = ROUTE_KINDS
    tools: tuple[str, ...] | None = None

    def __post_init__(self):
        bad = [r for r in self.routes if r not in ROUTE_KINDS]
        if bad or not self.routes:
            raise ConfigError(f"choice: routes must be some of {', '.join(ROUTE_KINDS)}, not {list(self.routes)!r}")
        if self.tools is not None and ("caller" not in self.routes or not self.tools):
            raise ConfigError("choice: naming tools needs the caller route and at least one tool")


def run_team(query: str, roles: Mapping[str, RoleEngine], tools: Any, *, protocol: Any = None,
             limits: Limits = Limits(), constrained: bool = True, complete_route: bool | None = None,
             tool_top_k: int = 0,
             cancel: threading.Event | None = None,
             on_token: Callable[[Token], None] | None = None,
             history: Sequence[Turn] = (), choice: Choice | None = None) -> Iterator[Event]:
    """Run one task; yields events, the last one always an Outcome.

    `roles`: "planner", "caller", "summarizer" → engines. `tools`: a ToolSet or anything `as_toolset` takes.
    `protocol`: a protocol object or registered name (default alpha-umi/toolbench-v1). `constrained`: the
    caller decodes under the tool-call grammar. `complete_route` (default: same as `constrained`): a planner
    output without a route marker is completed under the route grammar instead of defaulting to the caller.
    `cancel`: set it from any thread; checked between stages and passed to the engine during generation.
    `tool_top_k`: with a larger tool set, the planner and the caller see only the k tools ranked best against the
    query and the history (umi_edge.tools.retrieval), recomputed every step; 0 offers every tool.
    `on_token`: streaming; called with a Token event for each piece of text a role decodes, as it decodes.
    `history`: a task resumed (e.g. a conversation rebuilt from a chat API): the turns after `user: query`, which
    the run continues from; steps are numbered on from the planner turns since the last user turn.
    `choice`: constrains the run's first planner turn (see Choice).
    """
    run = _Run(query, roles, tools, protocol, limits, constrained,
               constrained if complete_route is None else complete_route, cancel, tool_top_k)
    run.on_token = on_token
    run.history, run.choice = tuple(history), choice
    yield from run.events()


class _Halt(Exception):
    """Internal: cancellation or the wall-clock budget stopped the run."""


class _Run:
    def __init__(self, query, roles, tools, protocol, limits, constrained, complete_route, cancel, tool_top_k=0):
        self.query = query
        self.roles = roles
        self.tools_arg = tools
        self.protocol_arg = protocol
        self.limits = limits
        self.constrained = constrained
        self.complete_route = complete_route
        self.user_cancel = cancel
        self.tool_top_k = tool_top_k
        self._offered: tuple[str, ...] = ()   # the names the planner was offered at this step
        self.stop = threading.Event()   # what engines and tools see: user cancel or budget
        self.stop_reason = ""
        self.on_token: Callable[[Token], None] | None = None   # streaming (run_team's on_token)
        self.history: tuple[Turn, ...] = ()       # turns after the query that the run continues from
        self.choice: Choice | None = None         # constrains the first planner turn
        self.first_step = 1
        self.unenforced: set[str] = set()   # roles told (by a Notice) that their server decodes grammar-free
        self.usage: dict[str, Usage] = {}
        self.steps = 0
        self.t0 = time.monotonic()   # reset when the consumer starts iterating

    # ---- driver ---------------------------------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        self.t0 = time.monotonic()
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(done,), name="umi-run-watch", daemon=True)
        watcher.start()
        try:
            yield from self._episode()
        except _Halt:
            yield from self._halted()
        except Cancelled:
            self.stop_reason = self.stop_reason or "cancelled"
            yield from self._halted()
        except Exception as e:  # noqa: BLE001 - our/environment faults end the run, reported as events
            yield Error(step=self.steps, role="team", text=f"{type(e).__name__}: {e}", error_type=type(e).__name__)
            yield self._outcome("error", reason=str(e))
        finally:
            done.set()

    def _watch(self, done: threading.Event) -> None:
        budget = self.limits.budget_seconds
        deadline = None if budget is None else self.t0 + budget
        while not done.wait(0.02):
            if self.user_cancel is not None and self.user_cancel.is_set():
                self.stop_reason = self.stop_reason or "cancelled"
            elif deadline is not None and time.monotonic() > deadline:
                self.stop_reason = self.stop_reason or "budget"
            else:
                continue
            self.stop.set()
            return

    def _check(self) -> None:
        if self.user_cancel is not None and self.user_cancel.is_set():
            self.stop_reason = self.stop_reason or "cancelled"
            self.stop.set()
        budget = self.limits.budget_seconds
        if budget is not None and time.monotonic() - self.t0 > budget:
            self.stop_reason = self.stop_reason or "budget"
            self.stop.set()
        if self.stop.is_set():
            raise _Halt

    def _halted(self) -> Iterator[Event]:
        if self.stop_reason == "budget":
            text = f"wall-clock budget of {self.limits.budget_seconds:g} s exceeded"
        else:
            text = "cancelled"
        yield Notice(step=self.steps, role="team", text=text, code=self.stop_reason or "cancelled")
        yield self._outcome("cancelled", reason=text)

    def _outcome(self, status: str, answer: str | None = None, reason: str = "") -> Outcome:
        return Outcome(step=self.steps, role="team", text=answer if answer is not None else reason,
                       seconds=time.monotonic() - self.t0, usage=sum(self.usage.values(), Usage()),
                       status=status, answer=answer, steps=self.steps, usage_by_role=dict(self.usage),
                       reason=reason)

    # ---- the episode (protocol.md §5.6 linear driver with §5.1 routing) ------------------------------------------
    def _episode(self) -> Iterator[Event]:
        proto = self.protocol_arg
        if proto is None or isinstance(proto, str):
            proto = get_protocol(proto or DEFAULT_PROTOCOL)
        self.proto = proto
        if tuple(proto.roles) not in (TEAM_ROLES, SINGLE_ROLES):
            raise ConfigError(f"protocol {proto.name!r} has roles {', '.join(proto.roles)}; the loop runs "
                              f"{', '.join(TEAM_ROLES)} or {', '.join(SINGLE_ROLES)}")
        missing = [r for r in proto.roles if r not in self.roles]
        if missing:
            raise ConfigError(f"no engine for role(s) {', '.join(missing)}; roles given: {', '.join(self.roles) or 'none'}")
        tools: ToolSet = as_toolset(self.tools_arg)
        if len(tools) == 0:
            raise ConfigError("the tool set is empty; the caller needs at least one tool")
        tools.check_isolation(self.limits.tool_isolation)   # before any model runs
        idle = [t.name for t in tools if not t.executable]
        if idle:
            raise ConfigError(f"tool(s) {', '.join(idle)} have no callable or dispatcher")
        self.retriever = ToolRetriever(tools, self.tool_top_k)
        self._start(tools)
        if tuple(proto.roles) == SINGLE_ROLES:
            yield from self._single()
            return
        history: list[Turn] = [Turn("user", self.query), *self.history]
        for step in range(self.first_step, self.limits.max_steps + 1):
            self._check()
            self.steps = step
            _, docs, _ = yield from self._offer(step, "planner", history)
            route = yield from self._plan(step, docs, history)
            if route.kind == "give_up":
                yield GiveUp(step=step, role="planner", text=route.plan)
                yield self._outcome("gave_up", reason="the planner gave up")
                return
            self._check()
            if route.kind == "conclusion":
                prompt = proto.summarizer_prompt(history, route.plan)
                gen, seconds = yield from self._generate(step, "summarizer", prompt)
                answer = proto.postprocess(gen.text)
                yield Answer(step=step, role="summarizer", text=answer, seconds=seconds, usage=Usage.of(gen))
                yield self._outcome("answered", answer=answer)
                return
            tools, docs, grammar = yield from self._offer(step, "caller", history, route.plan)
            tools, grammar = self._chosen_tools(step, "caller", tools, grammar)
            prompt = proto.caller_prompt(docs, history, route.plan)
            gen, seconds = yield from self._generate(step, "caller", prompt, grammar=grammar,
                                                     trunk=lambda: proto.trunk(docs, history, route.plan))
            call_text = proto.postprocess(gen.text)
            names = tools.names if self.constrained and self._enforces("caller") else ()   # grammar-shaped
            parsed = proto.parse_call(call_text, names)
            yield Call(step=step, role="caller", text=call_text, seconds=seconds, usage=Usage.of(gen),
                       tool=parsed.action, arguments=parsed.arguments)
            self._check()
            observation = yield from self._execute(step, tools, parsed.action, parsed.arguments)
            history.extend(proto.step_turns(route.plan, call_text, observation))
        yield self._outcome("max_steps", reason=f"no answer after {self.limits.max_steps} steps")

    def _offer(self, step: int, role: str, history, plan: str | None = None):
        """What `role` sees at this step: (tools, their docs, its call grammar or None). Every tool, or with
        retrieval the top k against the query and the history (the caller's also against its plan). Yields
        ToolsOffered when retrieval chose (the caller's only when it differs from the planner's)."""
        turns = history if plan is None else [*history, Turn("assistant", plan)]
        offer = self.retriever.offer(self.query, turns)
        if offer.filtered and (role != "caller" or offer.names != self._offered):
            yield ToolsOffered(step=step, role=role, text=", ".join(offer.names), tools=offer.names,
                               total=offer.total, ranker=offer.ranker, scores=offer.scores)
        self._offered = offer.names
        docs = self.retriever.derive(offer, "docs", lambda ts: ts.docs(self.proto.doc_chars))
        grammar = None
        if self.constrained and role != "planner":   # the grammar admits only the offered tools
            grammar = self.retriever.derive(offer, role, lambda ts: self._call_grammar(role, ts))
        return offer.tools, docs, grammar

    def _call_grammar(self, role: str, tools: ToolSet, routes=None) -> str:
        from .protocol.grammar import backbone_grammar, caller_grammar

        if role == "caller":
            return caller_grammar(tools, max_tokens=self._max_tokens("caller"))  # any admitted call fits
        try:
            return backbone_grammar(tools, max_tokens=self._max_tokens("backbone"), routes=routes)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def _start(self, tools: ToolSet) -> None:
        """Checks the resumed history and the choice; numbers the first step on from the history."""
        since_user = []
        for turn in self.history:
            since_user = [] if turn.role == "user" else since_user + [turn]
        self.first_step = 1 + sum(t.role in ("assistant", "planner") for t in since_user)
        self.steps = self.first_step - 1
        self.toolset = tools
        c = self.choice
        if c is not None and c.tools is not None:
            unknown = [n for n in c.tools if n not in tools]
            if unknown:
                raise ConfigError(f"choice: no tool named {', '.join(unknown)}; tools: {', '.join(tools.names)}")
            if not self.constrained:
                raise ConfigError("choice: naming tools needs the call grammar, and this run is unconstrained")
        if c is not None and not self.constrained and tuple(self.proto.roles) == SINGLE_ROLES:
            raise ConfigError("choice: the single-model protocol follows a choice only under its grammar, "
                              "and this run is unconstrained")

    def _routes(self, step: int) -> tuple[str, ...] | None:
        """The routes this step may take (None: any)."""
        return self.choice.routes if self.choice is not None and step == self.first_step else None

    def _chosen_tools(self, step: int, role: str, tools: ToolSet, grammar):
        """At the chosen step, the call may name only the chosen tools: (those tools, their call grammar)."""
        c = self.choice
        if c is None or step != self.first_step or (c.tools is None and role == "caller"):
            return tools, grammar
        chosen = tools if c.tools is None else ToolSet([self.toolset[n] for n in c.tools])
        if not self.constrained:
            return chosen, grammar
        return chosen, self._call_grammar(role, chosen, routes=c.routes)

    def _execute(self, step: int, tools: ToolSet, action: str, arguments: str):
        """Run one parsed call; yields the Observation (and a suffix-match Notice); returns the observation text."""
        result = tools.call(action, arguments, timeout=self.limits.tool_timeout, cancel=self.stop,
                            isolation=self.limits.tool_isolation)
        if result.error == "cancelled":
            raise _Halt
        if result.suffix_match:
            yield Notice(step=step, role="caller", code="suffix_match",
                         text=f"tool {action!r} resolved to {result.tool!r} by suffix (reference fallback)")
        observation = self.proto.truncate_observation(result.text)
        yield Observation(step=step, role="tool", text=observation, seconds=result.seconds,
                          tool=result.tool or action, ok=result.ok, error=result.error)
        return observation

    def _single(self) -> Iterator[Event]:
        """The single-model baseline (backbone protocol): one output per step holds the thought and either a
        call or `conclusion: <answer | give up.>`. Constrained, it decodes under the backbone grammar (one
        thought line, then a call over the registered tools or a conclusion), like the team's caller."""
        proto = self.proto
        history: list[Turn] = [Turn("user", self.query), *self.history]
        for step in range(self.first_step, self.limits.max_steps + 1):
            self._check()
            self.steps = step
            tools, docs, grammar = yield from self._offer(step, "backbone", history)
            tools, grammar = self._chosen_tools(step, "backbone", tools, grammar)
            gen, seconds = yield from self._generate(step, "backbone", proto.prompt(docs, history), grammar=grammar)
            out = proto.parse_output(gen.text)
            yield Plan(step=step, role="backbone", text=out.thought, seconds=seconds, usage=Usage.of(gen),
                       route=out.kind, route_source="model")
            if out.kind == "give_up":
                yield GiveUp(step=step, role="backbone", text=out.thought)
                yield self._outcome("gave_up", reason="the model gave up")
                return
            if out.kind == "conclusion":
                yield Answer(step=step, role="backbone", text=out.answer)
                yield self._outcome("answered", answer=out.answer)
                return
            call_text = out.call
            yield Call(step=step, role="backbone", text=call_text, tool=out.action, arguments=out.arguments)
            self._check()
            observation = yield from self._execute(step, tools, out.action, out.arguments)
            history.extend(proto.step_turns(out.thought, call_text, observation))
        yield self._outcome("max_steps", reason=f"no answer after {self.limits.max_steps} steps")

    def _plan(self, step: int, docs, history):
        """Planner turn with the empty-output retries (protocol.md §4.6) and optional route completion; yields Plan."""
        proto = self.proto
        prompt = proto.planner_prompt(docs, history)
        usage, seconds, retries = Usage(), 0.0, 0
        while True:
            gen, s = yield from self._generate(step, "planner", prompt, trunk=lambda: proto.trunk(docs, history))
            usage, seconds = usage + Usage.of(gen), seconds + s
            if not proto.is_empty(gen.text) or retries + 1 >= proto.planner_attempts:
                break
            retries += 1
        if retries:
            yield Notice(step=step, role="planner", code="planner_empty",
                         text=f"planner output was empty; retried {retries} time(s)")
        text = proto.postprocess_planner(gen.text)
        route = proto.route(text)
        source = "model" if route.marker else "default"
        allowed = self._routes(step)
        prompt_ids, prompt_trunk = self._last_ids, self._last_trunk
        if not route.marker and self.complete_route and self._enforces("planner") and not proto.is_empty(gen.text):
            from .protocol.grammar import route_grammar

            engine = self.roles["planner"]
            tokens = list(gen.tokens)
            if tokens and tokens[-1] == engine.eos_id:
                tokens.pop()
            self._check()
            more, s = yield from self._generate(step, "route", self._last_ids + tokens,
                                                grammar=route_grammar(allowed), engine_role="planner",
                                                trunk=self._last_trunk)
            usage, seconds = usage + Usage.of(more), seconds + s
            completed = proto.route(proto.postprocess_planner(gen.text + more.text))
            if completed.marker:
                route, source = completed, "grammar"
        if allowed is not None and route.kind not in allowed:
            route, more, s = yield from self._reroute(step, gen, prompt_ids, prompt_trunk, allowed)
            usage, seconds, source = usage + Usage.of(more), seconds + s, "choice"
        yield Plan(step=step, role="planner", text=route.plan, seconds=seconds, usage=usage, route=route.kind,
                   route_source=source, retries=retries)
        return route

    def _reroute(self, step: int, gen: Generation, ids: list[int], trunk: int, allowed: tuple[str, ...]):
        """A planner output whose route the choice excludes: keep its thought (the text before any route
        marker, as the tokens it was decoded as) and decode a marker under a grammar of the allowed routes."""
        from .protocol.grammar import ROUTE_MARKERS, route_grammar

        engine = self.roles["planner"]
        cuts = [i for i in (gen.text.find(m) for m in ROUTE_MARKERS) if i >= 0]
        thought = (gen.text[:min(cuts)] if cuts else gen.text).rstrip()
        tokens = [t for t in gen.tokens if t != engine.eos_id]
        k = len(tokens)
        while k and len(engine.detokenize(tokens[:k])) > len(thought):
            k -= 1
        head = engine.detokenize(tokens[:k])
        if not thought.startswith(head):   # not prefix-stable: tokenize the thought afresh
            k, head = 0, ""
        rest = thought[len(head):]
        self._check()
        more, s = yield from self._generate(step, "route", ids + tokens[:k] + (engine.tokenize(rest) if rest else []),
                                            grammar=route_grammar(allowed), engine_role="planner", trunk=trunk)
        route = self.proto.route(self.proto.postprocess_planner(thought + more.text))
        if not route.marker or route.kind not in allowed:
            raise RuntimeError(f"route completion for the choice {', '.join(allowed)} gave {more.text!r}")
        return route, more, s

    def _max_tokens(self, role: str, engine_role: str | None = None) -> int:
        """The role's limit, at most half its context (the engine enforces the same rule)."""
        return max(1, min(self.limits.max_tokens(role), self.roles[engine_role or role].n_ctx // 2))

    def _enforces(self, role: str) -> bool:
        """Whether `role`'s engine enforces grammars (a remote server may not; local engines always do)."""
        return getattr(self.roles[role], "enforces_grammar", True)

    def _generate(self, step: int, role: str, prompt, *, grammar: str | None = None, engine_role: str | None = None,
                  trunk=None):
        """Encode (unless given ids), keep the reference's last n_ctx - max_tokens - 8 tokens, generate.

        `trunk` (the prompt's shared head as text, a callable giving it, or a token count) matters only to an
        engine with a trunk adapter (`has_trunk`): it evaluates those leading tokens under that adapter."""
        engine = self.roles[engine_role or role]
        max_tokens = self._max_tokens(role, engine_role)
        encode = lambda text: self.proto.encode(text, engine.tokenize, engine.bos_id, engine.eos_id)  # noqa: E731
        ids = prompt if isinstance(prompt, list) else encode(prompt)
        n_trunk = 0
        if trunk is not None and getattr(engine, "has_trunk", False):
            if callable(trunk):
                trunk = trunk()
            # a common prefix, not the trunk's own length: a token may merge across the boundary
            n_trunk = trunk if isinstance(trunk, int) else _common_prefix(encode(trunk), ids)
        keep = engine.n_ctx - max_tokens - CONTEXT_MARGIN
        if keep < 1:
            raise ConfigError(f"{engine_role or role}: n_ctx {engine.n_ctx} leaves no room for a prompt "
                              f"with max_tokens {max_tokens}")
        if len(ids) > keep:
            yield Notice(step=step, role=engine_role or role, code="context_truncated",
                         text=f"prompt of {len(ids)} tokens cut to its last {keep} to fit n_ctx {engine.n_ctx}")
            n_trunk = max(0, n_trunk - (len(ids) - keep))
            ids = ids[-keep:]
        self._last_ids, self._last_trunk = ids, n_trunk
        key = engine_role or role
        if grammar is not None and not self._enforces(key):
            grammar = None      # a server without grammars: decoded free, its calls validated as unconstrained
            if key not in self.unenforced:
                self.unenforced.add(key)
                yield Notice(step=step, role=key, code="grammar_unenforced",
                             text=f"{key} runs on a server that cannot enforce grammars: it decodes unconstrained "
                                  f"and its output is validated as in an unconstrained run")
        t = time.monotonic()
        kw = {"trunk": n_trunk} if n_trunk else {}
        stream = None if self.on_token is None else _TokenText(engine, step, key, self.on_token)
        if stream is not None:
            kw["on_token"] = stream.push
        gen: Generation = engine.generate(ids, max_tokens=max_tokens, grammar=grammar, cancel=self.stop, **kw)
        if stream is not None:
            stream.finish(gen.text)
        seconds = time.monotonic() - t
        self.usage[key] = self.usage.get(key, Usage()) + Usage.of(gen)
        if gen.stop_reason == "length":
            yield Notice(step=step, role=key, code="max_tokens",
                         text=f"{role} output stopped at max_tokens={max_tokens}")
        if gen.n_truncated:
            yield Notice(step=step, role=key, code="context_truncated",
                         text=f"engine dropped {gen.n_truncated} prompt tokens to fit n_ctx {engine.n_ctx}")
        if gen.stop_reason == "cancelled" or self.stop.is_set():
            self.stop_reason = self.stop_reason or "cancelled"
            raise _Halt
        return gen, seconds


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
