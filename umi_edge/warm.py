"""Warm start: which prompt head of a team is saved to disk (engine/prefix_cache.py) and where.

Every task's first prompt (the planner's, or the backbone's) starts with the same head: the template's
opening and the tool docs, about 800 tokens for the demo tools. Its KV is evaluated once, saved under the
cache folder, and loaded by every later `umi-edge run` with the same model, adapters, tools and layout.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

MIN_TOKENS = 64     # a shorter head costs less to evaluate than to look up


def cache_root() -> Path:
    from .fetch import home

    return home() / "kv"


def entry_role(protocol) -> str:
    """The role whose prompt opens every task."""
    return "planner" if "planner" in protocol.roles else protocol.roles[0]


def static_prefix(protocol, tools, tool_top_k: int, engine, tool_order: str = "relevance") -> list[int]:
    """The token ids every task's first `entry_role` prompt starts with, whatever the query; empty when the
    offered tools or their order (so the docs) depend on the query (tools/retrieval.py ToolRetriever.static)."""
    from .protocol import Turn
    from .tools.retrieval import ToolRetriever

    if len(tools) == 0 or not ToolRetriever(tools, tool_top_k, order=tool_order).static:
        return []
    docs = tools.docs(protocol.doc_chars)
    render = protocol.planner_prompt if entry_role(protocol) == "planner" else protocol.prompt
    # two queries that differ in their first character: what they share is the head before the query
    a, b = (protocol.encode(render(docs, [Turn("user", q)]), engine.tokenize, engine.bos_id, engine.eos_id)
            for q in ("a", "b"))
    return a[:_common(a, b)]


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def attach(team: Any, cache: Any = None) -> list[int]:
    """Give `team`'s entry role a disk cache (a PrefixCache; default: one at cache_root()) for its static head
    (llama.cpp engines only); returns the head's ids (empty when there is nothing worth caching)."""
    from .engine.llama import LlamaRole, RoleView
    from .engine.prefix_cache import PrefixCache

    engine = team.roles.get(entry_role(team.protocol))
    if not isinstance(engine, (LlamaRole, RoleView)):
        return []
    prefix = static_prefix(team.protocol, team.tools, team.tool_top_k, engine, team.limits.tool_order)
    if len(prefix) < MIN_TOKENS:
        return []
    engine.use_prefix_cache(cache if cache is not None else PrefixCache(cache_root()), prefix)
    log.debug("warm start: %d-token head of the %s prompt cached on disk", len(prefix), entry_role(team.protocol))
    return prefix
