"""Tool registry: Python callables, OpenAI function schemas and ToolBench docs → one ToolSet that renders
α-UMi `{doc}` lines and runs calls with validation, timeouts and faults reported as observations."""
from __future__ import annotations

from .core import Tool, ToolResult, ToolSet, as_toolset, fault, parse_arguments, serialize, tool
from .loader import load_tools

__all__ = ["Tool", "ToolResult", "ToolSet", "as_toolset", "fault", "load_tools", "parse_arguments",
           "serialize", "tool"]
