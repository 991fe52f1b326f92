"""Protocol-neutral value types: rendered prompts (as segments), history turns, routing decisions and parsed
tool calls."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Union

TEMPLATE, CONTENT, SEPARATOR = "template", "content", "separator"


@dataclass(frozen=True)
class Segment:
    """A piece of a rendered prompt. `kind` says who wrote it: TEMPLATE (the protocol's own text), CONTENT
    (untrusted: the query, tool docs, observations, generated text fed back) or SEPARATOR (a special token
    the template places, e.g. α-UMi's `</s>`; `text` is how it reads in the prompt string)."""

    kind: str
    text: str


def template(text: str) -> Segment:
    return Segment(TEMPLATE, text)


def separator(text: str) -> Segment:
    return Segment(SEPARATOR, text)


Piece = Union[Segment, str]


class Prompt(str):
    """A rendered prompt: a str holding its exact text (what golden tests and stored records compare), that
    also keeps the segments it was built from, so encoding can tell the template's separators from content.

    The rule: only SEPARATOR segments may become special tokens; TEMPLATE and CONTENT text is always
    tokenized as plain text, so a `</s>` (or any special-token spelling) in content stays characters.
    A plain str given as a piece, or added to a Prompt, is CONTENT: text of unknown origin is never trusted.
    """

    segments: tuple[Segment, ...]

    def __new__(cls, *pieces: Piece) -> "Prompt":
        segments: list[Segment] = []
        for piece in pieces:
            for seg in piece.segments if isinstance(piece, Prompt) else (piece,):
                if isinstance(seg, str):
                    seg = Segment(CONTENT, seg)
                elif not isinstance(seg, Segment) or seg.kind not in (TEMPLATE, CONTENT, SEPARATOR):
                    raise TypeError(f"a prompt piece must be a str, Segment or Prompt, not {seg!r:.80}")
                if not seg.text:
                    continue
                if segments and segments[-1].kind == seg.kind != SEPARATOR:  # merge runs of one kind
                    seg = Segment(seg.kind, segments.pop().text + seg.text)
                segments.append(seg)
        self = super().__new__(cls, "".join(s.text for s in segments))
        self.segments = tuple(segments)
        return self

    def __add__(self, other):
        return Prompt(self, other) if isinstance(other, str) else NotImplemented

    def __radd__(self, other):
        return Prompt(other, self) if isinstance(other, str) else NotImplemented

    def __reduce__(self):
        return Prompt, self.segments


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
