"""The worker process behind tool_isolation "process": runs the tool functions the parent names, one call at
a time, and answers each with its observation text. Started by isolation._Worker as
`python -m umi_edge.tools.worker <read fd> <write fd>`; exits when the parent closes the pipe or goes away.
Messages are JSON both ways, so nothing the parent reads from here is unpickled."""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any, Callable


def _load(module: str, qualname: str, file: str | None) -> Callable:
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            if file is None:
                raise
            # a module the parent loaded from a file (`--tools path/to/tools.py:ATTR`)
            spec = importlib.util.spec_from_file_location(module, file)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[module] = mod
            spec.loader.exec_module(mod)
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return getattr(obj, "fn", None) or obj   # `@tool` leaves a Tool under the function's name


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C and kills us if needed
    down = Connection(int(argv[0]), writable=False)
    up = Connection(int(argv[1]), readable=False)
    from ..proc import exit_with_parent
    from .observation import describe, fault, outcome

    exit_with_parent(os.getppid())   # even while a tool hangs
    up.send_bytes(b"ready")           # the parent starts timing a call from here
    functions: dict[tuple, Callable] = {}
    while True:
        try:
            name, where, args = json.loads(down.recv_bytes())
        except (EOFError, OSError):
            return 0
        where = tuple(where)
        try:
            if where not in functions:
                functions[where] = _load(*where)
            fn = functions[where]
        except BaseException as e:  # noqa: BLE001 - the tool's module may fail to import in any way
            result = (fault(f"{name} cannot be loaded in a worker process ({describe(e)})"), "raised")
        else:
            result = outcome(name, lambda: fn(**args))
        up.send_bytes(json.dumps(result).encode())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
