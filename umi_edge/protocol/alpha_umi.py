"""The α-UMi ToolBench protocol (alpha-umi/toolbench-v1): templates, rendering, routing, parsing, encoding.

Reference: docs/protocol.md (protocol.md §3, §4.2-4.6, §5). The checkpoints were trained on
these exact strings, so the templates keep their typos. Parsers never raise: any model output maps to a
result the loop can act on.

Untrusted text: prompts are rendered as `Prompt`s (base.py), strings that keep their segments. Only the
`</s>` separators the templates themselves place (after each history turn) become the EOS id; the query,
tool docs, observations and generated text fed back (thoughts, calls) are content and always tokenize as
plain text, whatever special-token spelling they contain, so a tool cannot forge a turn. Placeholders are
filled in one pass, so content never has a placeholder substituted inside it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from .base import SEPARATOR, CallParse, Prompt, Route, Turn, as_turns, separator, template

NAME = "alpha-umi/toolbench-v1"

# GLPFT/utils/prompt_lib.py l.13-33, byte for byte (typos are part of the trained distribution).
PLANNER_TEMPLATE = (
    "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\n"
    "You are the assistant to plan what to do next and whether is caller's or conclusion's turn to answer.\n"
    "Answer with a following format:\nThe thought of the next step, followed by Next: caller or conclusion or give up."
)
CALLER_TEMPLATE = (
    "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\n"
    "The thought of this step is:\n{thought}\nBase on the thought make an api call in the following format:\n"
    "Action: the name of api that should be called in this step, should be exactly in [{tool_names}],\n"
    "Action Input: the api call request."
)
SUMMARIZER_TEMPLATE = "Make a conclusion based on the conversation history:\n{history}"
# The head the planner and caller templates share, up to the end of the history: the "trunk" of a step's
# prompts. A runtime may evaluate it once for both roles (under a shared adapter) and each role's tail after it.
TRUNK_TEMPLATE = "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}"
assert PLANNER_TEMPLATE.startswith(TRUNK_TEMPLATE) and CALLER_TEMPLATE.startswith(TRUNK_TEMPLATE)

# protocol.md §3.8 (ToolBench Tree_search_prompts.DIVERSITY_PROMPT): the user turn DFSDT adds when re-expanding a node.
DIVERSITY_TEMPLATE = (
    "This is not the first time you try this task, all previous trails failed.\nBefore you generate my thought "
    "for this state, I will first show you your previous actions for this state, and then you must generate "
    "actions that is different from all of them. Here are some previous actions candidates:\n"
    "{previous_candidate}\nRemember you are now in the intermediate state of a trail, you will first analyze "
    "the now state and previous action candidates, then make actions that is different from all the previous."
)

EOS_TEXT = "</s>"
EOS = separator(EOS_TEXT)   # the template's own turn separator: the only text that becomes the EOS id
SYSTEM_PREFIX = "system: "  # training only (protocol.md §4.1); no reference inference path adds it
CUES = {"planner": " assistant: ", "caller": " caller: ", "summarizer": " conclusion: "}

# Checked in this order (protocol.md §5.1): give up first, then conclusion, caller is the default.
MARKERS = (("give_up", "Next: give up."), ("conclusion", "Next: conclusion."), ("caller", "Next: caller."))
NO_MARKER_SUFFIX = " Next: caller."  # real-time reference; the static pipeline appends it without the space
EMPTY_OUTPUTS = ("", ".", ",")

# History labels (protocol.md §3.4); "planner" is accepted as an alias because the label is an artefact of training.
_LABELS = {"user": "user", "assistant": "assistant", "planner": "assistant", "caller": "caller",
           "observation": "observation", "conclusion": "conclusion"}


def render_doc(docs: Iterable[Mapping]) -> str:
    """`{doc}`: one json.dumps line per tool (defaults: ensure_ascii, ", "/": " separators, no sorting)."""
    return "".join(json.dumps(dict(d)) + "\n" for d in docs)


def render_tool_names(docs: Iterable[Mapping]) -> str:
    return ", ".join(str(d["Name"]) for d in docs)


def render_history(turns: Iterable[Turn | Mapping]) -> Prompt:
    """protocol.md §3.4: `<label>: <text></s>` per turn, except observations (no `</s>`); each text is content."""
    out = []
    for turn in as_turns(turns):
        label = _LABELS.get(turn.role)
        if label is None:
            raise ValueError(f"unknown history role {turn.role!r}; expected one of {sorted(_LABELS)}")
        out += [template(f"{label}: "), turn.text] + ([] if label == "observation" else [EOS])
    return Prompt(*out)


_PLACEHOLDER = re.compile(r"\{(doc|tool_names|thought|history)\}")


def fill(text: str, *, doc: str | None = None, tool_names: str | None = None,
         thought: str | None = None, history: str | None = None) -> Prompt:
    """The template `text` (trusted) with its placeholders replaced in one pass; the values are content
    (a rendered history keeps its separators). A placeholder whose value is None stays as written.

    The reference uses str.replace in the order doc → tool_names → thought → history (protocol.md §3.2), which
    splices the history into a thought or tool doc that contains `{history}`; one pass gives the same text
    otherwise.
    """
    values = {"doc": doc, "tool_names": tool_names, "thought": thought, "history": history}
    pieces: list = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        value = values[m.group(1)]
        if value is not None:
            pieces += [template(text[pos:m.start()]), value]
            pos = m.end()
    pieces.append(template(text[pos:]))
    return Prompt(*pieces)


def postprocess_planner(text: str) -> str:
    """protocol.md §4.6 steps 1-3 (real-time planner): strip, drop a leading ': ', empty-ish → 'none'."""
    text = text.strip()
    if text.startswith(": "):
        text = text[2:]
    return "none" if text.strip() in EMPTY_OUTPUTS else text


def postprocess(text: str) -> str:
    """protocol.md §4.6 for the caller and the summarizer in the real-time reference: strip only."""
    return text.strip()


def is_empty(text: str) -> bool:
    """True for the outputs the real-time reference retries the planner on (protocol.md §4.6)."""
    text = text.strip()
    if text.startswith(": "):
        text = text[2:]
    return text.strip() in EMPTY_OUTPUTS


def route(plan: str) -> Route:
    """protocol.md §5.1: give up → conclusion → caller; cut right after the first marker; no marker → caller."""
    for kind, marker in MARKERS:
        i = plan.find(marker)
        if i >= 0:
            return Route(kind=kind, plan=plan[: i + len(marker)], marker=True)
    return Route(kind="caller", plan=plan + NO_MARKER_SUFFIX, marker=False)


def parse_call(text: str, names: Iterable[str] = ()) -> CallParse:
    """protocol.md §5.3 on the caller's text: last `Action:` (cut at `Action Input:`), last `Action Input:`; defaults.

    With `names` (the registered tools, for grammar-constrained output), a text shaped exactly
    `Action: <name>\nAction Input: <args>` is split by that structure first, so arguments that
    themselves contain "Action:" are not misread as the reference's last-occurrence rule would.
    """
    for name in sorted(names, key=len, reverse=True):
        head = f"Action: {name}\nAction Input:"
        if text.lstrip().startswith(head):
            return CallParse(action=name, arguments=text.lstrip()[len(head):].strip(), has_action=True,
                             has_input=True)
    # The reference parses value.split("</s>")[1], i.e. the caller text up to any later `</s>`.
    text = text.split(EOS_TEXT, 1)[0]
    if text.startswith("caller: "):
        text = text[len("caller: "):]
    i = text.rfind("Action Input:")
    arguments = text[i + len("Action Input:"):].strip() if i >= 0 else "{}"
    j = text.rfind("Action:")
    if j >= 0:
        action = text[j + len("Action:"):].strip().split("Action Input:", 1)[0].strip()
    else:
        action = "none"
    return CallParse(action=action, arguments=arguments, has_action=j >= 0, has_input=i >= 0)


def diversity_prompt(candidates: Sequence[Mapping], observation: str | None = None) -> str:
    """protocol.md §3.8: the DFSDT diversity user turn. `candidates`: one {"name", "arguments", "function_output",
    "mento-carlo-action-value"} per existing child action; `observation`: the node's, if it has one."""
    block = json.dumps([dict(c) for c in candidates], indent=2) + "\n"
    if observation is not None:
        block += f"again, your former observation: {observation}\n"
    return DIVERSITY_TEMPLATE.replace("{previous_candidate}", block)


def tool_doc(name: str, toolkit: str, description: str, inputs: Mapping[str, tuple[str, object]],
             max_chars: int = 256) -> dict:
    """protocol.md §3.3: the training-format doc line of a tool. `inputs`: parameter → (JSON type, description
    or None). The `function` text is prefixed and cut to `max_chars`; the name keeps its last 64 characters."""
    function = f'This is the subfunction for tool "{toolkit}", you can use this tool.'
    if description:
        function += f'The description of this function is: "{description}"'
    docs = {key: kind if desc is None else f"{kind}, {str(desc)[-256:]}" for key, (kind, desc) in inputs.items()}
    return {"Name": name[-64:], "function": function[:max_chars], "input": docs}


def truncate_observation(text: str, limit: int = 1024) -> str:
    """protocol.md §5.4: obs[:limit] + '...' when longer than limit (Python characters)."""
    return text[:limit] + "..." if len(text) > limit else text


def encode(prompt: Prompt | str, tokenize: Callable[[str], Sequence[int]], bos_id: int, eos_id: int) -> list[int]:
    """protocol.md §4.2-4.3: BOS + the text between separators, each run tokenized on its own as plain text, joined by
    the EOS id. A `Prompt` is split at its EOS segments only, so content never becomes EOS; a plain str is
    read as trusted text whose every `</s>` is a separator (a stored training input, a golden test)."""
    if isinstance(prompt, Prompt):
        runs = [""]
        for seg in prompt.segments:
            if seg == EOS:
                runs.append("")
            elif seg.kind == SEPARATOR:
                raise ValueError(f"{NAME} has no separator {seg.text!r}")
            else:
                runs[-1] += seg.text
    else:
        runs = prompt.split(EOS_TEXT)
    ids = [bos_id]
    for i, run in enumerate(runs):
        if i:
            ids.append(eos_id)
        if run:  # a lone segment would add a spurious dummy-prefix piece
            ids.extend(tokenize(run))
    return ids


def encode_prompt(prompt: Prompt, tokenize: Callable[[str], Sequence[int]], bos_id: int, eos_id: int) -> list[int]:
    """`encode` for the runtime: only a rendered `Prompt`, so no untyped string's `</s>` can become EOS."""
    if not isinstance(prompt, Prompt):
        raise TypeError(f"encode a Prompt rendered by the protocol, not a {type(prompt).__name__}: in a plain "
                        "str every '</s>' would become EOS, including any inside a query or tool output")
    return encode(prompt, tokenize, bos_id, eos_id)


@dataclass(frozen=True)
class AlphaUmi:
    """Prompt assembly per role (protocol.md §3.5) with the reference switches; defaults: the real-time runtime."""

    system_prefix: bool = False         # True: prepend 'system: ' as in training (protocol.md §4.1), for A/B tests
    plan_label: str = "assistant"       # "planner": the static pipeline's label (protocol.md §6.3, §7 item 2)
    doc_chars: int = 256                # tool-doc `function` truncation: 256 current code, 150 test set
    observation_chars: int = 1024       # --max_observation_length of the real-time reference
    planner_attempts: int = 5           # generations while the planner output is empty, then 'none' (protocol.md §4.6)

    name = NAME
    roles = ("planner", "caller", "summarizer")

    def __post_init__(self):
        if self.plan_label not in ("assistant", "planner"):
            raise ValueError(f"plan_label must be 'assistant' or 'planner', not {self.plan_label!r}")

    def _prefix(self) -> Prompt:
        return Prompt(template(SYSTEM_PREFIX if self.system_prefix else ""))

    def _finish(self, body: Prompt, role: str) -> Prompt:
        return Prompt(self._prefix(), body, template(CUES[role]))

    def _with_plan(self, history: Iterable[Turn | Mapping], plan: str) -> Prompt:
        return Prompt(render_history(history), template(f"{self.plan_label}: "), plan, EOS)

    def planner_prompt(self, docs: Sequence[Mapping], history: Iterable[Turn | Mapping]) -> Prompt:
        body = fill(PLANNER_TEMPLATE, doc=render_doc(docs), history=render_history(history))
        return self._finish(body, "planner")

    def caller_prompt(self, docs: Sequence[Mapping], history: Iterable[Turn | Mapping], plan: str) -> Prompt:
        body = fill(CALLER_TEMPLATE, doc=render_doc(docs), tool_names=render_tool_names(docs),
                    thought=plan, history=self._with_plan(history, plan))
        return self._finish(body, "caller")

    def trunk(self, docs: Sequence[Mapping], history: Iterable[Turn | Mapping], plan: str | None = None) -> Prompt:
        """The text planner_prompt(docs, history) starts with, and caller_prompt(docs, history, plan) with
        `plan`: the tool docs and the history, before the role's own instructions and cue."""
        rendered = render_history(history) if plan is None else self._with_plan(history, plan)
        return Prompt(self._prefix(), fill(TRUNK_TEMPLATE, doc=render_doc(docs), history=rendered))

    def summarizer_prompt(self, history: Iterable[Turn | Mapping], plan: str) -> Prompt:
        body = fill(SUMMARIZER_TEMPLATE, history=self._with_plan(history, plan))
        return self._finish(body, "summarizer")

    # Output handling, delegated to the module functions so other code can reuse them directly.
    postprocess_planner = staticmethod(postprocess_planner)
    postprocess = staticmethod(postprocess)
    is_empty = staticmethod(is_empty)
    route = staticmethod(route)
    parse_call = staticmethod(parse_call)
    encode = staticmethod(encode_prompt)

    def truncate_observation(self, text: str) -> str:
        return truncate_observation(text, self.observation_chars)

    def step_turns(self, plan: str, call: str, observation: str) -> tuple[Turn, Turn, Turn]:
        """The history a caller step adds: plan, call, observation (protocol.md §3.4, §5.1)."""
        return Turn("assistant", plan), Turn("caller", call), Turn("observation", observation)
