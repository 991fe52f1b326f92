"""JSON schemas from Python callables: type hints give the types, Google/Sphinx docstrings the descriptions."""
from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any, Callable

from ..errors import ToolError

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params|Returns|Return|Raises|Yields|Examples?|Notes?)\s*:\s*$")
_GOOGLE_ARG = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")
_SPHINX_ARG = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_SPHINX_ANY = re.compile(r"^\s*:\w+")


def type_schema(hint: Any, where: str) -> dict:
    """The JSON schema of one annotation (str/int/float/bool, list[..], dict[str, ..], Optional, Literal)."""
    if hint is inspect.Parameter.empty or hint is Any:
        return {"type": "string"}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        kinds = {_SCALARS.get(type(a)) for a in args}
        schema: dict = {"enum": list(args)}
        if len(kinds) == 1 and None not in kinds:
            schema = {"type": kinds.pop(), **schema}
        return schema
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return type_schema(inner[0], where)
        return {"anyOf": [type_schema(a, where) for a in inner]}
    if hint in (list, tuple) or origin in (list, tuple, typing.Sequence):
        item = args[0] if args else None
        return {"type": "array", "items": type_schema(item, where)} if item is not None else {"type": "array"}
    if hint is dict or origin is dict:
        schema = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = type_schema(args[1], where)
        return schema
    raise ToolError(f"{where}: unsupported type annotation {hint!r}; use str, int, float, bool, list, dict, "
                    "Optional or Literal")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {arg: description}) from a Google-style `Args:` section or Sphinx `:param x:` lines."""
    summary: list[str] = []
    params: dict[str, str] = {}
    section = current = None
    arg_indent = 0  # indentation of argument lines in an Args section; continuations are deeper
    for line in inspect.cleandoc(doc or "").splitlines():
        indent = len(line) - len(line.lstrip())
        if m := _SECTION.match(line):
            section, current = m.group(1).lower(), None
        elif m := _SPHINX_ARG.match(line):
            section, current = "sphinx", m.group(1)
            params[current] = m.group(2).strip()
        elif _SPHINX_ANY.match(line):
            section, current = "sphinx-other", None
        elif section is None:
            summary.append(line)
        elif section in ("args", "arguments", "parameters", "params"):
            m = _GOOGLE_ARG.match(line)
            if m and (current is None or indent <= arg_indent):
                current, arg_indent = m.group(1), indent
                params[current] = m.group(3).strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}".strip()
        elif section == "sphinx" and current and line.strip() and indent:
            params[current] = f"{params[current]} {line.strip()}".strip()
    return " ".join(" ".join(summary).split()), params


def function_schema(fn: Callable) -> tuple[str, dict]:
    """(description, parameters schema) for a plain function; *args/**kwargs are not allowed."""
    name = getattr(fn, "__name__", repr(fn))
    try:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
    except (TypeError, ValueError, NameError) as e:
        raise ToolError(f"tool {name!r}: cannot read its signature ({e})") from None
    description, arg_docs = parse_docstring(inspect.getdoc(fn))
    properties: dict[str, dict] = {}
    required: list[str] = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ToolError(f"tool {name!r}: *args/**kwargs cannot be described to a model; name each argument")
        if p.kind is p.POSITIONAL_ONLY:
            raise ToolError(f"tool {name!r}: positional-only argument {p.name!r}; tools are called by keyword")
        prop = type_schema(hints.get(p.name, p.annotation), f"tool {name!r} argument {p.name!r}")
        if p.name in arg_docs and arg_docs[p.name]:
            prop["description"] = arg_docs[p.name]
        if p.default is p.empty:
            required.append(p.name)
        elif p.default is not None:
            prop["default"] = p.default
        properties[p.name] = prop
    schema: dict = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return description, schema
