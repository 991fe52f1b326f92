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

from .. import __version__
from ..engine.context import MIN_N_CTX
from ..errors import UmiError


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


# The commands live in one module per family (run/chat, models, eval, bench, serve/mcp), registered on `cli`
# when imported below; each imports its library module lazily so that `umi-edge --help` stays fast and the
# runtime never imports conversion code.


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
    from ..errors import ConfigError
    from ..team import check_query

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
    from ..team import Team

    given = {k: v for k, v in overrides.items() if v is not None}
    if tools_ref is not None:
        given["tools"] = tools_ref
    return Team.load(set_name, models=models_path, progress=True, verbose=verbose, **given)


from . import bench, evaluate, models, run, serve  # noqa: E402,F401  (registers the commands)
from .run import _trace_line  # noqa: E402,F401
