"""One thread per loaded team: it runs jobs one at a time (a Team holds KV state) from a bounded queue and posts
each job's events to the asyncio side. A full queue refuses at once with a Retry-After estimate."""
from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from ..events import Event


class QueueFull(Exception):
    """The team is busy and its queue is full; `retry_after` is an estimate in whole seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"busy: retry in about {retry_after} s")
        self.retry_after = retry_after


class Closed(Exception):
    """The server is shutting down."""


@dataclass(eq=False)
class Job:
    """One run: what to run, how to stop it, and the channel its items go through.

    Items: ("event", Event), ("token", Token) of the roles in `tokens` (True: every role), and last
    ("end", None | BaseException).
    `stop_at(event)` runs in the worker thread after each event is posted; True ends the run there (the
    generator is closed at that yield, so e.g. a call it returns is never executed).
    """

    query: str
    tools: Any = None
    history: tuple = ()
    choice: Any = None
    tokens: bool | tuple[str, ...] = False
    stop_at: Callable[[Event], bool] | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "new"          # new → queued → running → done
    cancel_reason: str = ""     # why it was cancelled: "client" (gone or DELETE) or "shutdown"
    _loop: asyncio.AbstractEventLoop | None = None
    _items: asyncio.Queue | None = None

    def bind(self) -> None:
        """Attach to the running event loop (call from it, before submitting)."""
        self._loop = asyncio.get_running_loop()
        self._items = asyncio.Queue()

    def post(self, kind: str, value: Any) -> None:
        """From any thread."""
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, (kind, value))
        except RuntimeError:   # the event loop is gone (shutdown): nobody is listening
            pass

    async def items(self) -> AsyncIterator[tuple[str, Any]]:
        while True:
            kind, value = await self._items.get()
            yield kind, value
            if kind == "end":
                return


class TeamWorker:
    """Runs `team`'s jobs in one thread; at most one running and `max_queue` waiting."""

    def __init__(self, name: str, team: Any, *, max_queue: int, budget_seconds: float | None = None,
                 max_steps: int | None = None):
        self.name, self.team, self.max_queue = name, team, max_queue
        self.budget_seconds, self.max_steps = budget_seconds, max_steps
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()
        self.running: Job | None = None
        self._started_at = 0.0
        self._mean_seconds = 5.0       # a first guess for Retry-After; then a running mean of real runs
        self._runs = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"umi-serve-{name}", daemon=True)
        self._thread.start()

    # ---- the asyncio side -------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue `job` (already bound), or raise QueueFull / Closed."""
        with self._cv:
            if self._closed:
                raise Closed("the server is shutting down")
            busy = self.running is not None or self._waiting
            if busy and len(self._waiting) >= self.max_queue:
                raise QueueFull(self._retry_after())
            job.state = "queued"
            self._waiting.append(job)
            self._cv.notify()

    def cancel(self, job: Job, reason: str = "client") -> None:
        """Stop `job`: a queued one leaves the queue at once (ending with no events), a running one is cancelled."""
        job.cancel_reason = job.cancel_reason or reason
        with self._cv:
            if job in self._waiting:
                self._waiting.remove(job)
                job.state = "done"
                job.post("end", None)
                return
        job.cancel.set()

    def load(self) -> dict:
        with self._cv:
            return {"running": int(self.running is not None), "waiting": len(self._waiting),
                    "max_queue": self.max_queue}

    def close(self, timeout: float = 5.0) -> None:
        """Refuse new jobs, end the queued ones, cancel the running one and wait for the thread."""
        with self._cv:
            self._closed = True
            waiting, self._waiting = list(self._waiting), deque()
            running = self.running
            self._cv.notify_all()
        for job in waiting:
            job.state = "done"
            job.post("end", Closed("the server is shutting down"))
        if running is not None:
            running.cancel_reason = running.cancel_reason or "shutdown"
            running.cancel.set()
        self._thread.join(timeout)

    def _retry_after(self) -> int:
        elapsed = time.monotonic() - self._started_at if self.running is not None else 0.0
        return max(1, math.ceil(self._mean_seconds * (len(self._waiting) + 1) - elapsed))

    # ---- the worker thread ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                self.running, job.state = job, "running"
                self._started_at = time.monotonic()
            try:
                self._run(job)
                job.post("end", None)
            except BaseException as e:  # noqa: BLE001 - reported to the job's client, the worker goes on
                job.post("end", e)
            finally:
                with self._cv:
                    seconds = time.monotonic() - self._started_at
                    self._runs += 1
                    self._mean_seconds += (seconds - self._mean_seconds) / min(self._runs, 20)
                    self.running, job.state = None, "done"

    def _run(self, job: Job) -> None:
        roles = job.tokens
        on_token = (None if not roles else (lambda t: job.post("token", t)) if roles is True
                    else (lambda t: job.post("token", t) if t.role in roles else None))
        events = self.team.run(job.query, tools=job.tools, max_steps=self.max_steps,
                               budget_seconds=self.budget_seconds, cancel=job.cancel, on_token=on_token,
                               history=job.history, choice=job.choice)
        try:
            for event in events:
                job.post("event", event)
                if job.stop_at is not None and job.stop_at(event):
                    break
        finally:
            events.close()
