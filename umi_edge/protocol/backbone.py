"""The α-UMi single-model baseline (alpha-umi/toolbench-backbone-v1): one model plans and calls.

protocol.md §3.1, `toolbench_backbone` (reference-only upstream): rendering and output parsing. It has the
single role "backbone"; `umi_edge.loop` runs it one output per step, for the paper's team-vs-one comparison.
Untrusted text follows alpha_umi's rule: only the template's `</s>` separators become the EOS id.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from . import alpha_umi as au
from .base import Prompt, Turn, as_turns, template

NAME = "alpha-umi/toolbench-backbone-v1"

# GLPFT/utils/prompt_lib.py `toolbench_backbone`, byte for byte; unlike the others it ends with "\n".
TEMPLATE = (
    "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\n"
    "You should answer the action of next step in the following format:\nThe thought to solve the question,\n"
    "Action: the name of api that should be called in this step, should be exactly in [{tool_names}],\n"
    "Action Input: the api call request.\nOnce you think the question is finished, output conclusion: the final "
    "answer of the question or give up if you think you cannot answer this question.\n"
)
CUE = " assistant: "
CONCLUSION = "\nconclusion: "


def strip_marker(plan: str) -> str:
    """The thought without its `Next: …` marker (and whatever follows it), stripped."""
    cut = [i for i in (plan.find(m) for _, m in au.MARKERS) if i >= 0]
    return (plan[: min(cut)] if cut else plan).strip()


def render_history(turns: Iterable[Turn | Mapping]) -> Prompt:
    """protocol.md §3.1: a planner turn and the caller turn after it become one `assistant: <thought>\\n<call></s>`."""
    turns = as_turns(turns)
    out, i = [], 0
    while i < len(turns):
        t = turns[i]
        if t.role in ("assistant", "planner") and i + 1 < len(turns) and turns[i + 1].role == "caller":
            out += [template("assistant: "), strip_marker(t.text), template("\n"), turns[i + 1].text, au.EOS]
            i += 2
            continue
        out.append(au.render_history([t]))
        i += 1
    return Prompt(*out)


def target(plan: str, *, call: str | None = None, answer: str | None = None) -> str:
    """The backbone's training target for one step: thought + call, conclusion or give up (prepro_backbone)."""
    thought = strip_marker(plan)
    if call is not None:
        return f"{thought}\n{call}"
    if answer is not None:
        return f"{thought}{CONCLUSION}{answer}"
    return f"{thought}{CONCLUSION}give up."


@dataclass(frozen=True)
class Step:
    """A parsed backbone output: kind is "caller", "conclusion" or "give_up"."""

    kind: str
    thought: str
    action: str = "none"
    arguments: str = "{}"
    answer: str = ""
    call: str = ""          # the call as written, from "Action:" on (history renders it verbatim)


def parse_output(text: str) -> Step:
    """Split a backbone output into thought and call / answer; never raises."""
    text = text.strip()
    i = text.rfind(CONCLUSION.strip())
    if i >= 0:
        answer = text[i + len(CONCLUSION.strip()):].strip()
        thought = text[:i].strip()
        return Step("give_up" if answer == "give up." else "conclusion", thought, answer=answer)
    j = text.find("Action:")
    call = au.parse_call(text[j:] if j >= 0 else "")
    return Step("caller", text[:j].strip() if j >= 0 else text, call.action, call.arguments,
                call=text[j:].strip() if j >= 0 else "")


@dataclass(frozen=True)
class Backbone:
    """Prompt assembly for the single-model baseline."""

    system_prefix: bool = False
    doc_chars: int = 256
    observation_chars: int = 1024

    name = NAME
    roles = ("backbone",)

    def prompt(self, docs: Sequence[Mapping], history: Iterable[Turn | Mapping]) -> Prompt:
        body = au.fill(TEMPLATE, doc=au.render_doc(docs), tool_names=au.render_tool_names(docs),
                       history=render_history(history))
        return Prompt(template(au.SYSTEM_PREFIX if self.system_prefix else ""), body, template(CUE))

    encode = staticmethod(au.encode_prompt)
    parse_output = staticmethod(parse_output)

    def truncate_observation(self, text: str) -> str:
        return au.truncate_observation(text, self.observation_chars)

    def step_turns(self, thought: str, call: str, observation: str) -> tuple[Turn, Turn, Turn]:
        """The history a call step adds; `render_history` joins the thought and call into one turn."""
        return Turn("assistant", thought), Turn("caller", call), Turn("observation", observation)
