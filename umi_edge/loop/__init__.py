"""The collaborative loop: planner → (give up | summarizer | caller → tool → observation), as a generator
of typed events. The error policy lives here, in one place: faults of the model (unparseable call,
unknown tool, bad arguments, a tool that raised, hung or returned non-JSON) become observations the
model sees; faults of our code or the environment (engine failure, bad configuration) end the run
with an Error event and Outcome(status="error").

driver.py: budget, cancel, outcome. episode.py: one strategy per protocol shape (team, single).
rolecall.py: a role's generation (encoding, trunk prefix, fitting into the context, route completion).
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..engine.base import RoleEngine
from ..engine.context import CONTEXT_MARGIN
from ..errors import ConfigError
from ..events import Event, Token
from ..protocol import DEFAULT as DEFAULT_PROTOCOL
from ..protocol import Turn, get_protocol
from ..protocol.interfaces import AnyProtocol
from ..tools import as_toolset
from .driver import Run
from .episode import SingleEpisode, TeamEpisode
from .limits import ROUTE_KINDS, SINGLE_ROLES, TEAM_ROLES, TRUNCATIONS, Choice, Limits

__all__ = ["CONTEXT_MARGIN", "ROUTE_KINDS", "SINGLE_ROLES", "TEAM_ROLES", "TRUNCATIONS", "Choice", "Limits",
           "run_team"]


def run_team(query: str, roles: Mapping[str, RoleEngine], tools: Any, *,
             protocol: AnyProtocol | str | None = None,
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
    run = Run(roles, limits, cancel, on_token)

    def episode() -> Iterator[Event]:
        proto = run.proto = (get_protocol(protocol or DEFAULT_PROTOCOL) if protocol is None or isinstance(protocol, str)
                             else protocol)
        if tuple(proto.roles) not in (TEAM_ROLES, SINGLE_ROLES):
            raise ConfigError(f"protocol {proto.name!r} has roles {', '.join(proto.roles)}; the loop runs "
                              f"{', '.join(TEAM_ROLES)} or {', '.join(SINGLE_ROLES)}")
        missing = [r for r in proto.roles if r not in roles]
        if missing:
            raise ConfigError(f"no engine for role(s) {', '.join(missing)}; roles given: {', '.join(roles) or 'none'}")
        toolset = as_toolset(tools)
        if len(toolset) == 0:
            raise ConfigError("the tool set is empty; the caller needs at least one tool")
        toolset.check_isolation(limits.tool_isolation)   # before any model runs
        idle = [t.name for t in toolset if not t.executable]
        if idle:
            raise ConfigError(f"tool(s) {', '.join(idle)} have no callable or dispatcher")
        strategy = SingleEpisode if tuple(proto.roles) == SINGLE_ROLES else TeamEpisode
        yield from strategy(run, query, toolset, constrained=constrained,
                            complete_route=constrained if complete_route is None else complete_route,
                            tool_top_k=tool_top_k, history=tuple(history), choice=choice)()

    yield from run.events(episode)
