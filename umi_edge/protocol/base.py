"""Protocol-neutral value types: history turns, routing decisions and parsed tool calls."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class Turn:
    """One history turn: role is user / assistant (the planner) / caller / observation / conclusion."""

    role: str
    text: str


@dataclass(frozen=True)
class Route:
    """Who acts after a planner output: kind is "caller", "conclusion" or "give_up".

    `plan` is the planner text cut right after its marker (or with the default marker appended);
    `marker` is False when the model wrote none and the default route was taken.
    """

    kind: str
    plan: str
    marker: bool


@dataclass(frozen=True)
class CallParse:
    """A caller output parsed per the protocol: the action name and the raw argument text."""

    action: str
    arguments: str
    has_action: bool
    has_input: bool


def as_turns(turns: Iterable[Turn | Mapping]) -> list[Turn]:
    """Accepts Turn objects or dataset records ({"from": ..., "value": ...} or {"role": ..., "text": ...})."""
    out = []
    for t in turns:
        if isinstance(t, Turn):
            out.append(t)
        else:
            role = t.get("from", t.get("role"))
            text = t.get("value", t.get("text"))
            if not isinstance(role, str) or not isinstance(text, str):
                raise ValueError(f"history turn needs string 'from'/'value' (or 'role'/'text'): {dict(t)!r}")
            out.append(Turn(role, text))
    return out
