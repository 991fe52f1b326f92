"""Per-kind breakdown of an `umi-edge eval tasks --json` report: one call / chains / give-ups, per set.

A task is a give-up when it expects one, a chain when its check names two or more calls, else one call.

    umi-edge eval tasks unseen --set glpft --compare default --json > report.json
    python recipes/glpft/breakdown.py report.json unseen [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from umi_edge.eval.tasks import load_tasks

KINDS = ("one_call", "chain", "give_up")


def kind(task) -> str:
    if task.expect == "give_up":
        return "give_up"
    return "chain" if len(task.check.get("calls", [])) >= 2 else "one_call"


def breakdown(report: dict, suite: str) -> dict:
    path = Path(suite)
    if not path.exists():
        path = Path(str(resources.files("umi_edge").joinpath(f"data/tasks/{suite}.jsonl")))
    kinds = {t.id: kind(t) for t in load_tasks(path)}
    sets = report.get("sets") or {"run": report}
    out = {}
    for name, rep in sets.items():
        rows = {k: [r for r in rep["tasks"] if kinds.get(r["id"]) == k] for k in KINDS}
        out[name] = {k: {"tasks": len(v), "success": sum(r["success"] for r in v),
                         "fabricated": sum(bool(r.get("fabricated")) for r in v if r["status"] == "answered")}
                     for k, v in rows.items()}
        out[name]["all"] = {"tasks": rep["n_tasks"], "success": sum(r["success"] for r in rep["tasks"]),
                            "hallucinated_calls": rep["hallucinated_calls"],
                            "fabrication_rate": rep.get("fabrication_rate")}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="an `eval tasks --json` report (one set or --compare)")
    ap.add_argument("suite", help="the suite it ran: a bundled name (unseen, heldout, demo) or a JSONL file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = breakdown(json.loads(Path(args.report).read_text(encoding="utf-8")), args.suite)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for name, b in out.items():
        cells = [f"{k.replace('_', ' ')} {b[k]['success']}/{b[k]['tasks']}" for k in KINDS]
        a = b["all"]
        rate = "n/a" if a["fabrication_rate"] is None else f"{100 * a['fabrication_rate']:.1f}%"
        print(f"{name}: {a['success']}/{a['tasks']} ({100 * a['success'] / a['tasks']:.1f}%); " + ", ".join(cells)
              + f"; hallucinated calls {a['hallucinated_calls']}, fabrication {rate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
