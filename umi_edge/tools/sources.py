"""Tool sources combined into one ToolSet: "module:ATTR" / "file.py:ATTR", "mcp:COMMAND LINE",
"mcp+http://URL", a [toolsources] name from models.toml, or ready tools. A tool name offered by two sources
is an error naming both. MCP servers are started on the ExitStack given, which owns them from then on."""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Mapping

from ..errors import ToolError
from .core import ToolSet, as_toolset
from .loader import load_tools
from .mcp import McpServer, McpSource, is_mcp_spec


def open_sources(specs: Iterable[Any], stack: contextlib.ExitStack | None = None,
                 toolsources: Mapping[str, Any] | None = None) -> ToolSet:
    """One ToolSet from several sources, in order. Strings are source specs (a name in `toolsources`, whose
    values are `McpServer`s, wins over a module of the same name); anything else goes to `as_toolset`.
    Without `stack`, an MCP source is an error: its server process needs an owner."""
    toolsources = toolsources or {}
    specs = list(specs)
    owner: dict[str, str] = {}   # tool name -> the source that offers it
    tools = []
    keep_order = False           # one source whose order means something keeps it (ToolSet.keep_order)
    with contextlib.ExitStack() as opened:   # a later source failing ends the servers already started
        for spec in specs:
            if isinstance(spec, str):
                label, found = _open(spec, opened if stack is not None else None, toolsources)
            else:
                label, found = repr(spec)[:80], as_toolset(spec)
            keep_order = len(specs) == 1 and getattr(found, "keep_order", False)
            for t in found:
                if t.name in owner:
                    where = f"twice by {label}" if owner[t.name] == label else f"by both {owner[t.name]} and {label}"
                    raise ToolError(f"tool {t.name!r} is offered {where}; tool names must be unique, drop one source")
                owner[t.name] = label
                tools.append(t)
        toolset = ToolSet(tools, keep_order=keep_order)
        if stack is not None:
            stack.push(opened.pop_all())
    return toolset


def _open(spec: str, stack: contextlib.ExitStack | None, toolsources: Mapping[str, Any]) -> tuple[str, list]:
    if spec in toolsources:
        server = toolsources[spec]
        return _open_mcp(server, f"{spec} ({server.describe()})", stack)
    if is_mcp_spec(spec):
        return _open_mcp(McpServer.from_spec(spec), spec, stack)
    return spec, load_tools(spec)


def _open_mcp(server: McpServer, label: str, stack: contextlib.ExitStack | None) -> tuple[str, list]:
    if stack is None:
        raise ToolError(f"tool source {label}: an MCP server needs an owner; pass it to Team.load(tools=...) or "
                        "Team(..., tools=...), not to a single run")
    source = stack.enter_context(McpSource(server))
    return label, source.open()
