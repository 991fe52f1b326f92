"""The scripted task the bench replays: fixed planner / caller / summarizer outputs over the demo tools.

Five planner turns (four caller steps, then the conclusion), so prefix reuse is measured over a realistic
history: real tool observations from the demo toolset, the real α-UMi prompts, the real loop.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Mapping, Sequence

from ..engine.base import Generation

QUERY = "What is 15% of 2,480 plus the population of France, in millions?"

PLANNER = (
    "First I need 15% of 2,480, which the calculator can compute. Next: caller.",
    "The result is 372. Now I need the population of France from the country facts. Next: caller.",
    "France has 68,200,000 people. I add 372 to that population with the calculator. Next: caller.",
    "The sum is 68,200,372. The question asks for millions, so I divide it by 1,000,000. Next: caller.",
    "The answer is about 68.2 million. I have everything I need. Next: conclusion.",
)
CALLER = (
    'Action: calculator\nAction Input: {"expression": "0.15 * 2480"}',
    'Action: country_info\nAction Input: {"country": "France"}',
    'Action: calculator\nAction Input: {"expression": "68200000 + 372"}',
    'Action: calculator\nAction Input: {"expression": "68200372 / 1000000"}',
)
SUMMARIZER = ("15% of 2,480 is 372; added to the population of France (68,200,000) that makes 68,200,372, "
              "about 68.2 million.",)
STEPS = len(PLANNER)

# Long greedy continuations for decode timing: a count keeps a small model from stopping at EOS.
DECODE_PROMPT = "Count from 1 to 500 in words, separated by commas: one, two, three, four, five,"


def script() -> dict[str, tuple[str, ...]]:
    return {"planner": PLANNER, "caller": CALLER, "summarizer": SUMMARIZER}


def first_prompts(tools, protocol) -> dict[str, str]:
    """The step-1 planner prompt and the step-1 caller prompt, rendered exactly as the loop renders them."""
    from ..protocol import Turn

    docs = tools.docs(protocol.doc_chars)
    history = [Turn("user", QUERY)]
    return {"planner": protocol.planner_prompt(docs, history),
            "caller": protocol.caller_prompt(docs, history, PLANNER[0])}


class ScriptedRole:
    """RoleEngine over a real role: the prompt is evaluated for real, the output comes from the script.

    The scripted output tokens are then decoded into the KV cache too, as a real generation leaves them
    there. With `reuse` off the role's cache is cleared before each prompt (a fresh KV per call).
    """

    def __init__(self, role, outputs: Sequence[str], *, reuse: bool):
        self.role = role
        self.outputs = deque(outputs)
        self.reuse = reuse
        self.bos_id, self.eos_id, self.n_ctx = role.bos_id, role.eos_id, role.n_ctx
        self.has_trunk, self.enforces_grammar = role.has_trunk, role.enforces_grammar

    def tokenize(self, text: str) -> list[int]:
        return self.role.tokenize(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.role.detokenize(ids)

    def generate(self, prompt: Sequence[int], *, max_tokens: int, grammar: str | None = None,
                 cancel: threading.Event | None = None, trunk: int = 0, on_token=None) -> Generation:
        if not self.outputs:
            raise RuntimeError(f"scripted role {getattr(self.role, 'name', '?')!r} ran out of outputs")
        text = self.outputs.popleft()
        if not self.reuse:
            self.role.reset()
        g = self.role.generate(prompt, max_tokens=0, cancel=cancel, trunk=trunk)
        out = self.role.tokenize(text)
        if self.reuse and out:
            # what sampling would have left in the KV cache; decode work, not prompt work
            self.role.generate(list(prompt) + out, max_tokens=0, cancel=cancel, trunk=trunk)
        return Generation(text=text, tokens=tuple(out) + (self.eos_id,), stop_reason="eos", n_prompt=g.n_prompt,
                          n_reused=g.n_reused, n_evaluated=g.n_evaluated, n_generated=len(out) + 1,
                          n_truncated=g.n_truncated, prompt_seconds=g.prompt_seconds)


def scripted_roles(roles: Mapping[str, object], *, reuse: bool) -> dict[str, ScriptedRole]:
    outputs = script()
    return {name: ScriptedRole(role, outputs[name], reuse=reuse) for name, role in roles.items()}
