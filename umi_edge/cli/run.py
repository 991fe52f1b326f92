"""`umi-edge run` and `chat`: one task or one per line, rendered as a trace, JSON events or the answer."""
from __future__ import annotations

import sys

import click

from ..errors import UmiError
from . import RUN_EXIT, RUN_EXIT_BUDGET, _load_team, _read_query, _team_options, cli, emit_json, printable


def _usage_line(usage) -> str:
    return (f"{usage.prompt} prompt tok ({usage.reused} reused, {usage.evaluated} evaluated), "
            f"{usage.generated} generated" + (f" ({usage.forced} forced)" if usage.forced else "")
            + (f", {usage.truncated} truncated" if usage.truncated else ""))


def _trace_line(event) -> str:
    """One human-readable line (or block) for an event in --trace / chat output."""
    kind = event.kind
    if kind == "plan":
        head = f"[{event.step}] planner → {event.route}"
    elif kind == "call":
        head = f"[{event.step}] caller → {event.tool}"
    elif kind == "observation":
        head = f"[{event.step}] observation ({event.tool}{'' if event.ok else ', ' + str(event.error)})"
    elif kind == "answer":
        head = f"[{event.step}] summarizer"
    elif kind == "give_up":
        head = f"[{event.step}] planner gave up"
    elif kind == "tools":
        head = f"[{event.step}] tools for the {event.role}: {len(event.tools)} of {event.total} ({event.ranker})"
    elif kind == "notice":
        head = f"[{event.step}] notice {event.code}"
    elif kind == "error":
        head = f"[{event.step}] error ({event.error_type})"
    else:
        head = f"[{event.step}] {kind}"
    extra = []
    if event.usage.prompt or event.usage.generated:
        extra.append(_usage_line(event.usage))
    if event.seconds:
        extra.append(f"{event.seconds:.2f}s")
    head = printable(head) + (f"  ({'; '.join(extra)})" if extra else "")
    text = printable(event.text.rstrip(), newlines=True)    # model and tool text: no escape sequences
    return head + ("\n    " + text.replace("\n", "\n    ") if text else "")


def _remote_lines(team) -> list[str]:
    """--trace: where each remote role runs and what its server can do (grammar, prompt form, cache report)."""
    from ..engine.remote import RemoteRole

    return [f"remote {engine.describe()}" for engine in team.roles.values() if isinstance(engine, RemoteRole)]


def _outcome_lines(outcome) -> list[str]:
    lines = [f"status: {outcome.status} after {outcome.steps} step(s) in {outcome.seconds:.2f}s"
             + (f" ({outcome.reason})" if outcome.reason else "")]
    for role, usage in outcome.usage_by_role.items():
        ratio = f", evaluated/prompt {usage.evaluated / usage.prompt:.2f}" if usage.prompt else ""
        lines.append(f"  {role:<10} {_usage_line(usage)}{ratio}")
    return lines


def _run_one(team, query, *, as_json, trace, out, max_steps=None, budget_seconds=None, progress=False,
             codes=None):
    """Runs one task, rendering events; returns the Outcome (and appends Notice codes to `codes`).
    Ctrl-C cancels the task cleanly."""
    import signal
    import threading

    cancel = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_sigint(signum, frame):  # first Ctrl-C: cancel the task; second: the default KeyboardInterrupt
            cancel.set()
            signal.signal(signal.SIGINT, previous or signal.default_int_handler)

        previous = signal.signal(signal.SIGINT, on_sigint)
    outcome = None
    try:
        for event in team.run(query, max_steps=max_steps, budget_seconds=budget_seconds, cancel=cancel):
            if event.kind == "outcome":
                outcome = event
            elif event.kind == "notice" and codes is not None:
                codes.append(event.code)
            if as_json:
                emit_json(event.to_dict())
                sys.stdout.flush()
            elif trace and event.kind != "outcome":
                out(_trace_line(event))
            elif progress and event.kind != "outcome":
                out(_trace_line(event).splitlines()[0])
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return outcome


@cli.command("run")
@click.argument("query", required=False)
@click.option("--query-file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Read the task from this UTF-8 file (- for stdin) instead of QUERY.")
@_team_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event; the last is the outcome.")
@click.option("--trace", is_flag=True, help="Show planner / caller / observation steps and token counts on stderr.")
@click.pass_context
def run_cmd(ctx, query, query_file, set_name, models_path, tools_ref, max_steps, budget_seconds, n_ctx, threads,
            n_gpu_layers, temperature, seed, as_json, trace, tool_top_k=None):
    """Run one task with a model team and print the answer.

    QUERY is the task; `-` (or --query-file -) reads it from stdin, --query-file PATH from a file.

    Exit status: 0 when the run finished (answered, gave up, or hit --max-steps; the status line or
    the JSON outcome says which), 1 on an error, 2 on a usage error, 124 when the --budget ran out,
    130 when cancelled with Ctrl-C.
    """
    overrides = dict(n_ctx=n_ctx, threads=threads, n_gpu_layers=n_gpu_layers, temperature=temperature, seed=seed,
                     tool_top_k=tool_top_k)
    verbose = bool(ctx.parent and ctx.parent.params.get("verbose"))
    try:
        query = _read_query(query, query_file)
        team = _load_team(set_name, models_path, tools_ref, overrides, verbose=verbose)
    except UmiError as e:
        if as_json:  # --json promises an outcome line even when nothing ran
            emit_json({"event": "outcome", "status": "error", "answer": None, "steps": 0,
                       "reason": str(e), "error_type": type(e).__name__})
        raise
    codes: list[str] = []
    with team:
        for line in _remote_lines(team) if trace and not as_json else ():
            click.echo(line, err=True)
        # on a terminal, one line per step so a long run is not silent; pipes get only the answer
        outcome = _run_one(team, query, codes=codes, as_json=as_json, trace=trace,
                           out=lambda s: click.echo(s, err=True),
                           max_steps=max_steps, budget_seconds=budget_seconds, progress=sys.stderr.isatty())
    if outcome is None:  # the loop always ends with an Outcome; guard against a broken engine anyway
        raise click.ClickException("the run ended without an outcome")
    if not as_json:
        if trace:
            for line in _outcome_lines(outcome):
                click.echo(line, err=True)
        if outcome.status == "answered":
            click.echo(outcome.answer)
        elif outcome.status == "error":
            click.echo(f"Error: {outcome.reason or outcome.text}", err=True)
        elif not trace:
            click.echo(f"no answer ({outcome.status}): {outcome.reason or outcome.text}", err=True)
    budget = outcome.status == "cancelled" and "budget" in codes
    ctx.exit(RUN_EXIT_BUDGET if budget else RUN_EXIT.get(outcome.status, 1))


@cli.command("chat")
@_team_options
@click.pass_context
def chat_cmd(ctx, set_name, models_path, tools_ref, max_steps, budget_seconds, n_ctx, threads, n_gpu_layers,
             temperature, seed, tool_top_k=None):
    """Interactive: each line is one task (α-UMi tasks are independent), run with its trace shown.

    Ctrl-C during a task cancels it; Ctrl-D (EOF) or Ctrl-C at the prompt exits.
    """
    from ..team import check_query

    overrides = dict(n_ctx=n_ctx, threads=threads, n_gpu_layers=n_gpu_layers, temperature=temperature, seed=seed,
                     tool_top_k=tool_top_k)
    verbose = bool(ctx.parent and ctx.parent.params.get("verbose"))
    with _load_team(set_name, models_path, tools_ref, overrides, verbose=verbose) as team:
        name = team.spec.name if team.spec else "custom"
        click.echo(f"umi-edge chat: set {name!r}, tools: {', '.join(team.tools.names) or 'none'}. "
                   "One task per line; Ctrl-D to quit.", err=True)
        for line in _remote_lines(team):
            click.echo(line, err=True)
        while True:
            try:
                query = input("> ")
            except (EOFError, KeyboardInterrupt):
                click.echo("", err=True)
                break
            except UnicodeDecodeError:
                click.echo("that line is not UTF-8 text; ignored", err=True)
                continue
            if not query.strip():
                continue
            try:   # undecodable bytes arrive as lone surrogates where stdin decodes with surrogateescape
                check_query(query)
            except UmiError as e:
                click.echo(f"Error: {e}; line ignored", err=True)
                continue
            outcome = _run_one(team, query, as_json=False, trace=True, out=click.echo,
                               max_steps=max_steps, budget_seconds=budget_seconds)
            if outcome is None:
                continue
            for line in _outcome_lines(outcome):
                click.echo(line)
            if outcome.status == "answered":
                click.echo(f"answer: {printable(outcome.answer, newlines=True)}")
            else:
                reason = f": {printable(outcome.reason, newlines=True)}" if outcome.reason else ""
                click.echo(f"no answer ({outcome.status}){reason}")
