"""A run's items → an OpenAI chat completion, or the chunks of one as they happen (`stream: true`).

The answer is the summarizer's text; streamed, its tokens go out as `delta.content` while they decode. With
client-side tools a run stops at the caller's call: the message then carries the call in `tool_calls` and
the planner's plan in `content` (as the history needs it back), finish_reason "tool_calls". Streamed, the call
goes out as `delta.tool_calls` with `index` on every chunk and `id`, `type` and `function.name` on the first;
under the call grammar its arguments stream as the caller decodes them. Extensions: `usage.roles` (per-role
token counts) and a top-level `umi` object ({"status", "steps"}: gave_up says the team gave up).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..events import Usage
from ..protocol.grammar import CALLER_PREFIX, INPUT_SEPARATOR, ROUTE_MARKERS
from ..tools import parse_arguments
from .errors import ApiError
from .worker import Closed

FINISH = {"answered": "stop", "gave_up": "stop", "max_steps": "length"}


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def usage_dict(by_role: dict[str, Usage]) -> dict:
    """OpenAI usage summed over roles, with `prompt_tokens_details.cached_tokens` (KV reuse) and `roles`."""
    total = sum(by_role.values(), Usage())
    return {
        "prompt_tokens": total.prompt, "completion_tokens": total.generated,
        "total_tokens": total.prompt + total.generated,
        "prompt_tokens_details": {"cached_tokens": total.reused},
        "roles": {role: {"prompt_tokens": u.prompt, "completion_tokens": u.generated, "cached_tokens": u.reused,
                         "evaluated_tokens": u.evaluated, "forced_tokens": u.forced,
                         "prompt_seconds": round(u.prompt_seconds, 4), "decode_seconds": round(u.decode_seconds, 4)}
                  for role, u in by_role.items()},
    }


class _Stripped:
    """Deltas of a text whose final form is `text.strip()`: leading whitespace never goes out, trailing
    whitespace waits until more text follows, so the deltas join to the stripped text exactly."""

    def __init__(self) -> None:
        self.raw = ""
        self.sent = ""

    def push(self, piece: str) -> str:
        self.raw += piece
        return self.finish(self.raw.strip())

    def finish(self, final: str) -> str:
        if not final.startswith(self.sent):
            return ""
        new, self.sent = final[len(self.sent):], final
        return new


@dataclass
class ChatRun:
    """Folds one run's items into the response. `feed` returns the chunks to stream now; `chunks_end` the
    last ones; `completion` the whole response (non-streaming). `eager`: the calls are grammar-made, so the
    plan and the call may go out while decoding (otherwise only once the run stopped at a call)."""

    model: str
    client_tools: bool
    eager: bool
    tool_names: tuple[str, ...] = ()      # the client's tools
    include_usage: bool = False
    id: str = field(default_factory=lambda: new_id("chatcmpl-"))
    created: int = field(default_factory=lambda: int(time.time()))
    usage: dict[str, Usage] = field(default_factory=dict)
    content: str = ""
    plan: str | None = None            # the plan of a pending call
    call: Any = None                   # the Call event of a pending call
    call_id: str = field(default_factory=lambda: new_id("call_"))
    outcome: Any = None
    steps: int = 0
    error: ApiError | None = None
    _answer: _Stripped = field(default_factory=_Stripped)
    _args: _Stripped = field(default_factory=_Stripped)
    _caller_raw: str = ""
    _plan_sent: bool = False
    _head_sent: bool = False

    # ---- folding ------------------------------------------------------------------------------------------
    def feed(self, kind: str, value: Any) -> list[dict]:
        out: list[dict] = []
        if kind == "token":
            if value.role == "summarizer":
                out += self._content(self._answer.push(value.text))
            elif value.role == "caller" and self.client_tools and self.eager:
                out += self._caller_piece(value.text)
            return out
        if kind != "event":
            return out
        e = value
        self.steps = max(self.steps, e.step)
        if e.kind in ("plan", "call", "answer") and e.role != "team":
            self.usage[e.role] = self.usage.get(e.role, Usage()) + e.usage
        if e.kind == "plan":
            if self.client_tools and e.route == "caller":
                self.plan = e.text
                if self.eager:
                    out += self._send_plan()
        elif e.kind == "call" and self.client_tools:
            self.call = e
            if self.eager and e.tool in self.tool_names:
                out += self._send_head(e.tool) + self._delta_args(self._args.finish(e.arguments))
        elif e.kind == "observation":
            # the call ran in the server (a fault the model sees): it is not the client's
            self.call = self.plan = None
            self._caller_raw, self._args = "", _Stripped()
        elif e.kind == "answer":
            out += self._content(self._answer.finish(e.text))
        elif e.kind == "give_up":
            out += self._content(self._answer.finish(f"I could not answer this: {_without_marker(e.text)}"))
        elif e.kind == "outcome":
            self.outcome = e
            if e.status == "max_steps":
                out += self._content(self._answer.finish(e.reason))
        return out

    def end(self, value: Any, cancel_reason: str = "") -> None:
        """The run's end item (None, or the exception the worker met) and why it was cancelled, if it was."""
        if isinstance(value, Closed) or (cancel_reason == "shutdown" and self.call is None):
            self.error = ApiError(503, "the server is shutting down; the run was stopped", type="server_error",
                                  code="shutting_down")
        elif isinstance(value, BaseException):
            self.error = ApiError(500, f"the run failed: {type(value).__name__}: {value}", type="server_error")
        elif self.call is None and self.outcome is not None:
            o = self.outcome
            if o.status == "error":
                self.error = ApiError(500, f"the team failed: {o.reason}", type="server_error")
            elif o.status == "cancelled" and "budget" in o.reason:
                self.error = ApiError(504, f"the run exceeded its wall-clock budget: {o.reason}",
                                      type="timeout_error", code="budget_exceeded",
                                      headers={"x-should-retry": "false"})
            elif o.status == "cancelled":
                self.error = ApiError(503, "the run was cancelled", type="server_error", code="cancelled")
        elif self.call is None:
            self.error = ApiError(503, "the run was cancelled before it started", type="server_error",
                                  code="cancelled")

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.call is not None else FINISH.get(self.outcome.status, "stop")

    @property
    def status(self) -> str:
        return "tool_calls" if self.call is not None else self.outcome.status

    def extension(self) -> dict:
        return {"status": self.status, "steps": self.steps}

    # ---- the whole response -------------------------------------------------------------------------------
    def completion(self) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.call is not None:
            message["content"] = self.plan or None
            message["tool_calls"] = [{"id": self.call_id, "type": "function",
                                      "function": {"name": self.call.tool, "arguments": self.call.arguments}}]
        else:
            message["content"] = self.content
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason,
                             "logprobs": None}],
                "usage": usage_dict(self.usage), "umi": self.extension()}

    # ---- chunks ---------------------------------------------------------------------------------------
    def chunk(self, delta: dict | None = None, finish_reason: str | None = None, **extra) -> dict:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                             "logprobs": None}]
        c = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
             "choices": choices, **extra}
        if self.include_usage:
            c.setdefault("usage", None)
        return c

    def chunks_start(self) -> list[dict]:
        return [self.chunk({"role": "assistant", "content": ""})]

    def chunks_end(self) -> list[dict]:
        """The closing chunks of a run that ended without an error: any call not yet sent, finish_reason, usage."""
        out: list[dict] = []
        if self.call is not None:
            out += self._send_plan() + self._send_head(self.call.tool)
            out += self._delta_args(self._args.finish(self.call.arguments))
        out.append(self.chunk({}, self.finish_reason, umi=self.extension()))
        if self.include_usage:
            out.append(self.chunk(None, usage=usage_dict(self.usage)))
        return out

    def _content(self, text: str) -> list[dict]:
        if not text:
            return []
        self.content += text
        return [self.chunk({"content": text})]

    def _send_plan(self) -> list[dict]:
        if self._plan_sent or not self.plan:
            return []
        self._plan_sent = True
        return [self.chunk({"content": self.plan})]

    def _send_head(self, name: str) -> list[dict]:
        if self._head_sent:
            return []
        self._head_sent = True
        return [self.chunk({"tool_calls": [{"index": 0, "id": self.call_id, "type": "function",
                                            "function": {"name": name, "arguments": ""}}]})]

    def _delta_args(self, text: str) -> list[dict]:
        if not text:
            return []
        return [self.chunk({"tool_calls": [{"index": 0, "function": {"arguments": text}}]})]

    def _caller_piece(self, piece: str) -> list[dict]:
        """The caller's raw text as it decodes (`Action: <name>\\nAction Input: <JSON>`): once the name is
        complete the call's first chunk goes out, then the arguments as they grow."""
        self._caller_raw += piece
        sep = INPUT_SEPARATOR.rstrip(" ")
        i = self._caller_raw.find(sep)
        if i < 0:
            return []
        out = []
        if not self._head_sent:
            name = self._caller_raw[:i].strip()
            name = name[len(CALLER_PREFIX.strip()):].strip() if name.startswith(CALLER_PREFIX.strip()) else name
            if name not in self.tool_names:
                return []
            out += self._send_plan() + self._send_head(name)
        args = self._caller_raw[i + len(sep):]
        return out + self._delta_args(self._args.push(args[len(self._args.raw):]))


def _without_marker(plan: str) -> str:
    """A plan's text for people: without its trailing route marker."""
    for marker in ROUTE_MARKERS:
        if plan.endswith(marker):
            return plan[:-len(marker)].rstrip()
    return plan


def client_can_run(tools) -> Any:
    """stop_at for client-side tools: stop at a call the client can run (a known tool, arguments valid for its
    schema); other calls run in the server as faults the model sees, as any model fault does."""

    def stop(event) -> bool:
        if event.kind != "call" or event.tool not in tools:
            return False
        return parse_arguments(event.arguments, tools[event.tool].parameters)[1] is None

    return stop


def client_calls(tools) -> Any:
    """stop_at for client-side tools under the call grammar, which admits only their names and schemas: every
    call goes to the client (as it streamed, even where a detail of a schema is beyond the grammar)."""

    def stop(event) -> bool:
        return event.kind == "call" and event.tool in tools

    return stop
