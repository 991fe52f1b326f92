"""Chat requests → what a team runs: the OpenAI request checked field by field (each fault a 400 naming its
field), its `messages` rebuilt into the α-UMi history (stateless: the whole task is in the messages), its
`tools` into a client-side ToolSet and its `tool_choice` into a loop Choice.

The rebuild, per message: the first user message is the query; an assistant message with one tool call is a
planner turn (its `content`, the plan as the server sent it) whose caller turn is the call
(`Action: <name>\\nAction Input: <arguments>`) and whose observation is the `tool` message answering it; an
assistant message without calls is an earlier answer (a `conclusion` turn) and a later user message a new
user turn. System and developer messages are not shown to the team: α-UMi models were trained without one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..loop import Choice
from ..protocol import Turn
from ..protocol.grammar import CALLER_PREFIX, INPUT_SEPARATOR
from ..tools import Tool, ToolSet
from ..tools.core import NAME_RE
from .errors import bad_request

IGNORED_ROLES = ("system", "developer")
TOOL_CHOICES = ("auto", "none", "required")


@dataclass(frozen=True)
class ChatRequest:
    """One checked chat request. `tools` is None when the set's own tools run in the server."""

    model: str
    query: str
    history: tuple[Turn, ...]
    tools: ToolSet | None
    choice: Choice | None
    stream: bool
    include_usage: bool

    @property
    def client_tools(self) -> bool:
        return self.tools is not None


def parse_chat(body: Any, teams: Mapping[str, Any]) -> ChatRequest:
    """Check an OpenAI chat-completions body against the served teams (name → Team); raises ApiError(400)."""
    if not isinstance(body, dict):
        raise bad_request("body", "must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model", f"required: the name of a served set ({', '.join(teams)})")
    if model not in teams:
        raise bad_request("model", f"unknown model {model!r}; this server serves: {', '.join(teams)}",
                          code="model_not_found")
    team = teams[model]
    if body.get("n", 1) != 1:
        raise bad_request("n", "a team gives one answer per request; send n = 1 or leave it out")
    if body.get("logprobs"):
        raise bad_request("logprobs", "not available: the answer comes from several models")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise bad_request("response_format", "only {\"type\": \"text\"} is supported")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("stream", "must be true or false")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise bad_request("stream_options", "only allowed with stream: true")
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
            raise bad_request("stream_options", "must be an object like {\"include_usage\": true}")
        include_usage = options.get("include_usage", False)
    tools = None if body.get("tools") is None else parse_tools(body["tools"], constrained=team.constrained)
    offered = tools if tools is not None else team.tools
    choice = parse_tool_choice(body.get("tool_choice"), offered, team)
    query, history = parse_messages(body.get("messages"), team.protocol, offered)
    return ChatRequest(model, query, history, tools, choice, stream, include_usage)


def _client_side(name: str, args: dict) -> Any:
    # never called: a run with client-side tools stops at the call and returns it to the client
    raise RuntimeError(f"{name} is a client-side tool; its calls go back to the client")


def parse_tools(specs: Any, *, constrained: bool = True) -> ToolSet:
    """OpenAI function specs → a ToolSet whose calls go back to the client (400 naming the bad field)."""
    from ..errors import ToolError

    if not isinstance(specs, list) or not specs:
        raise bad_request("tools", "must be a non-empty list of {\"type\": \"function\", \"function\": {...}}; "
                                   "leave it out to use the server's tools")
    tools: list[Tool] = []
    for i, spec in enumerate(specs):
        where = f"tools[{i}]"
        if not isinstance(spec, dict):
            raise bad_request(where, "must be an object")
        if spec.get("type") != "function":
            raise bad_request(f"{where}.type", "must be \"function\" (the only kind of tool a team calls)")
        fn = spec.get("function")
        if not isinstance(fn, dict):
            raise bad_request(f"{where}.function", "must be an object with name, description and parameters")
        name = fn.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise bad_request(f"{where}.function.name", "must be 1-64 letters, digits, '_', '.' or '-'")
        if any(t.name == name for t in tools):
            raise bad_request(f"{where}.function.name", f"two tools are named {name!r}")
        if not isinstance(fn.get("description", ""), (str, type(None))):
            raise bad_request(f"{where}.function.description", "must be a string")
        params = fn.get("parameters")
        if params is not None and (not isinstance(params, dict) or params.get("type", "object") != "object"):
            raise bad_request(f"{where}.function.parameters", "must be a JSON schema of type \"object\"")
        try:
            tools.append(Tool.from_openai(spec, dispatcher=_client_side))
        except ToolError as e:
            raise bad_request(f"{where}.function.parameters", str(e)) from None
    toolset = ToolSet(tools)
    if constrained:
        from ..protocol.grammar import caller_grammar

        for i, t in enumerate(toolset):
            try:
                caller_grammar([t])
            except Exception as e:  # noqa: BLE001 - the converter raises assorted errors on schemas it cannot take
                raise bad_request(f"tools[{i}].function.parameters",
                                  f"cannot be turned into a call grammar ({type(e).__name__}: {e})") from None
    return toolset


def parse_tool_choice(value: Any, tools: ToolSet, team: Any) -> Choice | None:
    """`tool_choice` → the Choice for the first planner turn (None for auto)."""
    if value is None or value == "auto":
        return None
    if value == "none":
        choice = Choice(routes=("conclusion", "give_up"))
    elif value == "required":
        choice = Choice(routes=("caller",))
    elif isinstance(value, dict):
        if value.get("type") != "function":
            raise bad_request("tool_choice.type", "must be \"function\"")
        fn = value.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise bad_request("tool_choice.function.name", "required: the name of one of the tools")
        if name not in tools:
            raise bad_request("tool_choice.function.name",
                              f"no tool named {name!r}; tools: {', '.join(tools.names)}")
        if not team.constrained:
            raise bad_request("tool_choice", "this set decodes its calls without the call grammar, so it cannot "
                                             "be held to one tool")
        choice = Choice(routes=("caller",), tools=(name,))
    else:
        raise bad_request("tool_choice", "must be \"auto\", \"none\", \"required\" or "
                                         "{\"type\": \"function\", \"function\": {\"name\": ...}}")
    if not team.constrained and tuple(team.protocol.roles) == ("backbone",):
        raise bad_request("tool_choice", "this single-model set follows a tool_choice only under its grammar, "
                                         "and it decodes without one")
    return choice


def _text(content: Any, where: str, *, allow_empty: bool = False) -> str:
    """A message's content: a string or a list of text parts."""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"{where}.content[{j}]", "only text parts ({\"type\": \"text\", \"text\": ...}) "
                                                          "are supported")
            parts.append(part["text"])
        text = "\n".join(parts)
    elif content is None and allow_empty:
        return ""
    else:
        raise bad_request(f"{where}.content", "must be a string or a list of text parts")
    if not text.strip() and not allow_empty:
        raise bad_request(f"{where}.content", "is empty")
    return text


def call_text(name: str, arguments: str) -> str:
    """A call as the caller writes it (and the history holds it)."""
    return f"{CALLER_PREFIX}{name}{INPUT_SEPARATOR}{arguments.strip()}"


def parse_messages(messages: Any, protocol: Any, tools: ToolSet) -> tuple[str, tuple[Turn, ...]]:
    """`messages` → (query, the turns after it); a list that is not a valid conversation is a 400."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages", "must be a non-empty list")
    query: str | None = None
    turns: list[Turn] = []
    pending: dict[str, tuple[int, str, str]] = {}    # tool_call_id -> (message index, plan, call text)
    last = None
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(where, "must be an object with a role")
        role = m.get("role")
        if role in IGNORED_ROLES:
            _text(m.get("content"), where, allow_empty=True)
            continue
        if pending and role != "tool":
            j, _, _ = next(iter(pending.values()))
            raise bad_request(f"messages[{j}].tool_calls", f"call {next(iter(pending))!r} has no tool message "
                                                           f"answering it (it must follow the assistant message)")
        if role == "user":
            text = _text(m.get("content"), where)
            if query is None:
                query = text
            else:
                turns.append(Turn("user", text))
        elif role == "assistant":
            if query is None:
                raise bad_request(where, "the conversation must start with a user message")
            calls = m.get("tool_calls")
            if calls:
                plan = _text(m.get("content"), where, allow_empty=True)
                pending = {_tool_call(calls, where, tools): (i, plan, _call_of(calls[0]))}
            else:
                turns.append(Turn("conclusion", _text(m.get("content"), where)))
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{where}.tool_call_id", "required: the id of the tool call this answers")
            if call_id not in pending:
                raise bad_request(f"{where}.tool_call_id", f"{call_id!r} matches no tool call of the assistant "
                                                          f"message before it")
            _, plan, call = pending.pop(call_id)
            observation = protocol.truncate_observation(_text(m.get("content"), where, allow_empty=True))
            turns.extend(protocol.step_turns(plan, call, observation))
        elif role == "function":
            raise bad_request(f"{where}.role", "'function' messages are deprecated; use 'tool'")
        else:
            raise bad_request(f"{where}.role", f"must be system, developer, user, assistant or tool, not {role!r}")
        last = role
    if pending:
        j, _, _ = next(iter(pending.values()))
        raise bad_request(f"messages[{j}].tool_calls", f"call {next(iter(pending))!r} has no tool message "
                                                       f"answering it")
    if query is None:
        raise bad_request("messages", "needs a user message")
    if last == "assistant":
        raise bad_request("messages", "ends with an assistant message; add a user or tool message to continue")
    return query, tuple(turns)


def _tool_call(calls: Any, where: str, tools: ToolSet) -> str:
    """Checks an assistant message's tool_calls (exactly one, for a known tool); returns its id."""
    if not isinstance(calls, list):
        raise bad_request(f"{where}.tool_calls", "must be a list")
    if len(calls) != 1:
        raise bad_request(f"{where}.tool_calls", "an α-UMi team makes one call per step; send each call in "
                                                 "its own assistant message")
    c = calls[0]
    here = f"{where}.tool_calls[0]"
    if not isinstance(c, dict) or not isinstance(c.get("id"), str) or not c["id"]:
        raise bad_request(f"{here}.id", "required: a string id")
    if c.get("type", "function") != "function":
        raise bad_request(f"{here}.type", "must be \"function\"")
    fn = c.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise bad_request(f"{here}.function.name", "required")
    if fn["name"] not in tools:
        raise bad_request(f"{here}.function.name", f"no tool named {fn['name']!r}; tools: {', '.join(tools.names)}")
    if not isinstance(fn.get("arguments"), str):
        raise bad_request(f"{here}.function.arguments", "must be a string of JSON")
    return c["id"]


def _call_of(c: dict) -> str:
    return call_text(c["function"]["name"], c["function"]["arguments"])
