"""The typed event stream of one team run: plans, calls, observations, the answer, notices, the outcome."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Mapping

STATUSES = ("answered", "gave_up", "max_steps", "cancelled", "error")


@dataclass(frozen=True)
class Usage:
    """Token accounting of one or more generations (the engine's Generation fields, summed)."""

    prompt: int = 0        # prompt tokens (after truncation)
    reused: int = 0        # kept from the KV cache
    evaluated: int = 0     # actually evaluated
    generated: int = 0     # produced (sampled or forced)
    forced: int = 0        # of generated, appended without sampling
    truncated: int = 0     # dropped from the left to fit the context
    prompt_seconds: float = 0.0
    decode_seconds: float = 0.0

    @classmethod
    def of(cls, gen) -> "Usage":
        """From an engine `Generation`."""
        return cls(gen.n_prompt, gen.n_reused, gen.n_evaluated, gen.n_generated, gen.n_forced,
                   gen.n_truncated, gen.prompt_seconds, gen.decode_seconds)

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: which step (1-based planner turn), which role, its text, time and tokens."""

    kind: ClassVar[str] = "event"
    step: int
    role: str
    text: str
    seconds: float = 0.0
    usage: Usage = Usage()

    def to_dict(self) -> dict[str, Any]:
        """One JSON-ready object (for --json): {"event": kind, ...fields}."""
        return {"event": self.kind, **{f.name: _plain(getattr(self, f.name)) for f in fields(self)}}


def _plain(v: Any) -> Any:
    if isinstance(v, Usage):
        return asdict(v)
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


@dataclass(frozen=True, kw_only=True)
class Plan(Event):
    """A planner turn after post-processing and routing; `route` is caller / conclusion / give_up.

    `route_source`: "model" (marker written by the model), "grammar" (completed under the route grammar)
    or "default" (no marker; the reference's " Next: caller." was appended), "choice" (the model's route was
    not one the run's Choice allows; re-completed under a grammar of those). `retries`: empty outputs redone.
    """

    kind: ClassVar[str] = "plan"
    route: str
    route_source: str = "model"
    retries: int = 0


@dataclass(frozen=True, kw_only=True)
class Call(Event):
    """The caller's output (`text`) and what the protocol parsed from it."""

    kind: ClassVar[str] = "call"
    tool: str
    arguments: str


@dataclass(frozen=True, kw_only=True)
class Observation(Event):
    """What the model sees after a call; `ok` is False when it reports a fault (unknown tool, bad args…).

    `error` names the fault: unknown_tool, bad_arguments, raised, timeout, not_json (or None).
    """

    kind: ClassVar[str] = "observation"
    tool: str
    ok: bool = True
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Answer(Event):
    """The summarizer's final answer."""

    kind: ClassVar[str] = "answer"


@dataclass(frozen=True, kw_only=True)
class GiveUp(Event):
    """The planner gave up; `text` is its plan."""

    kind: ClassVar[str] = "give_up"


@dataclass(frozen=True, kw_only=True)
class Error(Event):
    """A fault of our code or the environment (engine failure, bad configuration); the run stops."""

    kind: ClassVar[str] = "error"
    error_type: str = ""


@dataclass(frozen=True, kw_only=True)
class ToolsOffered(Event):
    """Tool retrieval chose what `role` sees at this step: `tools` (in the set's order) out of `total`,
    ranked by `ranker`, with their `scores`. Only emitted when the set is larger than its `tool_top_k`;
    for the caller only when its tools differ from the planner's at the same step."""

    kind: ClassVar[str] = "tools"
    tools: tuple[str, ...]
    total: int
    ranker: str
    scores: tuple[float, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Notice(Event):
    """Something the user should know that does not stop the run.

    `code`: context_truncated, max_tokens, suffix_match, planner_empty, budget, cancelled.
    """

    kind: ClassVar[str] = "notice"
    code: str


@dataclass(frozen=True, kw_only=True)
class Token(Event):
    """Text a role decoded since its previous Token (whole characters only), for streaming. Delivered to
    run_team's `on_token` callback as tokens are produced, never in the event stream itself; a generation's
    Tokens join to its raw text (before the protocol strips it)."""

    kind: ClassVar[str] = "token"


@dataclass(frozen=True, kw_only=True)
class Outcome(Event):
    """The last event of every run. `text` mirrors `answer` (or the reason when there is none).

    status: answered | gave_up | max_steps | cancelled (by the caller, or the wall-clock budget: see
    `reason`) | error (a fault of our code or the environment; the Error event before it says which).
    """

    kind: ClassVar[str] = "outcome"
    status: str
    answer: str | None = None
    steps: int = 0
    usage_by_role: Mapping[str, Usage] = field(default_factory=dict, hash=False)
    reason: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")
