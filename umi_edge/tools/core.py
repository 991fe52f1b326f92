"""Tools and tool sets: definitions from callables / OpenAI schemas / ToolBench docs, α-UMi doc lines, and
guarded execution (validated arguments, per-call timeout in a thread or a worker process (isolation.py),
deterministic results, faults as observations (observation.py))."""
from __future__ import annotations

import copy
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..errors import ToolError
from ..protocol.alpha_umi import tool_doc
from .isolation import POOL, Where, check_mode, locate, process_supported, run_in_thread
from .observation import describe, fault, serialize
from .schema import function_schema

NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")  # OpenAI's rule; ToolBench also keeps names to 64 chars
DOC_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")
EMPTY_PARAMETERS = {"type": "object", "properties": {}}

Dispatcher = Callable[[str, dict], Any]


@dataclass(frozen=True)
class ToolResult:
    """The observation text of one call; `error` names a model-side fault, None on success.

    Faults: unknown_tool, bad_arguments, raised, timeout, hung, not_json, not_executable, cancelled.
    """

    text: str
    error: str | None = None
    tool: str | None = None          # the resolved tool name (None if unknown)
    suffix_match: bool = False       # resolved by the reference's endswith fallback, not exactly
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def _check_schema(schema: Any, where: str) -> dict:
    import jsonschema

    if not isinstance(schema, Mapping):
        raise ToolError(f"{where}: parameters must be a JSON-schema object, got {type(schema).__name__}")
    schema = copy.deepcopy(dict(schema))  # ours to keep: later edits to the caller's dict do not leak in
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ToolError(f"{where}: invalid JSON schema for parameters ({e.message})") from None
    if schema.get("type", "object") != "object":
        raise ToolError(f"{where}: parameters must describe an object (type 'object')")
    return schema


def _doc_type(prop: Mapping) -> str:
    t = prop.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    if t is None:
        for alt in prop.get("anyOf", prop.get("oneOf", ())):
            if isinstance(alt, Mapping) and alt.get("type") not in (None, "null"):
                return _doc_type(alt)
        if prop.get("enum"):
            return {bool: "boolean", int: "integer", float: "number"}.get(type(prop["enum"][0]), "string")
    return t if t in DOC_TYPES else "string"


@dataclass(frozen=True, eq=False)
class Tool:
    """One callable tool. `fn` is called with keyword arguments, or `dispatcher(name, args)` is.

    `toolkit` is the ToolBench "tool" named in the doc prefix (defaults to the tool's name);
    `toolbench_doc`, when set, is the verbatim α-UMi doc line (tools imported from ToolBench docs).
    """

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    fn: Callable[..., Any] | None = None
    dispatcher: Dispatcher | None = None
    toolkit: str | None = None
    timeout: float | None = None       # overrides the loop's tool_timeout for this tool
    toolbench_doc: Mapping[str, Any] | None = None
    process_safe: bool = False         # keeps no state between calls: tool_isolation "auto" runs it in a worker

    def __post_init__(self):
        if self.toolbench_doc is None and not NAME_RE.match(self.name or ""):
            raise ToolError(f"tool name {self.name!r}: use 1-64 letters, digits, '_', '.' or '-'")

    def __call__(self, *args, **kwargs):
        """A decorated function stays callable as itself."""
        if self.fn is None:
            raise ToolError(f"tool {self.name!r} has no Python callable")
        return self.fn(*args, **kwargs)

    @property
    def executable(self) -> bool:
        return self.fn is not None or self.dispatcher is not None

    # ---- constructors -------------------------------------------------------------------------------
    @classmethod
    def from_function(cls, fn: Callable, *, name: str | None = None, description: str | None = None,
                      toolkit: str | None = None, timeout: float | None = None,
                      process_safe: bool = False) -> "Tool":
        """Schema from type hints, description and per-argument docs from the docstring."""
        if not callable(fn):
            raise ToolError(f"tool {fn!r} is not callable")
        doc_description, schema = function_schema(fn)
        return cls(name=name or fn.__name__, description=doc_description if description is None else description,
                   parameters=schema, fn=fn, toolkit=toolkit, timeout=timeout, process_safe=process_safe)

    @classmethod
    def from_openai(cls, spec: Mapping, fn: Callable | None = None, *, dispatcher: Dispatcher | None = None,
                    toolkit: str | None = None, timeout: float | None = None) -> "Tool":
        """From `{"type": "function", "function": {name, description, parameters}}` (or the inner object)."""
        inner = spec.get("function", spec) if isinstance(spec, Mapping) else None
        if not isinstance(inner, Mapping) or not isinstance(inner.get("name"), str):
            raise ToolError(f"OpenAI tool spec needs function.name: {spec!r:.200}")
        name = inner["name"]
        parameters = _check_schema(inner.get("parameters") or EMPTY_PARAMETERS, f"tool {name!r}")
        return cls(name=name, description=str(inner.get("description") or ""), parameters=parameters, fn=fn,
                   dispatcher=dispatcher, toolkit=toolkit, timeout=timeout)

    @classmethod
    def from_toolbench(cls, doc: Mapping, *, dispatcher: Dispatcher | None = None,
                       timeout: float | None = None) -> "Tool":
        """From a ToolBench/α-UMi doc line `{"Name", "function", "input"}`; rendered back verbatim."""
        if not (isinstance(doc, Mapping) and isinstance(doc.get("Name"), str) and doc["Name"]
                and isinstance(doc.get("function", ""), str) and isinstance(doc.get("input", {}), Mapping)):
            raise ToolError(f"ToolBench doc needs a string Name, string function and object input: {doc!r:.200}")
        properties = {}
        for key, value in doc.get("input", {}).items():
            kind, _, desc = str(value).partition(", ")
            prop = {"type": kind if kind in DOC_TYPES else "string"}
            if desc:
                prop["description"] = desc
            properties[key] = prop
        return cls(name=doc["Name"], description=doc.get("function", ""),
                   parameters={"type": "object", "properties": properties}, dispatcher=dispatcher,
                   timeout=timeout, toolbench_doc=dict(doc))

    # ---- rendering ----------------------------------------------------------------------------------
    def doc(self, max_chars: int = 256) -> dict:
        """The α-UMi training-format doc line (protocol.md §3.3), rendered by the protocol module."""
        if self.toolbench_doc is not None:
            return dict(self.toolbench_doc)
        inputs = {}
        for key, prop in (self.parameters.get("properties") or {}).items():
            prop = prop if isinstance(prop, Mapping) else {}
            inputs[key] = (_doc_type(prop), prop.get("description"))
        return tool_doc(self.name, self.toolkit or self.name, self.description, inputs, max_chars)

    # ---- execution ----------------------------------------------------------------------------------
    def worker_location(self, isolation: str = "auto") -> Where | None:
        """Where a worker process finds this tool's function under `isolation`; None: it runs in a thread.
        ToolError when the mode needs a worker but none could find the function."""
        check_mode(isolation)
        if self.fn is None or isolation == "thread" or (isolation == "auto" and not self.process_safe):
            return None
        if not process_supported():
            if isolation == "auto":
                return None
            raise ToolError('tool_isolation "process" needs a POSIX system; set tool_isolation = "thread"')
        where = locate(self.fn)
        if where is None and isolation == "auto":
            return None
        if where is None:
            raise ToolError(f"tool {self.name!r} cannot run in a worker process: its function is not importable "
                            "by module and name (a lambda, a nested function or a method); define it at module "
                            "level, or set tool_isolation = \"thread\"")
        return where

    def run(self, arguments: str, *, timeout: float, cancel: threading.Event | None = None,
            isolation: str = "auto") -> ToolResult:
        """Parse + validate `arguments`, call with a timeout in a thread or a worker process (`isolation`:
        auto / thread / process, see isolation.py); every model-side fault becomes an observation."""
        t0 = time.monotonic()

        def done(text: str, error: str | None = None) -> ToolResult:
            return ToolResult(text, error, self.name, seconds=time.monotonic() - t0)

        if not self.executable:
            return done(fault(f"{self.name} has no implementation in this runtime"), "not_executable")
        where = self.worker_location(isolation)
        args, problem = parse_arguments(arguments, self.parameters)
        if problem:
            return done(fault(f"invalid arguments for {self.name}: {problem}"), "bad_arguments")
        limit = self.timeout if self.timeout is not None else timeout
        if where is not None:
            return done(*POOL.run(self.name, where, args, limit, cancel))
        call = (lambda: self.fn(**args)) if self.fn is not None else (lambda: self.dispatcher(self.name, args))
        return done(*run_in_thread(self, call, t0 + limit, limit, cancel))


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_arguments(arguments: str, schema: Mapping) -> tuple[dict, str | None]:
    """(args, None) or ({}, problem): JSON-parse the model's argument text and validate it; never raises."""
    import jsonschema

    text = arguments.strip() if isinstance(arguments, str) else ""
    if not text:
        args: Any = {}
    else:
        try:
            args = json.loads(text, strict=False, parse_float=_finite, parse_constant=_no_constant)
        except (ValueError, RecursionError) as e:
            return {}, f"not valid JSON ({e})"
    if not isinstance(args, dict):
        return {}, f"expected a JSON object, got {type(args).__name__}"
    try:
        error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(args))
    except RecursionError:
        return {}, "arguments nested too deeply"
    except Exception as e:  # noqa: BLE001 - e.g. a $ref to another document, which is never fetched
        return {}, f"the tool's parameter schema cannot be checked ({describe(e)})"
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        return {}, f"{where + ': ' if where else ''}{error.message}"
    return args, None


class ToolSet:
    """An ordered set of uniquely named tools: rendering to `{doc}`, name resolution, execution.

    `keep_order=True` marks an order that means something to a model, such as the order a team's adapters
    were trained on (the demo tools): the docs list such a set as given. Any other set is listed with the tool
    that best matches the task last (tools/retrieval.py, the `tool_order` set option)."""

    def __init__(self, tools: Iterable[Any] = (), *, keep_order: bool = False):
        self.keep_order = keep_order
        self._tools: dict[str, Tool] = {}
        for item in tools:
            for t in _coerce(item):
                if t.name in self._tools:
                    raise ToolError(f"two tools are named {t.name!r}; tool names must be unique")
                self._tools[t.name] = t

    @classmethod
    def from_openai(cls, specs: Iterable[Mapping], fns: Mapping[str, Callable] | None = None, *,
                    dispatcher: Dispatcher | None = None) -> "ToolSet":
        """OpenAI function specs with callables by name (`fns`) and/or one `dispatcher(name, args)`."""
        fns = dict(fns or {})
        tools = []
        for spec in specs:
            inner = spec.get("function", spec) if isinstance(spec, Mapping) else {}
            name = inner.get("name") if isinstance(inner, Mapping) else None
            tools.append(Tool.from_openai(spec, fns.pop(name, None), dispatcher=dispatcher))
        if fns:
            raise ToolError(f"callables given for unknown tools: {', '.join(sorted(fns))}")
        return cls(tools)

    @classmethod
    def from_toolbench(cls, docs: Iterable[Mapping], *, dispatcher: Dispatcher | None = None) -> "ToolSet":
        """ToolBench doc lines; executable only with a dispatcher."""
        return cls(Tool.from_toolbench(d, dispatcher=dispatcher) for d in docs)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __add__(self, other: Iterable[Any]) -> "ToolSet":
        return ToolSet([*self, *ToolSet(other)])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    def docs(self, max_chars: int = 256) -> list[dict]:
        return [t.doc(max_chars) for t in self]

    def resolve(self, action: str) -> tuple[Tool | None, bool]:
        """(tool, suffix_match): exact name first, then the reference's endswith fallback (protocol.md §5.4)."""
        if action in self._tools:
            return self._tools[action], False
        if action and action != "none":  # the reference would match "" to the first tool; we do not
            for t in self:
                if t.name.endswith(action):
                    return t, True
        return None, False

    def call(self, action: str, arguments: str, *, timeout: float = 30.0,
             cancel: threading.Event | None = None, isolation: str = "auto") -> ToolResult:
        """Run the tool the model named; unknown names become the reference's 'No such function' fault."""
        t, suffix = self.resolve(action)
        if t is None:
            return ToolResult(fault(f"No such function name: {action}"), "unknown_tool")
        r = t.run(arguments, timeout=timeout, cancel=cancel, isolation=isolation)
        return ToolResult(r.text, r.error, r.tool, suffix, r.seconds)

    def check_isolation(self, isolation: str) -> None:
        """ToolError before a run if `isolation` needs a worker process for a tool that cannot have one."""
        for t in self:
            t.worker_location(isolation)


def _coerce(item: Any) -> list[Tool]:
    if isinstance(item, Tool):
        return [item]
    if isinstance(item, ToolSet):
        return list(item)
    if isinstance(item, Mapping):
        if {"Name", "function"} <= set(item):
            return [Tool.from_toolbench(item)]
        raise ToolError("an OpenAI spec needs its callable: use Tool.from_openai(spec, fn) or "
                        "ToolSet.from_openai(specs, fns)")
    if callable(item):
        return [Tool.from_function(item)]
    raise ToolError(f"not a tool: {item!r:.100} (expected a Tool, a function, a ToolSet or a ToolBench doc)")


def as_toolset(tools: Any) -> ToolSet:
    """A ToolSet from a ToolSet, a Tool, a function, or an iterable of those."""
    if isinstance(tools, ToolSet):
        return tools
    if isinstance(tools, (Tool, Mapping)) or callable(tools):
        return ToolSet([tools])
    if isinstance(tools, Iterable) and not isinstance(tools, (str, bytes)):
        return ToolSet(tools)
    raise ToolError(f"not a tool set: {tools!r:.100}")


def tool(fn: Callable | None = None, *, name: str | None = None, description: str | None = None,
         toolkit: str | None = None, timeout: float | None = None, process_safe: bool = False):
    """Decorator: `@tool` or `@tool(name=..., timeout=...)` turns a typed, documented function into a Tool.
    `process_safe=True`: the function keeps no state between calls, so it may run in a worker process."""

    def wrap(f: Callable) -> Tool:
        return Tool.from_function(f, name=name, description=description, toolkit=toolkit, timeout=timeout,
                                  process_safe=process_safe)

    return wrap(fn) if fn is not None else wrap
