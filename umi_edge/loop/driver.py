"""The run driver: the wall-clock budget, cancellation and the outcome, around one episode strategy."""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, Mapping

from ..engine.base import RoleEngine
from ..events import Error, Event, Notice, Outcome, Token, Usage
from ..protocol.interfaces import AnyProtocol
from .limits import Limits


class Halt(Exception):
    """Cancellation or the wall-clock budget stopped the run."""


class Run:
    """What every part of one run shares: the engines, the protocol, the limits, the stop signal engines and
    tools see (user cancel or budget), the per-role usage and the step counter."""

    def __init__(self, roles: Mapping[str, RoleEngine], limits: Limits, cancel: threading.Event | None,
                 on_token: Callable[[Token], None] | None):
        self.roles, self.limits = roles, limits
        self.proto: AnyProtocol    # resolved as the run starts, so that a bad name is an Error event
        self.user_cancel = cancel
        self.on_token = on_token
        self.stop = threading.Event()
        self.stop_reason = ""
        self.usage: dict[str, Usage] = {}
        self.steps = 0
        self.t0 = time.monotonic()   # reset when the consumer starts iterating

    def events(self, episode: Callable[[], Iterator[Event]]) -> Iterator[Event]:
        """The episode's events, then (on a halt or a fault of our code or the environment) the closing ones."""
        self.t0 = time.monotonic()
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(done,), name="umi-run-watch", daemon=True)
        watcher.start()
        try:
            yield from episode()
        except Halt:
            yield from self._halted()
        except Exception as e:  # noqa: BLE001 - our/environment faults end the run, reported as events
            yield Error(step=self.steps, role="team", text=f"{type(e).__name__}: {e}", error_type=type(e).__name__)
            yield self.outcome("error", reason=str(e))
        finally:
            done.set()

    def _stopping(self) -> bool:
        """Sets the stop signal (and its reason) when the user cancelled or the budget ran out."""
        budget = self.limits.budget_seconds
        if self.user_cancel is not None and self.user_cancel.is_set():
            self.stop_reason = self.stop_reason or "cancelled"
        elif budget is not None and time.monotonic() - self.t0 > budget:
            self.stop_reason = self.stop_reason or "budget"
        else:
            return self.stop.is_set()
        self.stop.set()
        return True

    def _watch(self, done: threading.Event) -> None:
        while not done.wait(0.02):
            if self._stopping():
                return

    def check(self) -> None:
        """Between stages: raise Halt once the run must stop."""
        if self._stopping():
            raise Halt

    def halt(self) -> None:
        """An engine or a tool saw the stop signal."""
        self.stop_reason = self.stop_reason or "cancelled"
        raise Halt

    def _halted(self) -> Iterator[Event]:
        if self.stop_reason == "budget":
            text = f"wall-clock budget of {self.limits.budget_seconds:g} s exceeded"
        else:
            text = "cancelled"
        yield Notice(step=self.steps, role="team", text=text, code=self.stop_reason or "cancelled")
        yield self.outcome("cancelled", reason=text)

    def outcome(self, status: str, answer: str | None = None, reason: str = "") -> Outcome:
        return Outcome(step=self.steps, role="team", text=answer if answer is not None else reason,
                       seconds=time.monotonic() - self.t0, usage=sum(self.usage.values(), Usage()),
                       status=status, answer=answer, steps=self.steps, usage_by_role=dict(self.usage),
                       reason=reason)
