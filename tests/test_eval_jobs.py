"""`umi_edge.eval.jobs`: task suites over sets as a library call (what `eval tasks --jobs` runs)."""
from __future__ import annotations

import contextlib

from umi_edge.engine.fake import fake_roles
from umi_edge.eval.jobs import run_suite, suite_path

SEEN: list[tuple[str, int, int, str]] = []


def record(tag, done, total, r):
    SEEN.append((tag, done, total, r.id))


def test_bundled_suites_resolve_by_name(tmp_path):
    assert suite_path("demo").name == "demo.jsonl" and suite_path("demo").is_file()
    assert suite_path(tmp_path / "mine.jsonl") == tmp_path / "mine.jsonl"


def test_run_suite_reports_each_set_in_task_order(tmp_path, monkeypatch):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    models = tmp_path / "models.toml"
    models.write_text('[models.m]\npath = "m.gguf"\n'
                      '[sets.a]\nmodel = "m"\nmax_tokens = 32\nn_ctx = 256\nconstrained = false\n'
                      '[sets.b]\nmodel = "m"\nmax_tokens = 32\nn_ctx = 256\nconstrained = false\n')
    tasks = tmp_path / "t.jsonl"
    tasks.write_text("".join(f'{{"id": "t{i}", "query": "q{i}", "expect": "give_up"}}\n' for i in range(3)))

    @contextlib.contextmanager
    def fake_open(spec, paths, *, verbose):
        with contextlib.ExitStack() as stack:
            yield fake_roles(planner=["no. Next: give up."] * 3), {}, stack

    monkeypatch.setattr("umi_edge.team._open_engines", fake_open)
    SEEN.clear()
    reports = run_suite(tasks, ["a", "b", "a"], models=str(models), progress=record)
    assert list(reports) == ["a", "b"]
    for report in reports.values():
        assert report["n_tasks"] == 3 and report["success_rate"] == 1.0
        assert [t["id"] for t in report["tasks"]] == ["t0", "t1", "t2"]
    assert SEEN[:3] == [("a ", 1, 3, "t0"), ("a ", 2, 3, "t1"), ("a ", 3, 3, "t2")] and len(SEEN) == 6
