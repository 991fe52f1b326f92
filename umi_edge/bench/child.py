"""Workloads measured in their own process (clean peak RSS, a real cold start); run by `memory.py`.

    python -m umi_edge.bench.child KIND '{"...": ...}'   → one JSON line on stdout

KIND: `single` (one llama_cpp.Llama), `separate` (one Llama per role), `team` (Team.load: three roles on
the shared base), `cold_start` (Team.load + the first planner token), `first_token` (bench/warm.py: the loop
to the planner's first token, prefix cache on or off). Each Llama / role evaluates the same
prompt and generates a few greedy tokens.
"""
from __future__ import annotations

import json
import sys
import time

T0 = time.time()    # as close to process start as Python lets us; the parent also records its spawn time


def _llamas(args: dict, paths: list[str]) -> dict:
    from .baseline import stock_llama

    llms = [stock_llama(p, n_ctx=args["n_ctx"], threads=tuple(args["llama_threads"]),
                        n_batch=args["n_batch"]) for p in paths]
    for llm in llms:
        ids = llm.tokenize(args["prompt"].encode("utf-8"), add_bos=True, special=False)
        for _ in zip(range(args["tokens"]), llm.generate(ids, temp=0.0, top_k=0, top_p=1.0, min_p=0.0,
                                                         repeat_penalty=1.0)):
            pass
    return {"instances": len(llms)}


def _team(args: dict):
    from ..team import Team

    # a cold start evaluates the whole prompt: no KV from disk (bench/warm.py measures that side by side)
    overrides = {"n_ctx": args["n_ctx"], "threads": args["threads"], "prefix_cache": False,
                 "kv_layout": args.get("kv_layout")}
    return Team.load(args["set"], models=args.get("models"), **overrides)


def _team_workload(args: dict) -> dict:
    with _team(args) as team:
        for role in team.roles.values():
            ids = [role.bos_id] + role.tokenize(args["prompt"])
            role.generate(ids, max_tokens=args["tokens"])
        return {"models_loaded": len(team.models), "contexts": len(team.roles)}


def _cold_start(args: dict) -> dict:
    t_import = time.time()
    from . import scenario

    team = _team(args)
    t_load = time.time()
    planner = team.roles["planner"]
    prompt = scenario.first_prompts(team.tools, team.protocol)["planner"]
    ids = team.protocol.encode(prompt, planner.tokenize, planner.bos_id, planner.eos_id)
    planner.generate(ids, max_tokens=1)
    t_first = time.time()
    team.close()
    return {"t_python": T0, "t_imported": t_import, "t_loaded": t_load, "t_first_token": t_first,
            "prompt_tokens": len(ids)}


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the exec'd image alone; getrusage's ru_maxrss is not clean
    on Linux: exec keeps the high-water mark of the process that forked us (e.g. a bench holding a model)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def main(argv: list[str]) -> int:
    kind, args = argv[0], json.loads(argv[1])
    if kind == "single":
        out = _llamas(args, args["paths"][:1])
    elif kind == "separate":
        out = _llamas(args, args["paths"])
    elif kind == "team":
        out = _team_workload(args)
    elif kind == "cold_start":
        out = _cold_start(args)
    elif kind == "first_token":
        from .warm import first_token_child

        out = first_token_child(args, T0)
    else:
        raise SystemExit(f"unknown workload {kind!r}")
    out["peak_rss_mb"] = peak_rss_mb()
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
