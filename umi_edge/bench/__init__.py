"""`umi-edge bench`: memory, prefix reuse, decode speed, constrained decoding and cold start, as ratios
against the baselines measured in the same run (same model, threads and n_ctx).

`run_bench(BenchConfig(...)) -> dict` is the library entry; `python -m umi_edge.bench` and the CLI render it.
Timed figures interleave the two sides (A B A B) and report medians; memory and cold start are measured in
fresh child processes. No figure is asserted anywhere: they are printed for people to read.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

SECTIONS = ("machine", "decode", "constrained", "prefill", "memory", "cold_start", "warm_start")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how hard; defaults give stable medians in a few minutes on a 2-core laptop."""

    set: str = "default"
    models: str | None = None       # a models.toml overlaid on the bundled one
    n_ctx: int = 2048               # every role and every baseline Llama
    threads: int | None = None      # None: the engine's defaults (half the cores decode, all for prompts)
    tokens: int = 128               # greedy decode tokens per timed run
    repeats: int = 5                # A B pairs for decode and constrained
    slow_repeats: int = 3           # prefill replays and cold starts (each takes seconds)
    memory_tokens: int = 8          # the "few tokens" each Llama / role generates in the memory workload
    bandwidth_mb: int = 512         # the read-bandwidth probe's array
    sections: tuple[str, ...] = SECTIONS
    kv_layouts: tuple[str, ...] = ()  # memory and prefill also per layout ("contexts", "pool"); () = the set's only


def run_bench(config: BenchConfig = BenchConfig(), *, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Run the selected sections; returns one JSON-ready dict: {"config", "machine", "memory", "prefill",
    "decode", "constrained", "cold_start", "seconds"} (unselected sections are absent)."""
    from ..errors import ConfigError

    unknown = [s for s in config.sections if s not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown bench section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    t0 = time.perf_counter()
    report: dict = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}}
    want = set(config.sections) | {"machine"}
    from . import machine

    report["machine"] = machine.machine_info(config.threads)
    if want & {"decode", "constrained", "prefill"}:
        _in_process(config, report, want, progress)
    child_args = None
    if want & {"memory", "cold_start", "warm_start"}:
        child_args = _child_args(config, report)
    if "memory" in want:
        from .memory import memory

        report["memory"] = memory(child_args, progress=progress)
        if config.kv_layouts:
            from .layouts import memory_by_layout

            report["memory"]["by_layout"] = memory_by_layout(child_args, config.kv_layouts,
                                                             report["memory"]["single_mb"], progress=progress)
    if "cold_start" in want:
        from .memory import cold_start

        report["cold_start"] = cold_start(child_args, repeats=config.slow_repeats, progress=progress)
    if "warm_start" in want:
        from .warm import warm_start

        report["warm_start"] = warm_start(child_args, repeats=config.slow_repeats, progress=progress)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def _threads(report: dict) -> tuple[int, int]:
    """(decode, prompt-batch) threads of the engine; the Llama baselines get the same."""
    return report["machine"]["threads"], report["machine"]["threads_batch"]


def _load_team(config: BenchConfig, **extra):
    from ..team import Team

    # in-memory reuse is measured here; the disk cache (warm_start) would make every "reuse off" replay warm
    return Team.load(config.set, models=config.models, n_ctx=config.n_ctx, threads=config.threads,
                     prefix_cache=False, **extra)


def _in_process(config: BenchConfig, report: dict, want: set, progress) -> None:
    """Decode, constrained and prefill on one greedy team (same contexts the CLI's `run` would open)."""
    from . import decode as dec
    from . import scenario
    from .machine import read_bandwidth

    progress(f"loading set {config.set!r} (greedy, n_ctx {config.n_ctx})")
    with _load_team(config, temperature=0.0) as team:
        planner = team.roles["planner"]
        report["config"]["model"] = str(team.paths["planner"])
        if "decode" in want:
            progress(f"bandwidth probe ({config.bandwidth_mb} MB)")
            bw = read_bandwidth(config.bandwidth_mb, threads=report["machine"]["threads"])
            report["machine"]["bandwidth"] = bw
            report["decode"] = dec.decode(
                planner, team.paths["planner"], n_ctx=config.n_ctx, threads=_threads(report),
                n_batch=team.spec.roles["planner"].n_batch, prompt=scenario.DECODE_PROMPT, tokens=config.tokens,
                repeats=config.repeats, bandwidth_gb_s=bw["gb_s"], progress=progress)
            d = report["decode"]
            progress(f"decode: {d['umi_edge_tok_s']} vs {d['llama_cpp_python_tok_s']} tok/s "
                     f"(ratio {d['ratio_vs_llama_cpp_python']}; {d['ratio_vs_bandwidth_limit']} of the bandwidth limit)")
        if "constrained" in want:
            from ..engine.context import output_limit
            from ..protocol.grammar import caller_grammar

            caller = team.roles["caller"]
            prompt = scenario.first_prompts(team.tools, team.protocol)["caller"]
            ids = team.protocol.encode(prompt, caller.tokenize, caller.bos_id, caller.eos_id)
            # the loop's own budget and grammar: at most half the context, string bounds fitted to it
            budget = output_limit(caller.n_ctx, team.limits.max_tokens("caller"))
            report["constrained"] = dec.constrained(
                caller, ids, caller_grammar(team.tools, max_tokens=budget), max_tokens=budget,
                repeats=config.repeats, progress=progress)
            c = report["constrained"]
            progress(f"constrained: {c['constrained_tok_s']} vs {c['unconstrained_tok_s']} tok/s (ratio {c['ratio']})")
        if "prefill" in want:
            from .prefill import prefill

            report["prefill"] = prefill(team.roles, team.tools, team.protocol, repeats=config.slow_repeats,
                                        progress=progress)
            f = report["prefill"]
            progress(f"prefill: evaluated {f['evaluated_with_reuse']} of {f['evaluated_without_reuse']} prompt tokens "
                     f"(ratio {f['ratio']}, steps 2+ {f['ratio_after_first_step']}, next task {f['ratio_next_task']})")
    if "prefill" in want and config.kv_layouts:
        from .layouts import prefill_by_layout

        report["prefill"]["by_layout"] = prefill_by_layout(config, config.kv_layouts, progress=progress)


def _child_args(config: BenchConfig, report: dict) -> dict:
    """What the memory / cold-start children need: the set, and each role's GGUF for the Llama baselines."""
    from .. import fetch
    from ..registry import load_registry, resolve_set
    from . import scenario

    registry = load_registry(config.models)
    spec = resolve_set(config.set, registry=registry, overrides={"n_ctx": config.n_ctx, "threads": config.threads})
    paths = [str(fetch.model_path(registry.model(spec.roles[r].model))) for r in ("planner", "caller", "summarizer")]
    report["config"].setdefault("model", paths[0])
    adapters = {os.path.realpath(a) for r in spec.roles.values() for a in (*r.adapters, r.trunk_adapter) if a}
    return {"set": config.set, "models": config.models, "n_ctx": config.n_ctx, "threads": config.threads,
            "llama_threads": _threads(report), "n_batch": spec.roles["planner"].n_batch, "paths": paths,
            "adapters": sorted(adapters), "tokens": config.memory_tokens, "prompt": scenario.QUERY}
