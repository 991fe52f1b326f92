"""umi-edge: run α-UMi style planner / caller / summarizer teams of small models on llama.cpp.

Public API only. Importing this package loads neither llama_cpp nor torch; names resolve lazily.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Team", "tool", "Tool", "__version__"]


def __getattr__(name: str):
    if name == "Team":
        from .team import Team

        return Team
    if name in ("tool", "Tool"):
        from . import tools

        return getattr(tools, name)
    raise AttributeError(f"module 'umi_edge' has no attribute {name!r}")
