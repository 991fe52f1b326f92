"""`umi-edge eval tasks`: end-to-end task success of a team over a JSONL task suite.

Task format: one JSON object per line (blank lines and lines starting with `#` are skipped):

    {"id": "calc-001",                      # unique, non-empty string
     "query": "What is 17% of 2,350?",      # the user request
     "tools": "demo",                       # "demo" (the bundled demo toolset), "module:ATTR" or
                                            # "path/to/file.py:ATTR" (umi_edge.tools.load_tools), or a
                                            # list of demo tool names (that subset of the demo toolset)
     "expect": "answer",                    # "answer" (default) or "give_up"
     "check": {...},                        # required when expect is "answer"; see below
     "max_steps": 6}                        # optional per-task planner-step limit

`check` holds one or more of (all given must pass):
- `"answer_contains": "Paris"` or a list of strings: each must occur in the answer, case-insensitively;
- `"answer_number": 399.5` (or a list of numbers, each required) with optional `"tol"` (absolute,
  default 0.01) and `"rel_tol"` (default 0): some number written in the answer is within
  max(tol, rel_tol·|x|) of it ("2,480.5" reads as 2480.5, "68.2 million" as 68200000);
- `"calls": [{"tool": "calculator", "args": {"expression": "17/100*2350"}}, ...]`: the run made these
  calls in this order (other calls may come between); `args`, when given, must be a subset of the call's
  JSON arguments (numbers compared with a 1e-9 relative tolerance, strings exactly).

A task succeeds when the run ends "answered" and every check passes (expect "answer"), or ends
"gave_up" (expect "give_up"). Hallucinated calls are calls to a name that is not among the task's tools.

Fabrication: every number an answer states must come from the query, a call's arguments or an observation
(a calculator result is an observation, so arithmetic done by a tool counts; arithmetic done in the answer
does not). A number written with fewer digits matches a value it rounds ("about 95" for 95.3, "68.2 million"
for 68,213,456), and signs are ignored ("fell by 2.5%" for -2.5). `fabricated` lists a task's ungrounded
numbers; a set's `fabrication_rate` is the share of its answered tasks with any.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..errors import UmiError

DEMO = "demo"
DEMO_SPEC = "umi_edge.tools.demo:TOOLS"
_CHECK_KEYS = ("answer_contains", "answer_number", "tol", "rel_tol", "calls")
_TASK_KEYS = ("id", "query", "tools", "expect", "check", "max_steps")
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
                     r"(?:\s*(thousand|million|billion|trillion)\b)?", re.IGNORECASE)
# a digit run glued to a letter ("B12", "A1,340") names something rather than states a number: none of it is
# read, not even the part after its comma
_GLUED = re.compile(r"(?<=[^\W\d])(?<![\d.][eE])\d+(?:[.,]\d+)*")   # (an exponent's digits are not glued)
_SCALE = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}


@dataclass(frozen=True)
class Task:
    id: str
    query: str
    tools: Any          # "demo" | "module:ATTR" | tuple of demo names
    expect: str
    check: Mapping[str, Any]
    max_steps: int | None = None
    where: str = ""     # "FILE:LINE", for messages


def _bad(where: str, msg: str) -> UmiError:
    return UmiError(f"{where}: {msg}")


def parse_task(obj: Any, where: str) -> Task:
    """Validate one task object; errors name FILE:LINE and the field."""
    if not isinstance(obj, dict):
        raise _bad(where, "a task must be a JSON object")
    unknown = sorted(set(obj) - set(_TASK_KEYS))
    if unknown:
        raise _bad(where, f"unknown field(s) {', '.join(unknown)}; valid: {', '.join(_TASK_KEYS)}")
    tid, query = obj.get("id"), obj.get("query")
    if not isinstance(tid, str) or not tid:
        raise _bad(where, "field 'id' must be a non-empty string")
    if not isinstance(query, str) or not query.strip():
        raise _bad(where, f"task {tid}: field 'query' must be a non-empty string")
    tools = obj.get("tools", DEMO)
    if isinstance(tools, list):
        if not tools or not all(isinstance(t, str) and t for t in tools):
            raise _bad(where, f"task {tid}: field 'tools' as a list must name demo tools")
        tools = tuple(tools)
    elif not isinstance(tools, str) or not tools:
        raise _bad(where, f"task {tid}: field 'tools' must be \"demo\", \"module:ATTR\" or a list of demo tool names")
    expect = obj.get("expect", "answer")
    if expect not in ("answer", "give_up"):
        raise _bad(where, f"task {tid}: field 'expect' must be \"answer\" or \"give_up\", not {expect!r}")
    check = obj.get("check", {})
    if not isinstance(check, dict):
        raise _bad(where, f"task {tid}: field 'check' must be an object")
    unknown = sorted(set(check) - set(_CHECK_KEYS))
    if unknown:
        raise _bad(where, f"task {tid}: unknown check key(s) {', '.join(unknown)}; valid: {', '.join(_CHECK_KEYS)}")
    if expect == "answer" and not ({"answer_contains", "answer_number", "calls"} & set(check)):
        raise _bad(where, f"task {tid}: expect \"answer\" needs a check (answer_contains, answer_number or calls)")
    if "answer_contains" in check:
        ac = check["answer_contains"]
        if not (isinstance(ac, str) and ac) and not (isinstance(ac, list) and ac and all(isinstance(s, str) and s for s in ac)):
            raise _bad(where, f"task {tid}: check.answer_contains must be a non-empty string or list of strings")
    for key in ("answer_number", "tol", "rel_tol"):
        values = check.get(key, [])
        values = values if key == "answer_number" and isinstance(values, list) else [values]
        if key in check and (not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values)):
            raise _bad(where, f"task {tid}: check.{key} must be a number" + (" or a list of numbers" if key == "answer_number" else ""))
    if ("tol" in check or "rel_tol" in check) and "answer_number" not in check:
        raise _bad(where, f"task {tid}: check.tol/rel_tol only go with check.answer_number")
    if "calls" in check:
        calls = check["calls"]
        if not isinstance(calls, list) or not calls or not all(
            isinstance(c, dict) and isinstance(c.get("tool"), str) and set(c) <= {"tool", "args"}
            and isinstance(c.get("args", {}), dict) for c in calls
        ):
            raise _bad(where, f"task {tid}: check.calls must be a list of {{\"tool\": name, \"args\"?: object}}")
    max_steps = obj.get("max_steps")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise _bad(where, f"task {tid}: field 'max_steps' must be a positive integer")
    return Task(tid, query, tools, expect, check, max_steps, where)


def load_tasks(path: str | os.PathLike, *, limit: int | None = None) -> list[Task]:
    """Read and validate a JSONL task file (every task, before anything runs)."""
    p = Path(path)
    if not p.is_file():
        raise UmiError(f"{p}: task file not found; give a JSONL file with one task per line")
    tasks: list[Task] = []
    seen: dict[str, str] = {}
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"{p}:{n}"
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise _bad(where, f"not valid JSON ({e})") from None
            task = parse_task(obj, where)
            if task.id in seen:
                raise _bad(where, f"task id {task.id!r} already used at {seen[task.id]}")
            seen[task.id] = where
            tasks.append(task)
    if limit is not None:
        if limit < 1:
            raise UmiError(f"--limit must be at least 1, not {limit}")
        tasks = tasks[:limit]
    if not tasks:
        raise UmiError(f"{p}: no tasks in the file")
    return tasks


def resolve_tools(task: Task, cache: dict | None = None):
    """The task's ToolSet; errors name the task and the valid demo tool names."""
    from ..tools import ToolSet, load_tools

    cache = {} if cache is None else cache
    key = DEMO if isinstance(task.tools, tuple) else task.tools
    if key not in cache:
        try:
            cache[key] = load_tools(DEMO_SPEC if key == DEMO else key)
        except UmiError as e:
            raise _bad(task.where, f"task {task.id}: {e}") from None
    toolset = cache[key]
    if isinstance(task.tools, tuple):
        missing = [n for n in task.tools if n not in toolset]
        if missing:
            raise _bad(task.where, f"task {task.id}: no demo tool named {', '.join(missing)}; "
                                   f"valid: {', '.join(toolset.names)}")
        toolset = ToolSet([toolset[n] for n in task.tools])
    return toolset


# --- checks ------------------------------------------------------------------------------------------

def _numbers(text: str):
    return _NUMBER.finditer(_GLUED.sub(lambda m: " " * len(m.group()), text))


def numbers_in(text: str) -> list[float]:
    """Every number written in `text`: "2,480.5" is 2480.5, "68.2 million" is 68200000."""
    out = []
    for m in _numbers(text):
        digits = m.group()[: m.start(1) - m.start()] if m.group(1) else m.group()
        value = float(digits.strip().replace(",", ""))
        out.append(value * _SCALE[m.group(1).lower()] if m.group(1) else value)
    return out


def _precision(text: str) -> float:
    """Half a unit in the last place a number was written with ("12.3" -> 0.05, "68.2 million" -> 50000)."""
    m = _NUMBER.fullmatch(text.strip())
    digits = m.group()[: m.start(1) - m.start()] if m and m.group(1) else text
    mantissa = digits.strip().split("e")[0].split("E")[0]
    places = len(mantissa.split(".")[1]) if "." in mantissa else 0
    scale = _SCALE[m.group(1).lower()] if m and m.group(1) else 1.0
    return 0.5 * 10.0 ** -places * scale


def fabricated_numbers(answer: str | None, grounds: Iterable[str]) -> list[float]:
    """The numbers written in `answer` that none of `grounds` (the query, the calls' arguments, the
    observations) contains, up to the precision the answer writes them with and their sign."""
    known = [abs(v) for g in grounds for v in numbers_in(g or "")]
    out = []
    for m in _numbers(answer or ""):
        (x,) = numbers_in(m.group())
        tol = max(_precision(m.group()), 1e-9 * abs(x))
        if not any(abs(abs(x) - g) <= tol for g in known):
            out.append(x)
    return out


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, bool) or isinstance(got, bool):
        return expected is got
    if isinstance(expected, (int, float)) and isinstance(got, (int, float)):
        return math.isclose(expected, got, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, dict) and isinstance(got, dict):
        return expected.keys() == got.keys() and all(_same(v, got[k]) for k, v in expected.items())
    if isinstance(expected, list) and isinstance(got, list):
        return len(expected) == len(got) and all(_same(a, b) for a, b in zip(expected, got))
    return expected == got


def _call_matches(want: Mapping, tool: str, arguments: str) -> bool:
    if want["tool"] != tool:
        return False
    if "args" not in want:
        return True
    try:
        args = json.loads(arguments)
    except ValueError:
        return False
    return isinstance(args, dict) and all(k in args and _same(v, args[k]) for k, v in want["args"].items())


def check_answer(task: Task, answer: str | None, calls: list[tuple[str, str]]) -> str | None:
    """None when every check of `task` passes on this answer and these (tool, arguments) calls; else why not."""
    check = task.check
    text = answer or ""
    if "answer_contains" in check:
        wanted = check["answer_contains"]
        for s in [wanted] if isinstance(wanted, str) else wanted:
            if s.lower() not in text.lower():
                return f"answer lacks {s!r}"
    if "answer_number" in check:
        found = numbers_in(text)
        wanted = check["answer_number"]
        for x in wanted if isinstance(wanted, list) else [wanted]:
            tol = max(float(check.get("tol", 0.01)), float(check.get("rel_tol", 0.0)) * abs(x))
            if not any(abs(v - x) <= tol for v in found):
                return f"answer has no number within {tol:g} of {x:g}"
    if "calls" in check:
        i = 0
        for tool, arguments in calls:
            if i < len(check["calls"]) and _call_matches(check["calls"][i], tool, arguments):
                i += 1
        if i < len(check["calls"]):
            return f"expected call {i + 1} ({check['calls'][i]['tool']}) was not made"
    return None


# --- running -----------------------------------------------------------------------------------------

@dataclass
class TaskResult:
    id: str
    expect: str
    status: str
    success: bool
    steps: int
    seconds: float
    hallucinated_calls: int
    answer: str | None
    calls: list = field(default_factory=list)
    failure: str | None = None
    tokens: dict = field(default_factory=dict)
    fabricated: list = field(default_factory=list)   # numbers in the answer found in no query/call/observation

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def run_task(team: Any, task: Task, toolset: Any) -> TaskResult:
    """Run one task on `team` (anything with `run(query, tools=..., max_steps=...)` yielding events)."""
    started = time.perf_counter()
    outcome = None
    calls: list[tuple[str, str]] = []
    observations: list[str] = []
    hallucinated = 0
    for ev in team.run(task.query, tools=toolset, max_steps=task.max_steps):
        kind = getattr(ev, "kind", "")
        if kind == "call":
            calls.append((ev.tool, ev.arguments))
        elif kind == "observation":
            observations.append(ev.text)
            if getattr(ev, "error", None) == "unknown_tool":
                hallucinated += 1
        elif kind == "outcome":
            outcome = ev
    seconds = time.perf_counter() - started
    if outcome is None:
        raise UmiError(f"task {task.id}: the run ended without an outcome event")
    tokens = {role: {"prompt": u.prompt, "reused": u.reused, "evaluated": u.evaluated, "generated": u.generated}
              for role, u in (outcome.usage_by_role or {}).items()}
    failure = None
    if task.expect == "give_up":
        success = outcome.status == "gave_up"
        if not success:
            failure = f"expected a give-up, run ended {outcome.status}"
    elif outcome.status != "answered":
        success, failure = False, f"run ended {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else "")
    else:
        failure = check_answer(task, outcome.answer, calls)
        success = failure is None
    fabricated = (fabricated_numbers(outcome.answer, [task.query, *(a for _, a in calls), *observations])
                  if outcome.status == "answered" else [])
    return TaskResult(task.id, task.expect, outcome.status, success, outcome.steps, round(seconds, 4),
                      hallucinated, outcome.answer, [list(c) for c in calls], failure, tokens, fabricated)


def summarize(results: list[TaskResult]) -> dict[str, Any]:
    """The --json report: the headline numbers, then status counts, per-role tokens and per-task rows."""
    n = len(results)
    fabricated = sum(bool(r.fabricated) for r in results if r.status == "answered")
    statuses: dict[str, int] = {}
    tokens: dict[str, dict[str, int]] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
        for role, t in r.tokens.items():
            acc = tokens.setdefault(role, {"prompt": 0, "reused": 0, "evaluated": 0, "generated": 0})
            for k in acc:
                acc[k] += t.get(k, 0)
    return {
        "n_tasks": n,
        "success_rate": sum(r.success for r in results) / n,
        "give_up_rate": statuses.get("gave_up", 0) / n,
        "hallucinated_calls": sum(r.hallucinated_calls for r in results),
        "mean_steps": sum(r.steps for r in results) / n,
        "mean_seconds": sum(r.seconds for r in results) / n,
        "fabrication_rate": fabricated / max(1, statuses.get("answered", 0)),
        "fabricated_answers": fabricated,
        "answered": statuses.get("answered", 0),
        "status_counts": statuses,
        "tokens_by_role": tokens,
        "mean_tokens_by_role": {role: {k: v / n for k, v in t.items()} for role, t in tokens.items()},
        "tasks": [r.to_dict() for r in results],
    }


def run_tasks(
    tasks: Iterable[Task],
    team: Any,
    *,
    progress: Callable[[int, int, TaskResult], None] | None = None,
) -> dict[str, Any]:
    """Resolve every task's tools first (fail before running anything), then run them in order."""
    tasks = list(tasks)
    cache: dict = {}
    toolsets = [resolve_tools(t, cache) for t in tasks]
    results = []
    for i, (task, toolset) in enumerate(zip(tasks, toolsets)):
        r = run_task(team, task, toolset)
        results.append(r)
        if progress is not None:
            progress(i + 1, len(tasks), r)
    return summarize(results)


def merge_shards(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from the reports of interleaved shards (shard k ran tasks k, k + n, ...), in task order."""
    if len(reports) == 1:
        return reports[0]
    rows = [r["tasks"] for r in reports]
    ordered = [rows[i % len(rows)][i // len(rows)] for i in range(sum(len(x) for x in rows))]
    return summarize([TaskResult(**row) for row in ordered])
