"""How a set's roles map onto llama.cpp contexts: the set key `kv_layout`.

- "contexts": each role has a context of its own, except roles with `share_context`, which run on their
  host's context and sequence (the default set: planner + caller on one context, summarizer on another).
- "pool": the roles that would each get a context on the same model share one instead, each on a sequence of
  its own in one unified pool of n_ctx KV cells (llama.cpp's n_seq_max + kv_unified). The planner's trunk is
  computed once (the caller still shares the planner's sequence); the summarizer's sequence lives beside it and
  is the first dropped when a prompt needs its cells. One KV cache and one compute buffer instead of two.
"""
from __future__ import annotations

from typing import Mapping

from .errors import ConfigError

LAYOUTS = ("contexts", "pool")


def pools(roles: Mapping[str, object], layout: str) -> dict[str, list[str]]:
    """{host role: [roles on their own sequence of its context, in order]} for `layout`; empty lists under
    "contexts". Roles with share_context and remote roles are never members: they have no context of their own."""
    own = [r for r, spec in roles.items() if spec.share_context is None and spec.remote is None]
    if layout != "pool":
        return {r: [] for r in own}
    out: dict[str, list[str]] = {}
    host_of_model: dict[str, str] = {}
    for r in own:
        host = host_of_model.setdefault(roles[r].model, r)
        if host == r:
            out[r] = []
        else:
            out[host].append(r)
    return out


def check_layout(roles: Mapping[str, object], layout: str, where: str) -> None:
    """ConfigError unless `layout` is known and, for "pool", the roles sharing a context agree on its settings."""
    if layout not in LAYOUTS:
        raise ConfigError(f"{where}: kv_layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    for host, members in pools(roles, layout).items():
        h = roles[host]
        for m in members:
            r = roles[m]
            if (h.n_ctx, h.n_batch, h.type_k, h.threads) != (r.n_ctx, r.n_batch, r.type_k, r.threads):
                raise ConfigError(f"{where} {m}: kv_layout = \"pool\" puts it on {host!r}'s context, so it needs "
                                  f"the same n_ctx, n_batch, type_k and threads as {host!r}")
            if r.trunk_adapter is not None and r.trunk_adapter != h.trunk_adapter:
                raise ConfigError(f"{where} {m}: trunk_adapter belongs to the context; with kv_layout = \"pool\" "
                                  f"set it on {host!r} (the context's host)")
