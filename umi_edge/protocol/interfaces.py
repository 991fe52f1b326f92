"""What the loop, the eval and the server call on a protocol: one interface for a team protocol (planner,
caller, summarizer) and one for a single-model protocol. A new protocol implements one of them and
registers a factory in `protocol.PROTOCOLS`."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Protocol, Sequence, Union

from .base import CallParse, Prompt, Route, Turn

History = Iterable[Union[Turn, Mapping]]
Encoder = Callable[[str], list[int]]


class _Common(Protocol):
    name: str
    roles: tuple[str, ...]
    doc_chars: int            # tool-doc `function` text is cut to this many characters
    observation_chars: int

    def encode(self, prompt: str, tokenize: Encoder, bos_id: int, eos_id: int) -> list[int]:
        """Prompt → ids; only the template's own separators become special tokens."""

    def truncate_observation(self, text: str) -> str: ...

    def step_turns(self, plan: str, call: str, observation: str) -> tuple[Turn, ...]:
        """The history turns one calling step adds."""


class TeamProtocol(_Common, Protocol):
    """Planner → (caller | summarizer | give up), as α-UMi."""

    planner_attempts: int

    def planner_prompt(self, docs: Sequence[Mapping], history: History) -> Prompt: ...

    def caller_prompt(self, docs: Sequence[Mapping], history: History, plan: str) -> Prompt: ...

    def summarizer_prompt(self, history: History, plan: str) -> Prompt: ...

    def trunk(self, docs: Sequence[Mapping], history: History, plan: str | None = None) -> Prompt:
        """The head the planner's and the caller's prompts share (tool docs and history)."""

    def postprocess_planner(self, text: str) -> str: ...

    def postprocess(self, text: str) -> str: ...

    def is_empty(self, text: str) -> bool: ...

    def route(self, text: str) -> Route: ...

    def parse_call(self, text: str, names: Sequence[str] = ()) -> CallParse: ...


class SingleProtocol(_Common, Protocol):
    """One model writes the thought and the call or the answer in one output (the paper's baseline)."""

    def prompt(self, docs: Sequence[Mapping], history: History) -> Prompt: ...

    def parse_output(self, text: str): ...


AnyProtocol = Union[TeamProtocol, SingleProtocol]
