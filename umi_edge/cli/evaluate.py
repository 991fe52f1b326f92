"""`umi-edge eval static`, `eval tasks` and `eval retrieval`."""
from __future__ import annotations

import os
import sys

import click

from . import _N_CTX, _SAMPLING, _SET_OPTIONS, _THREADS, _load_team, _options, cli, emit_json

STATIC_KEYS = ("n_samples", "plan_acc", "act_em", "hallu_rate", "arg_f1", "easy_arg_f1", "hard_arg_f1", "rouge_l")
TASKS_KEYS = ("n_tasks", "success_rate", "give_up_rate", "hallucinated_calls", "fabrication_rate", "mean_steps",
              "mean_seconds")


# `eval static / tasks / retrieval`: which team to evaluate, and the few overrides that matter for a measurement
_eval_team_options = _options(
    *_SET_OPTIONS,
    click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N."),
    _N_CTX,
    _THREADS,
    *_SAMPLING,
    click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object."),
)


def _eval_load_team(ctx, set_name, models_path, overrides):
    return _load_team(set_name, models_path, None, overrides, verbose=bool(ctx.find_root().params.get("verbose")))


def _pct(v) -> str:
    return "   n/a" if v is None else f"{100 * v:6.2f}"


@cli.group("eval")
def eval_group() -> None:
    """Measure a team: the α-UMi static (step-level) metrics, and end-to-end task success."""


@eval_group.command("static")
@click.argument("data", type=click.Path(exists=True))
@_eval_team_options
@click.option("--predictions", "predictions_path", type=click.Path(dir_okay=False), default=None,
              help="Score this predictions.json only (ours or the reference pipeline's); runs no model.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write predictions.json here (reference shape); an existing file is resumed.")
@click.option("--plan-label", type=click.Choice(["assistant", "planner"]), default="assistant", show_default=True,
              help="Label of the current plan in the caller/summarizer history: 'assistant' as in training, "
                   "'planner' as the reference static pipeline.")
@click.option("--constrained", is_flag=True,
              help="Decode the caller under the tool-call grammar (the runtime's setting; the reference does not).")
@click.pass_context
def eval_static_cmd(ctx, data, set_name, models_path, limit, n_ctx, threads, temperature, seed, as_json,
                    predictions_path, out, plan_label, constrained):
    """Step-level evaluation on ToolBench-format test DATA (a JSON list of {tools, instruction,
    conversations}, or the α-UMi train-example/ folder), scored exactly as the paper's evaluator.

    With --predictions, scores that file against DATA. Otherwise the team predicts every step
    teacher-forced (planner on the gold history, then caller or summarizer once on its plan).
    Metrics are printed ×100 like the paper; --json gives fractions.
    """
    from ..eval import static

    if predictions_path is not None:
        given = [f for f, v in (("--set", set_name), ("--out", out), ("--limit", limit),
                                ("--constrained", constrained or None)) if v is not None]
        if given:
            raise click.UsageError(f"--predictions scores an existing file; {', '.join(given)} apply only to a run")
        metrics = static.score_file(data, predictions_path)
        run = None
    else:
        from tqdm import tqdm

        overrides = dict(n_ctx=n_ctx, threads=threads, temperature=temperature, seed=seed)
        with _eval_load_team(ctx, set_name, models_path, overrides) as team:
            from ..protocol import get_protocol

            protocol = get_protocol(team.protocol_name, plan_label=plan_label)
            bar = tqdm(desc="eval static", unit="sample", file=sys.stderr, dynamic_ncols=True)

            def progress(done, total):
                bar.total = total
                bar.n = done
                bar.refresh()

            try:
                run = static.run_static(data, team.roles, protocol=protocol, limits=team.limits, out=out,
                                        limit=limit, constrained=constrained, progress=progress)
            except KeyboardInterrupt:
                saved = f"; predictions so far are in {out}, rerun the same command to resume" if out else ""
                click.echo(f"interrupted{saved}", err=True)
                ctx.exit(130)
            finally:
                bar.close()
        metrics = run.metrics
    if as_json:
        emit_json({**{k: metrics[k] for k in STATIC_KEYS}, "notes": metrics["notes"]})
        return
    label = metrics["notes"].get("plan_label")
    coverage = metrics["notes"].get("coverage")
    click.echo(f"samples {metrics['n_samples']}" + (f"  (current plan labelled '{label}:')" if label else "")
               + (f"  ({coverage} of the data)" if coverage else ""))
    click.echo("Plan ACC  Act. EM  Hallu.  Arg F1  (easy / hard)     R-L")
    click.echo(f"  {_pct(metrics['plan_acc'])}   {_pct(metrics['act_em'])}  {_pct(metrics['hallu_rate'])}  "
               f"{_pct(metrics['arg_f1'])}  ({_pct(metrics['easy_arg_f1']).strip()} / "
               f"{_pct(metrics['hard_arg_f1']).strip()})  {_pct(metrics['rouge_l'])}")
    if run is not None:
        click.echo(f"predicted {run.predicted}, resumed {run.resumed}, {run.seconds:.1f} s"
                   + (f"; predictions: {out}" if out else ""), err=True)
    for note in metrics["notes"].get("divergences", []):
        click.echo(f"note: {note}", err=True)


def _task_progress(tag: str, done: int, total: int, r) -> None:
    """One line per task of `eval tasks` on stderr (module level: worker processes print it too)."""
    mark = "ok  " if r.success else "FAIL"
    click.echo(f"{tag}[{done}/{total}] {mark} {r.id}: {r.status}, {r.steps} steps, {r.seconds:.1f} s"
               + (f" — {r.failure}" if r.failure else ""), err=True)


def _tasks_line(report: dict) -> str:
    return (f"tasks {report['n_tasks']}: success {100 * report['success_rate']:.1f}%, "
            f"give-up {100 * report['give_up_rate']:.1f}%, hallucinated calls {report['hallucinated_calls']}, "
            f"fabrication {100 * report['fabrication_rate']:.1f}% "
            f"({report['fabricated_answers']}/{report['answered']} answers), "
            f"{report['mean_steps']:.2f} steps and {report['mean_seconds']:.2f} s per task")


@eval_group.command("tasks")
@click.argument("tasks_path", metavar="TASKS", type=click.Path())
@_eval_team_options
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Planner turns per task (default: the set's; a task's own max_steps wins).")
@click.option("--compare", "compare", metavar="NAME", multiple=True,
              help="Another set to evaluate on the same tasks in this run (repeatable); the report compares them.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run up to N processes at once, each on one set's share of the tasks (interleaved).")
@click.pass_context
def eval_tasks_cmd(ctx, tasks_path, set_name, models_path, limit, n_ctx, threads, temperature, seed, as_json,
                   max_steps, compare, jobs):
    """End-to-end task success on a JSONL task suite (format: `umi_edge.eval.tasks`). TASKS is a file, or
    `demo` / `heldout` / `unseen` for the bundled suites. One line per task on stderr; the summary on stdout.
    With --compare, every set runs the same tasks and the report has one entry per set."""
    from ..eval.jobs import run_suite, suite_path

    path = suite_path(tasks_path)
    overrides = dict(n_ctx=n_ctx, threads=threads, temperature=temperature, seed=seed, max_steps=max_steps)
    verbose = bool(ctx.find_root().params.get("verbose"))
    names = list(dict.fromkeys([set_name or os.environ.get("UMI_EDGE_SET") or "default", *compare]))
    reports = list(run_suite(path, names, models=models_path, limit=limit, overrides=overrides, jobs=jobs,
                             verbose=verbose, progress=_task_progress).values())
    if len(names) == 1:
        report = reports[0]
        if as_json:
            emit_json(report)
            return
        click.echo(_tasks_line(report))
        for role, t in report["mean_tokens_by_role"].items():
            click.echo(f"  {role:<10} per task: {t['prompt']:.0f} prompt tokens ({t['reused']:.0f} reused), "
                       f"{t['generated']:.0f} generated")
        return
    by_set = dict(zip(names, reports))
    if as_json:
        emit_json({"tasks": str(path), "sets": by_set,
                   "compare": [{"set": n, **{k: r[k] for k in TASKS_KEYS}} for n, r in by_set.items()]})
        return
    width = max(len(n) for n in names)
    for name, report in by_set.items():
        click.echo(f"{name:<{width}}  {_tasks_line(report)}")


def _retrieval_progress(config, done, total, r):
    """One line per task of `eval retrieval` on stderr (module level: worker processes print it too)."""
    click.echo(f"{config.name} [{done}/{total}] {'ok  ' if r.success else 'FAIL'} {r.id}: {r.status}, "
               f"{r.steps} steps, {r.seconds:.1f} s, planner prompt {r.tokens.get('planner', {}).get('prompt', 0)} tok"
               + (f" — {r.failure}" if r.failure else ""), err=True)


@eval_group.command("retrieval")
@click.argument("tasks_path", metavar="TASKS", type=click.Path())
@_eval_team_options
@click.option("--distractors", "pool_ref", metavar="MODULE:ATTR", required=True,
              help="Tools to draw distractors from (module:ATTR or file.py:ATTR), e.g. "
                   "recipes/glpft/toolworld.py:TOOLS.")
@click.option("--offered", default="8,32,100", show_default=True,
              help="Tool-set sizes, comma-separated: each task's tools plus distractors up to each size.")
@click.option("--tool-top-k", "k", type=click.IntRange(min=1), default=8, show_default=True,
              help="Retrieval's k: sizes above it also run with only the top k offered.")
@click.option("--all-max", type=click.IntRange(min=1), default=None,
              help="Run the all-tools configuration only for sizes up to this (long prompts are slow to prefill); "
                   "larger ones still get their first planner prompt measured.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run up to N configurations at once, each in its own process.")
@click.option("--embeddings", is_flag=True,
              help="Also measure recall@k ranked by the base model's own embeddings (mean-pooled).")
@click.option("--recall-only", is_flag=True, help="Measure recall@k and prompt sizes only; run no task.")
@click.pass_context
def eval_retrieval_cmd(ctx, tasks_path, set_name, models_path, limit, n_ctx, threads, temperature, seed, as_json,
                       pool_ref, offered, k, all_max, jobs, embeddings, recall_only):
    """Tool retrieval, measured: TASKS (a file, or a bundled suite such as `heldout`) with distractors up to
    each --offered size, every size with all tools offered and every size above k with the top k, side by
    side in one run: success, planner prompt tokens and their ratios, and recall@k against each query."""
    from importlib import resources
    from pathlib import Path

    from ..eval import retrieval

    path = Path(tasks_path)
    bundled = Path(str(resources.files("umi_edge").joinpath(f"data/tasks/{tasks_path}.jsonl")))
    if not path.exists() and bundled.is_file():
        path = bundled
    try:
        sizes = [int(s) for s in offered.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{offered!r} is not a comma-separated list of sizes", param_hint="--offered")
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("sizes must be positive", param_hint="--offered")
    overrides = dict(n_ctx=n_ctx, threads=threads, temperature=temperature, seed=seed)
    team = retrieval.TeamSpec(set_name, models_path, tuple(overrides.items()),
                              bool(ctx.find_root().params.get("verbose")))
    report = retrieval.evaluate(team, path, pool_ref, sizes, k, limit=limit, embeddings=embeddings,
                                run=not recall_only, all_max=all_max, jobs=jobs, progress=_retrieval_progress)
    report["tasks"] = str(path)
    report["distractors"] = pool_ref
    if as_json:
        emit_json(report)
        return
    for line in retrieval.render(report):
        click.echo(line)
