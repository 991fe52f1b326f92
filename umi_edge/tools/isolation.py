"""Where a tool call runs: a thread of this process, or a worker process killed when the call times out.

A thread cannot be stopped, so a tool that hangs keeps its thread until it returns; at most MAX_HUNG such
threads per tool are kept, after which the tool is refused without starting another. A worker process is
killed on timeout or cancel and replaced on the next call, so nothing of a hung call is left behind.

Modes (`tool_isolation`, a set key in models.toml and a `Limits` field):
  "thread"   every call in a thread of this process;
  "process"  every tool with a Python function in a worker process (dispatcher tools, such as MCP or remote
             ones, keep their live connections here and run in threads);
  "auto"     (default) worker processes for tools marked `process_safe` (the demo tools), threads otherwise,
             so a user's tool that keeps state between calls behaves as written.

A worker is a fresh interpreter that imports the tool's function by module and name: a lambda, a function
defined inside another function, a method or a function of the main script cannot run in one (`locate`
says so before any call). Worker processes need POSIX; elsewhere "auto" runs everything in threads.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any, Callable

from ..errors import ToolError
from .observation import describe, fault, outcome

ISOLATIONS = ("auto", "thread", "process")
MAX_HUNG = 4        # abandoned threads per tool still running before its calls are refused
MAX_IDLE = 2        # idle worker processes kept for reuse
POLL = 0.05         # seconds between checks of the deadline and the cancel event while a call runs
STARTUP = 30.0      # seconds a new worker may take to start (an interpreter and imports: ~0.25 s), not the tool's
READY = b"ready"    # a worker's first message

Where = tuple[str, str, "str | None"]   # (module, qualified name, the module's file when not importable by name)


def check_mode(mode: Any) -> str:
    if mode not in ISOLATIONS:
        raise ValueError(f"tool_isolation must be one of {', '.join(ISOLATIONS)}, not {mode!r}")
    return mode


def locate(fn: Callable) -> Where | None:
    """How a worker process finds `fn`: its module and qualified name, if importing them gives `fn` back
    (or a Tool wrapping it, as `@tool` leaves in the module); None if a worker could not find it."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None   # a lambda or a function defined inside another function
    mod = sys.modules.get(module)
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is not fn and getattr(obj, "fn", None) is not fn:
        return None
    if module == "__main__":
        return None   # loading the script again in a worker would run it again
    file = getattr(mod, "__file__", None)
    return module, qualname, file if isinstance(file, str) else None


# ---- threads --------------------------------------------------------------------------------------------

_hung: "weakref.WeakKeyDictionary[Any, list[threading.Thread]]" = weakref.WeakKeyDictionary()
_hung_lock = threading.Lock()


def run_in_thread(tool: Any, call: Callable[[], Any], deadline: float, limit: float,
                  cancel: threading.Event | None) -> tuple[str, str | None]:
    """(text, fault) of `call()` in a daemon thread; on timeout or cancel the thread is left to finish."""
    with _hung_lock:
        alive = [t for t in _hung.get(tool, ()) if t.is_alive()]
        _hung[tool] = alive
    if len(alive) >= MAX_HUNG:
        return fault(f"{tool.name} is not answering: {len(alive)} earlier calls have not returned"), "hung"
    box: dict[str, tuple[str, str | None]] = {}
    worker = threading.Thread(target=lambda: box.setdefault("result", outcome(tool.name, call)),
                              name=f"tool-{tool.name}", daemon=True)
    worker.start()
    while worker.is_alive():
        result = _stopped(tool.name, deadline, limit, cancel)
        if result is not None:
            with _hung_lock:
                _hung.setdefault(tool, []).append(worker)
            return result
        worker.join(min(max(deadline - time.monotonic(), 0.0), POLL))
    return box["result"]


def _stopped(name: str, deadline: float, limit: float, cancel: threading.Event | None):
    if time.monotonic() >= deadline:
        return fault(f"{name} timed out after {limit:g} s"), "timeout"
    if cancel is not None and cancel.is_set():
        return fault(f"{name} was cancelled"), "cancelled"
    return None


# ---- worker processes -----------------------------------------------------------------------------------

def process_supported() -> bool:
    return os.name == "posix"   # the worker's pipes are passed as inherited file descriptors


class _Worker:
    """One worker process (a fresh interpreter running umi_edge.tools.worker) and our ends of its pipes.

    A fresh interpreter rather than multiprocessing: that would re-run the user's main script in every
    worker, which breaks scripts without an `if __name__ == "__main__"` guard."""

    def __init__(self):
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        try:
            # a session of its own: Ctrl-C reaches only us, and we decide what the worker does
            self.process = subprocess.Popen([sys.executable, "-m", "umi_edge.tools.worker", str(down_r), str(up_w)],
                                            pass_fds=(down_r, up_w), stdin=subprocess.DEVNULL, stdout=2,
                                            start_new_session=True, env=_worker_env())
        except BaseException:
            for fd in (down_r, down_w, up_r, up_w):
                os.close(fd)
            raise
        os.close(down_r)
        os.close(up_w)
        self.send = Connection(down_w, readable=False)
        self.recv = Connection(up_r, writable=False)
        self.ready = False

    def wait_ready(self, name: str, cancel: threading.Event | None) -> tuple[str, str] | None:
        """None once the worker has started; else the fault (it did not start, or the call was cancelled)."""
        deadline = time.monotonic() + STARTUP
        while not self.ready:
            if cancel is not None and cancel.is_set():
                return fault(f"{name} was cancelled"), "cancelled"
            if time.monotonic() >= deadline:
                return fault(f"{name}: no worker process started within {STARTUP:g} s"), "raised"
            if self.recv.poll(POLL):
                if self.recv.recv_bytes() != READY:
                    raise ValueError("unexpected first message from a tool worker")
                self.ready = True
        return None

    def kill(self) -> int | None:
        """Kill and reap the process (no zombie per hung call); its exit code."""
        self.process.kill()
        code = self.process.wait()
        self.send.close()
        self.recv.close()
        return code


def _start() -> _Worker:
    try:
        return _Worker()
    except OSError as e:   # no interpreter to run (an embedded Python), no pipes or processes left
        raise ToolError(f"cannot start a tool worker process ({describe(e)}); "
                        f"set tool_isolation = \"thread\"") from None


def _worker_env() -> dict[str, str]:
    """Our environment, with our import path: the worker imports the tool modules we import."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}


class WorkerPool:
    """Worker processes for tool calls, reused between calls; one call per worker at a time."""

    def __init__(self, max_idle: int = MAX_IDLE):
        self.max_idle = max_idle
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self.started = 0    # workers started so far (tests and the soak report read it)

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self.started += 1
        return _start()

    def _give(self, worker: _Worker) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(worker)
                return
        worker.kill()

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker whose call overran, and start its successor now, so the next call finds it ready."""
        worker.kill()
        with self._lock:
            if self._idle:
                return
            self.started += 1
        self._give(_start())

    def run(self, name: str, where: Where, args: dict, limit: float,
            cancel: threading.Event | None) -> tuple[str, str | None]:
        """(text, fault) of the function at `where` called with `args` in a worker; killed when it overruns
        `limit` seconds (counted once the worker has started)."""
        worker = self._take()
        try:
            stopped = worker.wait_ready(name, cancel)
            if stopped is not None:
                worker.kill()
                return stopped
            deadline = time.monotonic() + limit
            worker.send.send_bytes(json.dumps([name, list(where), args]).encode())
            while True:
                result = _stopped(name, deadline, limit, cancel)
                if result is not None:
                    if result[1] == "timeout":
                        self._replace(worker)
                    else:
                        worker.kill()
                    return result
                if worker.recv.poll(min(max(deadline - time.monotonic(), 0.0), POLL)):
                    text, error = json.loads(worker.recv.recv_bytes())
                    self._give(worker)
                    return text, error
        except (EOFError, OSError, ValueError, TypeError):   # the worker died (a crash in native code, os._exit)
            # or something in it wrote to our pipe
            try:
                worker.process.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
            code = worker.kill()
            return fault(f"{name} ended its worker process (exit code {code})"), "raised"
        except BaseException:
            worker.kill()
            raise

    def close(self) -> None:
        """Stop the idle workers (a busy one is killed by its call's timeout)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


POOL = WorkerPool()
atexit.register(POOL.close)
