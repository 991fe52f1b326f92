"""`umi-edge eval retrieval`: a task suite run with more tools than it needs, with and without tool retrieval,
side by side in one invocation: success and planner prompt tokens per configuration, and recall@k (is each
tool a task needs among the top k ranked against its query).

Each task's tools are widened to N by distractors drawn from a pool (`--distractors MODULE:ATTR`, e.g. the
tool world of recipes/glpft), the same draw for a task at every N (the 32-tool set holds the 8-tool one),
shuffled in with the task's own tools so that a tool's position says nothing. Configurations: every N with
all tools offered, and every N larger than k with the top k offered.
"""
from __future__ import annotations

import random
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from ..errors import UmiError
from ..tools import ToolSet
from ..tools.retrieval import BM25Ranker, EmbeddingRanker, ranking_text, top_k
from . import tasks as etasks


@dataclass(frozen=True)
class Config:
    n_tools: int
    top_k: int = 0          # 0: every tool offered

    @property
    def name(self) -> str:
        return f"all {self.n_tools}" if not self.top_k else f"top {self.top_k} of {self.n_tools}"


def configs(sizes: Sequence[int], k: int) -> list[Config]:
    """Every size with all tools offered and every size larger than k with the top k offered, in run order:
    the smallest set, then for each larger size from the largest down its top k and its all-tools run (so a
    run cut short has the headline comparisons first)."""
    sizes = sorted(set(sizes))
    out = [Config(sizes[0])]
    for n in reversed(sizes[1:]):
        out += ([Config(n, k)] if k and n > k else []) + [Config(n)]
    if k and sizes[0] > k:
        out.append(Config(sizes[0], k))
    return out


def widen(tools: ToolSet, pool: ToolSet, n: int, key: str) -> ToolSet:
    """`tools` plus distractors from `pool` up to `n` tools, shuffled together. The draw depends only on `key`
    (a task id): a larger `n` adds tools to the same draw, so smaller sets nest in larger ones."""
    if n <= len(tools):
        return tools
    extra = [t for t in pool if t.name not in tools]
    if len(extra) < n - len(tools):
        raise UmiError(f"the distractor pool has {len(extra)} tools not in the task's set; {n} tools need "
                       f"{n - len(tools)}: give a larger --distractors pool or smaller --offered sizes")
    rng = random.Random(zlib.crc32(key.encode()))
    rng.shuffle(extra)
    chosen = [*tools, *extra[: n - len(tools)]]
    # positions: a fixed random order of the pool's draw, so the task's tools sit anywhere, stably across n
    slot = {t.name: rng.random() for t in chosen}
    return ToolSet(sorted(chosen, key=lambda t: slot[t.name]))


def needed_tools(task: etasks.Task, gold: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """The tools a task needs: its check's expected calls, else the gold calls known for its id (bundled suites)."""
    calls = task.check.get("calls") if task.check else None
    if calls:
        return tuple(dict.fromkeys(c["tool"] for c in calls))
    return (gold or {}).get(task.id, ())


def bundled_gold() -> dict[str, tuple[str, ...]]:
    """id -> tools called, for the bundled demo and held-out suites (from their generator's recipes)."""
    from .demo_tasks import demo_recipes, heldout_recipes

    out = {}
    for r in [*demo_recipes(), *heldout_recipes()]:
        if not isinstance(r, dict):
            out[r.id] = tuple(dict.fromkeys(name for name, _ in r.calls))
    return out


def recall_at_k(tasks: Iterable[etasks.Task], toolsets: Sequence[ToolSet], k: int, ranker: Callable[[ToolSet], Any],
                gold: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """Fraction of (task, needed tool) pairs whose tool is in the top k against the task's query alone
    (what the planner's first step sees), over tasks that need a tool."""
    hits = total = 0
    misses = []
    for task, tools in zip(tasks, toolsets):
        need = needed_tools(task, gold)
        if not need:
            continue
        scores = ranker(tools).scores(ranking_text(task.query))
        chosen = {tools.names[i] for i in top_k(scores, k)}
        for name in need:
            total += 1
            hits += name in chosen
            if name not in chosen:
                misses.append(f"{task.id}:{name}")
    return {"recall": hits / total if total else None, "pairs": total, "misses": misses}


class _Tap:
    """A team whose runs also record which tools the caller was offered at each step (ToolsOffered events)."""

    def __init__(self, team):
        self.team = team
        self.offers: list[tuple[str, tuple[str, ...]]] = []
        self.truncated = 0

    def run(self, query, **kw):
        self.offers = []
        for ev in self.team.run(query, **kw):
            if ev.kind == "tools":
                self.offers.append((ev.role, ev.tools))
            elif ev.kind == "notice" and getattr(ev, "code", "") == "context_truncated":
                self.truncated += 1
            yield ev


def run_config(team, task_list, toolsets, config: Config, gold, progress=None) -> dict[str, Any]:
    """Run every task with this configuration's tools and top k; the tasks report plus retrieval figures."""
    tap = _Tap(team)
    team.tool_top_k = config.top_k
    results, offered_hits, offered_total = [], 0, 0
    t0 = time.monotonic()
    for i, (task, tools) in enumerate(zip(task_list, toolsets)):
        r = etasks.run_task(tap, task, tools)
        results.append(r)
        # a needed tool the run called was offered by construction; count those it never saw
        seen = set(tools.names) if not config.top_k else {n for _, names in tap.offers for n in names}
        for name in needed_tools(task, gold):
            offered_total += 1
            offered_hits += name in seen
        if progress is not None:
            progress(config, i + 1, len(task_list), r)
    report = etasks.summarize(results)
    report.update(config=config.name, n_tools=config.n_tools, top_k=config.top_k,
                  planner_prompt_per_task=report["mean_tokens_by_role"].get("planner", {}).get("prompt", 0.0),
                  offered_recall=offered_hits / offered_total if offered_total else None,
                  context_truncations=tap.truncated, wall_seconds=time.monotonic() - t0)
    return report


@dataclass(frozen=True)
class TeamSpec:
    """How to load the team under test (picklable, so that worker processes load their own)."""

    set_name: str | None = None
    models: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    verbose: bool = False

    def load(self):
        from ..team import Team

        return Team.load(self.set_name, models=self.models, verbose=self.verbose,
                         **{k: v for k, v in self.overrides if v is not None})


def first_prompt_tokens(team, task_list, toolsets, config: Config) -> float:
    """Mean tokens of the first planner prompt (the backbone's for a single-model set) under `config`:
    rendered and tokenized exactly as the loop does, without running the model."""
    from ..protocol import Turn
    from ..tools.retrieval import ToolRetriever

    proto = team.protocol
    role = "planner" if "planner" in team.roles else "backbone"
    engine = team.roles[role]
    total = 0
    for task, tools in zip(task_list, toolsets):
        docs = ToolRetriever(tools, config.top_k).offer(task.query).tools.docs(proto.doc_chars)
        history = [Turn("user", task.query)]
        prompt = proto.planner_prompt(docs, history) if role == "planner" else proto.prompt(docs, history)
        total += len(proto.encode(prompt, engine.tokenize, engine.bos_id, engine.eos_id))
    return total / len(task_list)


def _inputs(task_path, limit, pool_ref, sizes):
    from ..tools import load_tools

    task_list = etasks.load_tasks(task_path, limit=limit)
    pool = load_tools(pool_ref)
    base_sets = [etasks.resolve_tools(t) for t in task_list]
    by_size = {n: [widen(ts, pool, n, t.id) for t, ts in zip(task_list, base_sets)] for n in sorted(set(sizes))}
    return task_list, by_size


def _unit(team_spec: TeamSpec, task_path, limit, pool_ref, config: Config, progress) -> dict[str, Any]:
    """One configuration's run in a worker process (rebuilds the same task sets: the draws are deterministic)."""
    task_list, by_size = _inputs(task_path, limit, pool_ref, [config.n_tools])
    team = team_spec.load()
    with team:
        return run_config(team, task_list, by_size[config.n_tools], config, bundled_gold(), progress)


def evaluate(team_spec: TeamSpec, task_path, pool_ref: str, sizes: Sequence[int], k: int, *, limit: int | None = None,
             embeddings: bool = False, run: bool = True, all_max: int | None = None, jobs: int = 1,
             progress=None) -> dict[str, Any]:
    """Recall@k (BM25, and the base model's embeddings with `embeddings`) for every size larger than k, every
    configuration's first planner prompt size, then (with `run`) the configurations' runs: all of them, except
    all-tools runs of sizes above `all_max` (a long prompt is slow to prefill; its size is still reported).
    `jobs` > 1 runs configurations in that many worker processes at once. `progress(config, done, total, r)`
    must be picklable (a module-level function) when jobs > 1."""
    task_list, by_size = _inputs(task_path, limit, pool_ref, sizes)
    gold = bundled_gold()
    plan = configs(sizes, k)
    to_run = [c for c in plan if c.top_k or all_max is None or c.n_tools <= all_max] if run else []
    out: dict[str, Any] = {"k": k, "sizes": sorted(set(sizes)), "n_tasks": len(task_list), "recall": {},
                           "first_prompt_tokens": {}, "configs": []}
    with team_spec.load() as team:
        rankers: dict[str, Callable[[ToolSet], Any]] = {"bm25": BM25Ranker}
        embed = llama_embedder(next(iter(team.paths.values()))) if embeddings else None
        try:
            if embed is not None:
                rankers["embedding"] = lambda tools: EmbeddingRanker(tools, embed)
            for name, make in rankers.items():
                out["recall"][name] = {str(n): recall_at_k(task_list, sets, k, make, gold)
                                       for n, sets in by_size.items() if n > k}
        finally:
            if embed is not None:
                embed.close()
        for c in plan:
            out["first_prompt_tokens"][c.name] = first_prompt_tokens(team, task_list, by_size[c.n_tools], c)
        if jobs == 1:
            out["configs"] = [run_config(team, task_list, by_size[c.n_tools], c, gold, progress) for c in to_run]
    if jobs > 1 and to_run:
        import multiprocessing
        import os
        from concurrent.futures import ProcessPoolExecutor

        from ..proc import exit_with_parent

        with ProcessPoolExecutor(min(jobs, len(to_run)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=exit_with_parent, initargs=(os.getpid(),)) as workers:
            n = len(to_run)
            out["configs"] = list(workers.map(_unit, [team_spec] * n, [str(task_path)] * n, [limit] * n,
                                              [pool_ref] * n, to_run, [progress] * n))
    out["compare"] = compare(out["configs"], out["first_prompt_tokens"])
    return out


def compare(reports: list[dict[str, Any]], first_prompt: dict[str, float]) -> list[dict[str, Any]]:
    """For each top-k configuration: its success against the smallest all-tools run (points), and how many
    times fewer planner prompt tokens it has than the all-tools configuration of the same size: per task in
    the runs (when both ran) and in the first planner prompt (always)."""
    by_name = {r["config"]: r for r in reports}
    smallest = min((r for r in reports if not r["top_k"]), key=lambda r: r["n_tools"], default=None)
    rows = []
    for r in reports:
        if not r["top_k"]:
            continue
        full_name = f"all {r['n_tools']}"
        full = by_name.get(full_name)
        rows.append({
            "config": r["config"],
            "success_points_vs": smallest and smallest["config"],
            "success_points": None if smallest is None else 100 * (r["success_rate"] - smallest["success_rate"]),
            "prompt_ratio_vs": full_name,
            "planner_prompt_ratio": (full["planner_prompt_per_task"] / r["planner_prompt_per_task"]
                                     if full and r["planner_prompt_per_task"] else None),
            "first_prompt_ratio": (first_prompt[full_name] / first_prompt[r["config"]]
                                   if first_prompt.get(full_name) and first_prompt.get(r["config"]) else None),
        })
    return rows


def llama_embedder(model_path: str, *, n_ctx: int = 512, threads: int | None = None):
    """`embed(texts)` with the GGUF's own token embeddings through its layers, mean-pooled (llama.cpp)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model_path), embedding=True, n_ctx=n_ctx, n_threads=threads,
                          pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False)

    cache: dict[str, list[float]] = {}   # the same tools recur in every task's set

    def embed(texts: list[str]):
        for t in texts:
            if t not in cache:
                cache[t] = llm.embed(t, normalize=True)
        return [cache[t] for t in texts]

    embed.close = llm.close
    return embed


def render(report: dict[str, Any]) -> list[str]:
    """The report as a table: one row per configuration, then the top-k rows' ratios and recall@k."""
    k = report["k"]
    ran = {r["config"]: r for r in report["configs"]}
    lines = [f"{'tools offered':<16} {'success':>8} {'give-up':>8} {'halluc.':>8} {'steps':>6} "
             f"{'planner prompt tok/task':>24} {'1st planner prompt':>19} {'ctx cuts':>8} {'needed tool offered':>20}"]
    for name, first in report["first_prompt_tokens"].items():
        r = ran.get(name)
        if r is None:
            lines.append(f"{name:<16} {'(not run)':>8} {'':>8} {'':>8} {'':>6} {'':>24} {first:>19.0f}")
            continue
        rec = "-" if r["offered_recall"] is None or not r["top_k"] else f"{100 * r['offered_recall']:.1f}%"
        lines.append(f"{name:<16} {100 * r['success_rate']:>7.1f}% {100 * r['give_up_rate']:>7.1f}% "
                     f"{r['hallucinated_calls']:>8} {r['mean_steps']:>6.2f} {r['planner_prompt_per_task']:>24.0f} "
                     f"{first:>19.0f} {r['context_truncations']:>8} {rec:>20}")
    for c in report.get("compare", []):
        parts = [c["config"] + ":"]
        if c["success_points"] is not None:
            parts.append(f"success {c['success_points']:+.1f} points vs {c['success_points_vs']};")
        if c["planner_prompt_ratio"] is not None:
            parts.append(f"planner prompt tokens per task ÷{c['planner_prompt_ratio']:.2f} vs {c['prompt_ratio_vs']};")
        if c["first_prompt_ratio"] is not None:
            parts.append(f"first planner prompt ÷{c['first_prompt_ratio']:.2f} vs {c['prompt_ratio_vs']}")
        lines.append(" ".join(parts))
    for ranker, by_size in report["recall"].items():
        cells = [f"{n} tools {100 * r['recall']:.1f}% of {r['pairs']}" for n, r in by_size.items()
                 if r["recall"] is not None]
        lines.append(f"recall@{k} against the query ({ranker}): " + ("; ".join(cells) or "no task names a tool"))
    return lines
