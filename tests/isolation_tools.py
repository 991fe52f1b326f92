"""Module-level tools for the isolation tests: a worker process imports them by module and name."""
from __future__ import annotations

import os
import threading

from umi_edge.tools import tool

RELEASE = threading.Event()   # set by a test to let hung threads of this process finish


@tool(process_safe=True)
def hang() -> str:
    """Never answers (until RELEASE is set in this process)."""
    RELEASE.wait(3600)
    return "released"


@tool(process_safe=True)
def pid() -> int:
    """The id of the process the call runs in."""
    return os.getpid()


@tool
def shout(text: str) -> str:
    """Print to stdout, then answer.

    Args:
        text: What to print.
    """
    print(text, flush=True)
    return text.upper()


@tool
def crash(code: int) -> str:
    """End the process at once.

    Args:
        code: The exit code.
    """
    os._exit(code)


@tool
def deep() -> list:
    """A list nested 100,000 deep."""
    value: list = []
    for _ in range(100_000):
        value = [value]
    return value


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")


@tool
def unprintable() -> str:
    """Raises an exception whose message cannot be printed."""
    raise Unprintable()
