"""Peak RSS of one Llama, three Llamas and the umi-edge team, and the cold start, each in a fresh process."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable


def run_child(kind: str, args: dict, *, timeout: float = 900) -> tuple[dict, float, float]:
    """Run one workload of `child.py`; returns (its JSON result, its peak RSS in MB, spawn time).

    The peak is the child's own VmHWM (see child.peak_rss_mb); os.wait4's rusage is the fallback where
    /proc is missing (the pipes are drained by threads so that Popen does not reap the child first)."""
    import threading

    t_spawn = time.time()
    p = subprocess.Popen([sys.executable, "-m", "umi_edge.bench.child", kind, json.dumps(args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n=n, f=f: chunks.__setitem__(n, f.read()), daemon=True)
               for n, f in (("out", p.stdout), ("err", p.stderr))]
    for t in readers:
        t.start()
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(p.pid, 0)
    finally:
        killer.cancel()
    p.returncode = code = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    if code != 0:
        tail = chunks.get("err", b"").decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {code}"]
        why = "timed out" if code == -9 else "failed"
        raise RuntimeError(f"bench workload {kind!r} {why}: {tail[0]}")
    result = json.loads(chunks["out"].decode().strip().splitlines()[-1])
    fallback = usage.ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1024)
    return result, result.get("peak_rss_mb") or fallback, t_spawn


def kv_cache_mb(path, n_ctx: int) -> float | None:
    """The f16 K+V cache one context allocates at `n_ctx`, from the GGUF header (None if it lacks the keys);
    sized by engine/kv.py's KvShape, the rule the engine checks n_ctx with."""
    from pathlib import Path

    from ..engine._native import gguf_header
    from ..engine.kv import KvShape

    arch = gguf_header(Path(path), ("general.architecture",)).get("general.architecture")
    keys = tuple(f"{arch}.{k}" for k in ("block_count", "embedding_length", "attention.head_count",
                                          "attention.head_count_kv"))
    head = gguf_header(Path(path), keys)
    if arch is None or any(not isinstance(head.get(k), int) or head[k] <= 0 for k in keys):
        return None
    n_layer, n_embd, n_head, n_head_kv = (head[k] for k in keys)
    head_dim = n_embd // n_head
    shape = KvShape(n_layer=n_layer, n_head_kv=n_head_kv, head_k=head_dim, head_v=head_dim, n_ctx_train=0)
    return shape.bytes(n_ctx) / (1 << 20)


def memory(args: dict, *, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Peak RSS (MB) of (a) one llama_cpp.Llama on the planner's model, (b) one Llama per role,
    (c) the team (Team.load: each distinct GGUF once, one context per role), same n_ctx and workload."""
    out: dict = {"n_ctx": args["n_ctx"], "workload_tokens": args["tokens"]}
    for kind in ("single", "separate", "team"):
        progress(f"memory: {kind}")
        result, rss, _ = run_child(kind, args)
        out[f"{kind}_mb"] = round(rss, 1)
        if kind == "team":
            out["team_models_loaded"] = result["models_loaded"]
    if args.get("adapters"):    # loaded once each, whatever the number of roles using them
        out["adapters_mb"] = round(sum(os.path.getsize(a) for a in args["adapters"]) / (1 << 20), 3)
    kv = kv_cache_mb(args["paths"][0], args["n_ctx"])
    if kv:
        out["kv_cache_mb_per_context"] = round(kv, 1)   # what each extra role context adds at least
    out["team_vs_single"] = round(out["team_mb"] / out["single_mb"], 4)
    out["team_vs_separate"] = round(out["team_mb"] / out["separate_mb"], 4)
    progress(f"memory: single {out['single_mb']} MB, separate {out['separate_mb']} MB, team {out['team_mb']} MB "
             f"(team/single {out['team_vs_single']})")
    return out


def cold_start(args: dict, *, repeats: int = 3, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Seconds from spawning a fresh Python process to the set's first planner token (median of `repeats`),
    split into interpreter start, imports + Team.load, and the first prompt. The model file is in the page
    cache after the first run: this is a warm-disk cold start."""
    runs = []
    for i in range(max(repeats, 1)):
        progress(f"cold start: {i + 1}/{repeats}")
        r, rss, t_spawn = run_child("cold_start", args)
        runs.append({"seconds": r["t_first_token"] - t_spawn, "python_start": r["t_python"] - t_spawn,
                     "load": r["t_loaded"] - r["t_imported"], "first_token": r["t_first_token"] - r["t_loaded"],
                     "prompt_tokens": r["prompt_tokens"], "peak_rss_mb": rss})
    med = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "python_start", "load", "first_token")}
    return {
        "seconds": round(med["seconds"], 3),
        "python_start_seconds": round(med["python_start"], 3),
        "team_load_seconds": round(med["load"], 3),
        "first_token_seconds": round(med["first_token"], 3),
        "prompt_tokens": runs[0]["prompt_tokens"],
        "runs": [round(r["seconds"], 3) for r in runs],
    }
