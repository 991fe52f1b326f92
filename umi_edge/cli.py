"""The `umi-edge` command line: a thin shell that parses flags, calls one library function and renders
the result. It is the only module that prints or exits; library errors (UmiError) become one-line
messages with a non-zero exit code. Logs go to stderr."""
from __future__ import annotations

import json
import logging
import sys

import click

from . import __version__
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
        import os

        os.environ["UMI_EDGE_LLAMA_LOGS"] = "1"


def emit_json(obj) -> None:
    """One JSON document per line on stdout (for --json)."""
    click.echo(json.dumps(obj, ensure_ascii=False, default=str))


# Commands are registered below, one block per command; each imports its library module lazily so that
# `umi-edge --help` stays fast and the runtime never imports conversion code.
