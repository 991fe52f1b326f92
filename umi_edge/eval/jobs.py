"""Task suites over one or more sets, in worker processes: `umi-edge eval tasks --jobs N` as a library call.

Each set's tasks are split into interleaved shards (shard k runs tasks k, k + n, …); each (set, shard) is
one unit of work, so a slow set does not hold one process for the whole run. Reports come back merged per
set, in task order, identical to a run in one process.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import tasks as etasks

SUITES = ("demo", "heldout", "unseen")

# (tag, done, total, result): one finished task; must be a module-level function when jobs > 1
Progress = Callable[[str, int, int, "etasks.TaskResult"], None]


def suite_path(name: str | os.PathLike) -> Path:
    """A task file, or the bundled suite of that name when no such file exists."""
    path = Path(name)
    if not path.exists() and str(name) in SUITES:
        from importlib import resources

        path = Path(str(resources.files("umi_edge").joinpath(f"data/tasks/{name}.jsonl")))
    return path


def run_shard(task_path: str, limit: int | None, set_name: str, models: str | None, overrides: Mapping[str, Any],
              verbose: bool, tag: str, shard: int = 0, shards: int = 1, progress: Progress | None = None) -> dict:
    """Load one set and run every `shards`-th task from `shard` on it (a worker process runs this)."""
    from ..team import Team

    task_list = etasks.load_tasks(task_path, limit=limit)[shard::shards]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    report = None if progress is None else (lambda done, total, r: progress(tag, done, total, r))
    with Team.load(set_name, models=models, progress=True, verbose=verbose, **overrides) as team:
        return etasks.run_tasks(task_list, team, progress=report)


def run_suite(task_path: str | os.PathLike, set_names: Sequence[str], *, models: str | None = None,
              limit: int | None = None, overrides: Mapping[str, Any] | None = None, jobs: int = 1,
              verbose: bool = False, progress: Progress | None = None) -> dict[str, dict]:
    """{set name: its report} for the suite run on each set, with up to `jobs` processes at once."""
    path = suite_path(task_path)
    n_tasks = len(etasks.load_tasks(path, limit=limit))   # a bad task file fails here, before any model loads
    shards = max(1, min(jobs, n_tasks))
    names = list(dict.fromkeys(set_names))
    units = [(name, k) for name in names for k in range(shards)]
    args = [(str(path), limit, name, models, dict(overrides or {}), verbose,
             (f"{name} " if len(names) > 1 else "") + (f"{k + 1}/{shards} " if shards > 1 else ""), k, shards,
             progress)
            for name, k in units]
    if jobs > 1:
        from ..proc import exit_with_parent

        with ProcessPoolExecutor(min(jobs, len(units)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
            parts = list(pool.map(run_shard, *zip(*args)))
    else:
        parts = [run_shard(*a) for a in args]
    return {name: etasks.merge_shards([p for (n, _), p in zip(units, parts) if n == name]) for name in names}
