"""Per-run limits and the caller's choice of what the first step may do."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError
from ..tools.isolation import ISOLATIONS
from ..tools.retrieval import check_order

TEAM_ROLES = ("planner", "caller", "summarizer")
SINGLE_ROLES = ("backbone",)
ROUTE_KINDS = ("caller", "conclusion", "give_up")
TRUNCATIONS = ("head", "left")


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
    # an overflowing prompt: "head" keeps the instructions and tool docs and drops the oldest whole history
    # turns; "left" is the reference's plain left cut (protocol.md §4.4), for static-eval parity
    truncation: str = "head"
    # a constrained run's summarizer may write only numbers found in the query, the calls and the observations
    # (protocol/grammar.py answer_grammar): values come from tools, never from the model's memory
    grounded_answers: bool = True
    # how the docs list the tools: "relevance" puts the tool that best matches the query last (the shipped
    # adapters call the last listed unfamiliar tool far more often than any other), "given" keeps the set's order
    # (tools/retrieval.py); a ToolSet with keep_order is always listed as given
    tool_order: str = "relevance"

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
        if not isinstance(self.grounded_answers, bool):
            raise ConfigError(f"limits: grounded_answers must be true or false, not {self.grounded_answers!r}")
        if self.truncation not in TRUNCATIONS:
            raise ConfigError(f"limits: truncation must be one of {', '.join(TRUNCATIONS)}, not {self.truncation!r}")
        check_order(self.tool_order, "limits: tool_order")

    def max_tokens(self, role: str) -> int:
        return {"planner": self.planner_tokens, "caller": self.caller_tokens, "summarizer": self.summarizer_tokens,
                "backbone": self.backbone_tokens, "route": self.route_tokens}[role]


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
