"""Memory and prefix reuse of one set under several KV layouts (`umi-edge bench --kv-layout contexts,pool`),
side by side against the same single-Llama baseline; each team's peak RSS in a fresh process."""
from __future__ import annotations

from typing import Callable, Sequence


def memory_by_layout(args: dict, layouts: Sequence[str], single_mb: float, *,
                     progress: Callable[[str], None] = lambda s: None) -> dict:
    """{layout: {"team_mb", "team_vs_single"}}: the `team` workload of child.py with kv_layout overridden."""
    from .memory import run_child

    out = {}
    for layout in layouts:
        progress(f"memory: team, kv_layout {layout}")
        _, rss, _ = run_child("team", {**args, "kv_layout": layout})
        out[layout] = {"team_mb": round(rss, 1), "team_vs_single": round(rss / single_mb, 4)}
    progress("memory by layout: " + ", ".join(f"{k} {v['team_mb']} MB ({v['team_vs_single']})" for k, v in out.items()))
    return out


def prefill_by_layout(config, layouts: Sequence[str], *, progress: Callable[[str], None] = lambda s: None) -> dict:
    """{layout: the prefill section's headline figures}: the scripted task replayed on a team of each layout."""
    from ..team import Team
    from .prefill import prefill

    out = {}
    for layout in layouts:
        progress(f"prefill: kv_layout {layout}")
        with Team.load(config.set, models=config.models, n_ctx=config.n_ctx, threads=config.threads,
                       temperature=0.0, prefix_cache=False, kv_layout=layout) as team:
            r = prefill(team.roles, team.tools, team.protocol, repeats=config.slow_repeats, progress=progress)
        out[layout] = {k: r[k] for k in ("ratio", "ratio_after_first_step", "ratio_next_task", "evaluated_with_reuse",
                                         "evaluated_without_reuse", "seconds_with_reuse", "seconds_without_reuse")}
        out[layout]["evaluated_next_task"] = sum(s["evaluated_next_task"] for s in r["per_step"])
    return out
