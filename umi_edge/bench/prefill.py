"""Prefix reuse: the scripted task replayed through the real loop and engine, with KV reuse on and off."""
from __future__ import annotations

import statistics
from typing import Callable, Mapping

from . import scenario


def replay(roles: Mapping[str, object], tools, protocol, *, reuse: bool, reset: bool = True) -> list[dict]:
    """One run of the scripted task through `run_team`; one row per role call with its prompt accounting.

    `reset` clears every role's KV cache first (a team's first task); without it the roles keep what the
    previous task left (a team serving its next task)."""
    from ..loop import Limits, run_team

    if reset:
        for role in roles.values():
            role.reset()
    rows: list[dict] = []
    status = None
    limits = Limits(max_steps=scenario.STEPS, budget_seconds=None)
    for event in run_team(scenario.QUERY, scenario.scripted_roles(roles, reuse=reuse), tools, protocol=protocol,
                          limits=limits, constrained=True):
        if event.kind in ("plan", "call", "answer"):
            u = event.usage
            rows.append({"step": event.step, "role": event.role, "prompt": u.prompt, "reused": u.reused,
                         "evaluated": u.evaluated, "seconds": round(u.prompt_seconds, 4)})
        elif event.kind == "observation" and not event.ok:
            raise RuntimeError(f"scripted call failed at step {event.step}: {event.text}")
        elif event.kind == "outcome":
            status = event.status
    if status != "answered" or len(rows) != 2 * scenario.STEPS:
        raise RuntimeError(f"the scripted task did not replay as written (status {status}, {len(rows)} role calls)")
    return rows


def _ratio(with_reuse: list[dict], without: list[dict], keep: Callable[[dict], bool]) -> float:
    num = sum(r["evaluated"] for r in with_reuse if keep(r))
    den = sum(r["evaluated"] for r in without if keep(r))
    return round(num / den, 4) if den else 0.0


def prefill(roles: Mapping[str, object], tools, protocol, *, repeats: int = 3,
            progress: Callable[[str], None] = lambda s: None) -> dict:
    """Prompt tokens evaluated per step and role with reuse on vs off, and total prefill seconds (medians
    of `repeats` interleaved off/on runs). `ratio` = evaluated with reuse ÷ evaluated without, whole task,
    the team starting with empty caches; `ratio_after_first_step` leaves step 1 out (issue 3's bar);
    `ratio_next_task` is a second task on the same team (the shared tool-doc prefix is already cached)."""
    off_s, on_s = [], []
    off: list[dict] = []
    on: list[dict] = []
    for i in range(max(repeats, 1)):
        progress(f"prefill: replay {i + 1}/{repeats} (reuse off, on)")
        off = replay(roles, tools, protocol, reuse=False)
        on = replay(roles, tools, protocol, reuse=True)
        off_s.append(sum(r["seconds"] for r in off))
        on_s.append(sum(r["seconds"] for r in on))
    warm = replay(roles, tools, protocol, reuse=True, reset=False)
    steps = [{"step": a["step"], "role": a["role"], "prompt": a["prompt"], "reused": a["reused"],
              "evaluated": a["evaluated"], "evaluated_without_reuse": b["evaluated"],
              "evaluated_next_task": c["evaluated"]} for a, b, c in zip(on, off, warm)]
    by_role = {}
    for name in ("planner", "caller", "summarizer"):
        mine = [s for s in steps if s["role"] == name]
        by_role[name] = {"calls": len(mine), "prompt": sum(s["prompt"] for s in mine),
                         "evaluated": sum(s["evaluated"] for s in mine),
                         "evaluated_without_reuse": sum(s["evaluated_without_reuse"] for s in mine),
                         # the role's calls after its own first one: "each role evaluates only new tokens"
                         "ratio_after_its_first_call": _ratio([r for r in on if r["role"] == name][1:],
                                                              [r for r in off if r["role"] == name][1:],
                                                              lambda r: True) if len(mine) > 1 else None}
    t_on, t_off = statistics.median(on_s), statistics.median(off_s)
    return {
        "ratio": _ratio(on, off, lambda r: True),
        "ratio_after_first_step": _ratio(on, off, lambda r: r["step"] > 1),
        "ratio_next_task": _ratio(warm, off, lambda r: True),
        "steps": scenario.STEPS,
        "prompt_tokens": sum(r["prompt"] for r in on),
        "evaluated_with_reuse": sum(r["evaluated"] for r in on),
        "evaluated_without_reuse": sum(r["evaluated"] for r in off),
        "seconds_with_reuse": round(t_on, 3),
        "seconds_without_reuse": round(t_off, 3),
        "seconds_ratio": round(t_on / t_off, 4) if t_off else 0.0,
        "by_role": by_role,
        "per_step": steps,
    }
