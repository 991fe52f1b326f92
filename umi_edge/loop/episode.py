"""Episode strategies, one per protocol shape: the team's planner → (give up | summarizer | caller → tool)
and the single model's one output per step (protocol.md §5.6 linear driver with §5.1 routing)."""
from __future__ import annotations

from typing import Iterator, Sequence

from ..errors import ConfigError
from ..events import Answer, Call, Event, GiveUp, Notice, Observation, Plan, ToolsOffered, Usage
from ..protocol import Turn
from ..tools import ToolSet
from ..tools.retrieval import ToolRetriever
from .driver import Halt, Run
from .limits import SINGLE_ROLES, Choice
from .rolecall import RoleCalls


class Episode:
    """What both strategies share: the tools offered each step, the choice, tool execution."""

    def __init__(self, run: Run, query: str, tools: ToolSet, *, constrained: bool, complete_route: bool,
                 tool_top_k: int, history: Sequence[Turn], choice: Choice | None):
        self.run, self.proto, self.query, self.toolset = run, run.proto, query, tools
        self.constrained, self.complete_route, self.choice = constrained, complete_route, choice
        self.calls = RoleCalls(run)
        self.retriever = ToolRetriever(tools, tool_top_k, order=run.limits.tool_order)
        self.history: list[Turn] = [Turn("user", query), *history]
        self._offered: tuple[str, ...] = ()   # the names the planner was offered at this step
        since_user: list[Turn] = []
        for turn in history:
            since_user = [] if turn.role == "user" else since_user + [turn]
        self.first_step = 1 + sum(t.role in ("assistant", "planner") for t in since_user)
        run.steps = self.first_step - 1
        if choice is not None and choice.tools is not None:
            unknown = [n for n in choice.tools if n not in tools]
            if unknown:
                raise ConfigError(f"choice: no tool named {', '.join(unknown)}; tools: {', '.join(tools.names)}")
            if not constrained:
                raise ConfigError("choice: naming tools needs the call grammar, and this run is unconstrained")
        if choice is not None and not constrained and tuple(self.proto.roles) == SINGLE_ROLES:
            raise ConfigError("choice: the single-model protocol follows a choice only under its grammar, "
                              "and this run is unconstrained")

    def steps(self) -> Iterator[int]:
        for step in range(self.first_step, self.run.limits.max_steps + 1):
            self.run.check()
            self.run.steps = step
            yield step

    def offer(self, step: int, role: str, plan: str | None = None) -> Iterator[Event]:
        """What `role` sees at this step: returns (tools, their docs, its call grammar or None). Every tool, or
        with retrieval the top k against the query and the history (the caller's also against its plan).
        Yields ToolsOffered when retrieval chose (the caller's only when it differs from the planner's)."""
        turns = self.history if plan is None else [*self.history, Turn("assistant", plan)]
        offer = self.retriever.offer(self.query, turns)
        if offer.filtered and (role != "caller" or offer.names != self._offered):
            yield ToolsOffered(step=step, role=role, text=", ".join(offer.names), tools=offer.names,
                               total=offer.total, ranker=offer.ranker, scores=offer.scores)
        self._offered = offer.names
        docs = self.retriever.derive(offer, "docs", lambda ts: ts.docs(self.proto.doc_chars))
        grammar = None
        if self.constrained and role != "planner":   # the grammar admits only the offered tools
            grammar = self.retriever.derive(offer, role, lambda ts: self.call_grammar(role, ts))
        return offer.tools, docs, grammar

    def call_grammar(self, role: str, tools: ToolSet, routes=None) -> str:
        from ..protocol.grammar import backbone_grammar, caller_grammar

        if role == "caller":
            return caller_grammar(tools, max_tokens=self.calls.max_tokens("caller"))  # any admitted call fits
        try:
            return backbone_grammar(tools, max_tokens=self.calls.max_tokens("backbone"), routes=routes)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def grounds(self) -> list[str] | None:
        """What a grounded answer's numbers may come from (the query, the calls, the observations); None when
        answers are free (grounded_answers off, or an unconstrained run)."""
        if not (self.constrained and self.run.limits.grounded_answers):
            return None
        return [t.text for t in self.history if t.role in ("user", "caller", "observation")]

    def answer_grammar(self) -> str | None:
        """The summarizer's grammar: with grounded answers, numbers only from the grounds."""
        from ..protocol.grammar import answer_grammar

        grounds = self.grounds()
        return None if grounds is None else answer_grammar(grounds)

    def routes(self, step: int) -> tuple[str, ...] | None:
        """The routes this step may take (None: any)."""
        return self.choice.routes if self.choice is not None and step == self.first_step else None

    def chosen_tools(self, step: int, role: str, tools: ToolSet, grammar):
        """At the chosen step, the call may name only the chosen tools: (those tools, their call grammar)."""
        c = self.choice
        if c is None or step != self.first_step or (c.tools is None and role == "caller"):
            return tools, grammar
        chosen = tools if c.tools is None else ToolSet([self.toolset[n] for n in c.tools])
        if not self.constrained:
            return chosen, grammar
        return chosen, self.call_grammar(role, chosen, routes=c.routes)

    def execute(self, step: int, tools: ToolSet, action: str, arguments: str) -> Iterator[Event]:
        """Run one parsed call; yields the Observation (and a suffix-match Notice); returns the observation text."""
        limits = self.run.limits
        result = tools.call(action, arguments, timeout=limits.tool_timeout, cancel=self.run.stop,
                            isolation=limits.tool_isolation)
        if result.error == "cancelled":
            raise Halt
        if result.suffix_match:
            yield Notice(step=step, role="caller", code="suffix_match",
                         text=f"tool {action!r} resolved to {result.tool!r} by suffix (reference fallback)")
        observation = self.proto.truncate_observation(result.text)
        yield Observation(step=step, role="tool", text=observation, seconds=result.seconds,
                          tool=result.tool or action, ok=result.ok, error=result.error)
        return observation


class TeamEpisode(Episode):
    def __call__(self) -> Iterator[Event]:
        proto, run = self.proto, self.run
        for step in self.steps():
            _, docs, _ = yield from self.offer(step, "planner")
            route = yield from self._plan(step, docs)
            if route.kind == "give_up":
                yield GiveUp(step=step, role="planner", text=route.plan)
                yield run.outcome("gave_up", reason="the planner gave up")
                return
            run.check()
            if route.kind == "conclusion":
                c = yield from self.calls.prompt(step, "summarizer", lambda h: proto.summarizer_prompt(h, route.plan),
                                                 self.history, grammar=self.answer_grammar())
                answer = proto.postprocess(c.gen.text)
                yield Answer(step=step, role="summarizer", text=answer, seconds=c.seconds, usage=Usage.of(c.gen))
                yield run.outcome("answered", answer=answer)
                return
            tools, docs, grammar = yield from self.offer(step, "caller", route.plan)
            tools, grammar = self.chosen_tools(step, "caller", tools, grammar)
            c = yield from self.calls.prompt(step, "caller", lambda h: proto.caller_prompt(docs, h, route.plan),
                                             self.history, grammar=grammar,
                                             trunk=lambda h: proto.trunk(docs, h, route.plan))
            call_text = proto.postprocess(c.gen.text)
            names = tools.names if self.constrained and self.calls.enforces("caller") else ()   # grammar-shaped
            parsed = proto.parse_call(call_text, names)
            yield Call(step=step, role="caller", text=call_text, seconds=c.seconds, usage=Usage.of(c.gen),
                       tool=parsed.action, arguments=parsed.arguments)
            run.check()
            observation = yield from self.execute(step, tools, parsed.action, parsed.arguments)
            self.history.extend(proto.step_turns(route.plan, call_text, observation))
        yield run.outcome("max_steps", reason=f"no answer after {run.limits.max_steps} steps")

    def _plan(self, step: int, docs):
        """Planner turn with the empty-output retries (protocol.md §4.6) and optional route completion; yields
        Plan, returns the route."""
        from ..protocol.grammar import ROUTE_MARKERS, route_grammar

        proto, calls = self.proto, self.calls
        usage, seconds, retries = Usage(), 0.0, 0
        while True:
            c = yield from calls.prompt(step, "planner", lambda h: proto.planner_prompt(docs, h), self.history,
                                        trunk=lambda h: proto.trunk(docs, h))
            usage, seconds = usage + Usage.of(c.gen), seconds + c.seconds
            if not proto.is_empty(c.gen.text) or retries + 1 >= proto.planner_attempts:
                break
            retries += 1
        if retries:
            yield Notice(step=step, role="planner", code="planner_empty",
                         text=f"planner output was empty; retried {retries} time(s)")
        gen = c.gen
        route = proto.route(proto.postprocess_planner(gen.text))
        source = "model" if route.marker else "default"
        allowed = self.routes(step)
        if not route.marker and self.complete_route and calls.enforces("planner") and not proto.is_empty(gen.text):
            more = yield from calls.complete_route(step, c, route_grammar(allowed))
            usage, seconds = usage + Usage.of(more.gen), seconds + more.seconds
            completed = proto.route(proto.postprocess_planner(gen.text + more.gen.text))
            if completed.marker:
                route, source = completed, "grammar"
        if allowed is not None and route.kind not in allowed:
            # keep the thought (the text before any route marker) and decode a marker the choice allows
            cuts = [i for i in (gen.text.find(m) for m in ROUTE_MARKERS) if i >= 0]
            thought = (gen.text[:min(cuts)] if cuts else gen.text).rstrip()
            more = yield from calls.reroute(step, c, thought, route_grammar(allowed))
            route = proto.route(proto.postprocess_planner(thought + more.gen.text))
            if not route.marker or route.kind not in allowed:
                raise RuntimeError(f"route completion for the choice {', '.join(allowed)} gave {more.gen.text!r}")
            usage, seconds, source = usage + Usage.of(more.gen), seconds + more.seconds, "choice"
        yield Plan(step=step, role="planner", text=route.plan, seconds=seconds, usage=usage, route=route.kind,
                   route_source=source, retries=retries)
        return route


class SingleEpisode(Episode):
    """The single-model baseline (backbone protocol): one output per step holds the thought and either a
    call or `conclusion: <answer | give up.>`. Constrained, it decodes under the backbone grammar (one
    thought line, then a call over the registered tools or a conclusion), like the team's caller."""

    def __call__(self) -> Iterator[Event]:
        proto, run = self.proto, self.run
        for step in self.steps():
            tools, docs, grammar = yield from self.offer(step, "backbone")
            tools, grammar = self.chosen_tools(step, "backbone", tools, grammar)
            grounds = self.grounds()
            if grammar is not None and grounds is not None:   # its conclusion states only grounded numbers
                from ..protocol.grammar import ground_backbone

                grammar = ground_backbone(grammar, grounds)
            c = yield from self.calls.prompt(step, "backbone", lambda h: proto.prompt(docs, h), self.history,
                                             grammar=grammar)
            out = proto.parse_output(c.gen.text)
            yield Plan(step=step, role="backbone", text=out.thought, seconds=c.seconds, usage=Usage.of(c.gen),
                       route=out.kind, route_source="model")
            if out.kind == "give_up":
                yield GiveUp(step=step, role="backbone", text=out.thought)
                yield run.outcome("gave_up", reason="the model gave up")
                return
            if out.kind == "conclusion":
                yield Answer(step=step, role="backbone", text=out.answer)
                yield run.outcome("answered", answer=out.answer)
                return
            yield Call(step=step, role="backbone", text=out.call, tool=out.action, arguments=out.arguments)
            run.check()
            observation = yield from self.execute(step, tools, out.action, out.arguments)
            self.history.extend(proto.step_turns(out.thought, out.call, observation))
        yield run.outcome("max_steps", reason=f"no answer after {run.limits.max_steps} steps")
