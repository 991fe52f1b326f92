"""`umi-edge bench serve`: per-task latency through the HTTP server ÷ the same task run in process with
`team.run`, on one loaded team, side by side.

Every measured run starts from the same KV state: a fixed warm-up task runs in process right before it, so
neither side re-uses the other's prompts. The sides alternate order from task to task (A B, then B A).
Besides wall-clock seconds each side records the process's CPU seconds (every thread: the team's and the
server's), which isolates what the server adds when other jobs make the wall clock noisy.
Server sides: a plain chat completion and a streamed one (time to `[DONE]`), both with the set's tools
running in the server, so the loop is the same as in process. Greedy sets give the same answer on every side;
the report says whether they did.
"""
from __future__ import annotations

import json
import statistics
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

WARMUP = "What is 2 + 2?"
SIDES = ("in_process", "server", "server_stream")


@dataclass(frozen=True)
class ServeBenchConfig:
    """What to run: the set, the bundled suite (or a JSONL path) and how many of its tasks, rounds per task."""

    set: str = "default"
    models: str | None = None
    tasks: str = "demo"
    limit: int = 6
    repeats: int = 1
    threads: int | None = None


def bench_serve(config: ServeBenchConfig = ServeBenchConfig(), *,
                progress: Callable[[str], None] = lambda s: None) -> dict:
    """{"config", "tasks": [{"id", "seconds": {side: [..]}, "same_answer"}], "ratios": {...}, "seconds"}."""
    from ..eval.tasks import load_tasks
    from ..serve.app import ServeConfig, background
    from ..team import Team

    t_start = time.perf_counter()
    tasks = load_tasks(task_path(config.tasks), limit=config.limit)
    progress(f"loading set {config.set!r}")
    team = Team.load(config.set, models=config.models, threads=config.threads)
    name = team.spec.name if team.spec else config.set
    rows = []
    with background({name: team}, ServeConfig(port=0, max_queue=1)) as url:
        progress(f"server at {url}; {len(tasks)} task(s) x {config.repeats} round(s), sides {', '.join(SIDES)}")
        for i, task in enumerate(tasks):
            seconds = {side: [] for side in SIDES}
            cpu = {side: [] for side in SIDES}
            answers = {side: [] for side in SIDES}
            for r in range(config.repeats):
                order = SIDES if (i + r) % 2 == 0 else tuple(reversed(SIDES))
                for side in order:
                    _in_process(team, WARMUP)
                    c0 = _cpu_seconds()
                    s, answer = _measure(side, team, url, name, task.query)
                    cpu[side].append(_cpu_seconds() - c0)
                    seconds[side].append(s)
                    answers[side].append(answer)
            same = len({a for side in SIDES for a in answers[side]}) == 1
            row = {"id": task.id, "seconds": {k: [round(x, 4) for x in v] for k, v in seconds.items()},
                   "cpu_seconds": {k: [round(x, 4) for x in v] for k, v in cpu.items()}, "same_answer": same}
            rows.append(row)
            med = {k: statistics.median(v) for k, v in seconds.items()}
            progress(f"[{i + 1}/{len(tasks)}] {task.id}: in process {med['in_process']:.2f} s, server "
                     f"{med['server']:.2f} s ({med['server'] / med['in_process']:.3f}), stream "
                     f"{med['server_stream']:.2f} s ({med['server_stream'] / med['in_process']:.3f})"
                     + ("" if same else ", answers differ"))
    return {"config": asdict(config) | {"set": name}, "tasks": rows, "ratios": _ratios(rows),
            "same_answers": sum(r["same_answer"] for r in rows), "seconds": round(time.perf_counter() - t_start, 1)}


def task_path(name: str) -> Path:
    """A JSONL path, or `demo` / `heldout` for the bundled suites."""
    path = Path(name)
    if not path.exists() and name in ("demo", "heldout"):
        from importlib import resources

        path = Path(str(resources.files("umi_edge").joinpath(f"data/tasks/{name}.jsonl")))
    return path


def _ratios(rows: list[dict]) -> dict:
    """Per side: the median of per-task ratios (median seconds ÷ median in-process seconds) and total ÷ total,
    for wall-clock and for CPU seconds."""
    out = {}
    base = [statistics.median(r["seconds"]["in_process"]) for r in rows]
    cpu_base = [statistics.median(r["cpu_seconds"]["in_process"]) for r in rows]
    for side in SIDES[1:]:
        mine = [statistics.median(r["seconds"][side]) for r in rows]
        cpu = [statistics.median(r["cpu_seconds"][side]) for r in rows]
        out[side] = {"median_task_ratio": round(statistics.median(m / b for m, b in zip(mine, base)), 4),
                     "total_ratio": round(sum(mine) / sum(base), 4),
                     "total_seconds": round(sum(mine), 2),
                     "cpu_median_task_ratio": round(statistics.median(m / b for m, b in zip(cpu, cpu_base)), 4),
                     "cpu_total_ratio": round(sum(cpu) / sum(cpu_base), 4)}
    out["in_process_total_seconds"] = round(sum(base), 2)
    return out


def _cpu_seconds() -> float:
    """CPU time of this process, every thread (user + system)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _in_process(team, query: str) -> str | None:
    outcome = list(team.run(query))[-1]
    return outcome.answer


def _measure(side: str, team, url: str, model: str, query: str) -> tuple[float, str | None]:
    t0 = time.perf_counter()
    if side == "in_process":
        answer = _in_process(team, query)
        return time.perf_counter() - t0, answer
    body = {"model": model, "messages": [{"role": "user", "content": query}], "stream": side == "server_stream"}
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=3600) as resp:
        raw = resp.read()
    seconds = time.perf_counter() - t0
    if side == "server":
        reply = json.loads(raw)
        status = reply["umi"]["status"]
        return seconds, reply["choices"][0]["message"]["content"] if status == "answered" else None
    text, status = "", None
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: {"):
            chunk = json.loads(block[6:])
            for c in chunk.get("choices", []):
                text += c["delta"].get("content") or ""
            status = chunk.get("umi", {}).get("status", status)
    return seconds, text if status == "answered" else None


def table(report: dict) -> str:
    """The per-task seconds and the ratios, for people."""
    lines = [f"umi-edge bench serve: set {report['config']['set']!r}, {len(report['tasks'])} task(s) of "
             f"{report['config']['tasks']!r}, {report['config']['repeats']} round(s); seconds per task (median)",
             f"{'task':<28} {'in process':>10} {'server':>10} {'ratio':>7} {'stream':>10} {'ratio':>7}  same answer"]
    for r in report["tasks"]:
        m = {k: statistics.median(v) for k, v in r["seconds"].items()}
        lines.append(f"{r['id']:<28} {m['in_process']:>10.2f} {m['server']:>10.2f} "
                     f"{m['server'] / m['in_process']:>7.3f} {m['server_stream']:>10.2f} "
                     f"{m['server_stream'] / m['in_process']:>7.3f}  {'yes' if r['same_answer'] else 'NO'}")
    q = report["ratios"]
    lines.append(f"{'total':<28} {q['in_process_total_seconds']:>10.2f} {q['server']['total_seconds']:>10.2f} "
                 f"{q['server']['total_ratio']:>7.3f} {q['server_stream']['total_seconds']:>10.2f} "
                 f"{q['server_stream']['total_ratio']:>7.3f}")
    lines.append(f"median per-task ratio: server {q['server']['median_task_ratio']:.3f}, stream "
                 f"{q['server_stream']['median_task_ratio']:.3f} (bar <= 1.05); same answers "
                 f"{report['same_answers']}/{len(report['tasks'])}")
    lines.append(f"process CPU seconds ÷ in process (median per task / total): server "
                 f"{q['server']['cpu_median_task_ratio']:.3f} / {q['server']['cpu_total_ratio']:.3f}, stream "
                 f"{q['server_stream']['cpu_median_task_ratio']:.3f} / {q['server_stream']['cpu_total_ratio']:.3f}")
    return "\n".join(lines)
