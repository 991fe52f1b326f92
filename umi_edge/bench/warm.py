"""Warm start from disk vs cold start: seconds from a fresh process to the first planner token of the scripted
query, through `umi-edge run`'s own path (imports, Team.load, the loop), with the prefix cache off and on."""
from __future__ import annotations

import statistics
import tempfile
import threading
import time
from typing import Callable


def first_token_child(args: dict, t_python: float) -> dict:
    """One run in this (fresh) process: load the set, run the scripted query through the loop and stop at the
    planner's first token. With args["kv_root"] the entry role uses a prefix cache in that folder; without,
    none (every run evaluates the whole prompt)."""
    t_import = time.time()
    from ..team import Team
    from . import scenario

    team = Team.load(args["set"], models=args.get("models"), n_ctx=args["n_ctx"], threads=args["threads"],
                     prefix_cache=False)
    cache, prefix = None, []
    if args.get("kv_root"):
        from ..engine.prefix_cache import PrefixCache
        from ..warm import attach

        cache = PrefixCache(args["kv_root"])
        prefix = attach(team, cache)
    t_load = time.time()
    first: list[float] = []
    stop = threading.Event()

    def on_token(tok) -> None:
        if tok.role == "planner" and not first:
            first.append(time.time())
            stop.set()

    with team:
        for _ in team.run(scenario.QUERY, on_token=on_token, cancel=stop):
            pass
    if not first:
        raise RuntimeError("the planner produced no token")
    return {"t_python": t_python, "t_imported": t_import, "t_loaded": t_load, "t_first_token": first[0],
            "prefix_tokens": len(prefix), "restored": bool(cache and cache.hits), "saved": bool(cache and cache.saves)}


def warm_start(args: dict, *, repeats: int = 3, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Cold (prefix cache off) vs warm from disk (on, primed by one run), A B interleaved, medians of `repeats`.
    Seconds are spawn → first planner token; the model file is in the page cache for both sides."""
    from .memory import run_child

    def one(kv_root: str | None) -> dict:
        r, rss, t_spawn = run_child("first_token", {**args, "kv_root": kv_root})
        return {"seconds": r["t_first_token"] - t_spawn, "load": r["t_loaded"] - r["t_imported"],
                "first_token": r["t_first_token"] - r["t_loaded"], "prefix_tokens": r["prefix_tokens"],
                "restored": r["restored"], "saved": r["saved"], "peak_rss_mb": rss}

    with tempfile.TemporaryDirectory(prefix="umi-kv-") as kv:
        progress("warm start: priming the prefix cache")
        prime = one(kv)
        cold, warm = [], []
        for i in range(max(repeats, 1)):
            progress(f"warm start: {i + 1}/{repeats} (cold, warm)")
            cold.append(one(None))
            warm.append(one(kv))

    def med(runs, k):
        return round(statistics.median(r[k] for r in runs), 3)

    out = {
        "cold_seconds": med(cold, "seconds"),
        "warm_seconds": med(warm, "seconds"),
        "ratio": round(med(warm, "seconds") / med(cold, "seconds"), 4),
        "cold_first_token_seconds": med(cold, "first_token"),
        "warm_first_token_seconds": med(warm, "first_token"),
        "team_load_seconds": med(cold + warm, "load"),
        "prefix_tokens": prime["prefix_tokens"],
        "primed": prime["saved"],
        "warm_runs_restored": sum(r["restored"] for r in warm),
        "cold_runs": [round(r["seconds"], 3) for r in cold],
        "warm_runs": [round(r["seconds"], 3) for r in warm],
    }
    progress(f"warm start: cold {out['cold_seconds']} s, warm from disk {out['warm_seconds']} s "
             f"(ratio {out['ratio']}; {out['prefix_tokens']}-token head)")
    return out
