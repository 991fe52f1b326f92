"""Soak: 200 tasks in one process whose every tool call hangs. Live threads, child processes and RSS must
stay bounded in both isolation modes. Run with -s to see the numbers (docs/tool-isolation.md quotes them):

    python -m pytest -q -s -m slow tests/test_tool_soak.py
"""
from __future__ import annotations

import os
import threading

import pytest

import isolation_tools as it
from umi_edge.engine.fake import fake_roles
from umi_edge.loop import Limits, run_team
from umi_edge.tools.isolation import MAX_HUNG, MAX_IDLE, POOL

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")]

TASKS = 200
WARMUP = 10


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def children() -> int:
    n = 0
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            n += len(f.read().split())
    return n


def task(isolation: str) -> str:
    roles = fake_roles(planner=["The tool will answer.\n Next: caller."], caller=["Action: hang\nAction Input: {}"])
    events = list(run_team("q", roles, [it.hang], constrained=False,
                           limits=Limits(max_steps=1, tool_timeout=0.1, tool_isolation=isolation)))
    (obs,) = [e for e in events if e.kind == "observation"]
    assert events[-1].status == "max_steps"
    return obs.error


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_soak_hanging_tool(isolation):
    it.RELEASE.clear()
    try:
        for _ in range(WARMUP):
            task(isolation)
        base = {"threads": threading.active_count(), "os_threads": os_threads(), "children": children(),
                "rss": rss_mb(), "workers": POOL.started}
        errors = [task(isolation) for _ in range(TASKS)]
        after = {"threads": threading.active_count(), "os_threads": os_threads(), "children": children(),
                 "rss": rss_mb(), "workers": POOL.started,
                 "hung": sum(t.name == "tool-hang" for t in threading.enumerate())}
    finally:
        it.RELEASE.set()
    print(f"\n{isolation}: {TASKS} tasks after {WARMUP} warm-up; faults {sorted(set(errors))}; "
          f"python threads {base['threads']} -> {after['threads']}, OS threads {base['os_threads']} -> "
          f"{after['os_threads']} (hung tool threads {after['hung']}), "
          f"child processes {base['children']} -> {after['children']}, "
          f"RSS {base['rss']:.1f} -> {after['rss']:.1f} MB, "
          f"workers started {after['workers'] - base['workers']}")
    if isolation == "process":
        assert set(errors) == {"timeout"}
        assert after["workers"] - base["workers"] == TASKS           # one killed and replaced per hung call
        assert after["children"] <= MAX_IDLE + 1
        assert after["threads"] <= base["threads"] + 1
    else:
        assert set(errors) == {"hung"}                               # the cap was reached in the warm-up
        assert after["hung"] == MAX_HUNG and after["threads"] <= base["threads"] + 1   # the capped hung ones, no more
    assert after["os_threads"] <= base["os_threads"] + 1
    assert after["rss"] - base["rss"] < 30
