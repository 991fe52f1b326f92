"""`eval tasks`: task format, checks, the bundled suites, and the runner driven by the scripted fake engine."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from umi_edge.engine.fake import fake_roles
from umi_edge.errors import UmiError
from umi_edge.eval import demo_tasks
from umi_edge.eval.tasks import (TaskResult, check_answer, load_tasks, merge_shards, numbers_in, parse_task,
                                 resolve_tools, run_tasks, summarize)
from umi_edge.team import Team

SUITES = resources.files("umi_edge").joinpath("data/tasks")


def _suite(name):
    return load_tasks(str(SUITES.joinpath(f"{name}.jsonl")))


def _task(**kw):
    obj = {"id": "t", "query": "q", "check": {"answer_contains": "x"}}
    obj.update(kw)
    return parse_task(obj, "f.jsonl:1")


# --- the bundled suites ---------------------------------------------------------------------------------

def test_suites_are_valid_sized_and_disjoint():
    demo, heldout = _suite("demo"), _suite("heldout")
    assert len(demo) >= 50 and len(heldout) >= 25
    for suite in (demo, heldout):
        assert 3 <= sum(t.expect == "give_up" for t in suite) <= 8
        for t in suite:
            resolve_tools(t)            # every task's tools exist
    assert not {t.query for t in demo} & {t.query for t in heldout}
    assert not {t.id for t in demo} & {t.id for t in heldout}
    # 1-4 tool calls per answerable task, several multi-call tasks
    recipes = [r for r in demo_tasks.demo_recipes() if not isinstance(r, dict)]
    assert all(1 <= len(r.calls) <= 4 for r in recipes)
    assert sum(len(r.calls) >= 2 for r in recipes) >= 10


def test_committed_suites_match_the_generator_run_on_the_real_tools():
    from umi_edge.tools.demo import TOOLS

    for name, recipes in (("demo", demo_tasks.demo_recipes()), ("heldout", demo_tasks.heldout_recipes())):
        lines = SUITES.joinpath(f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == demo_tasks.build(recipes, TOOLS), (
            f"{name}.jsonl is stale: run python -m umi_edge.eval.demo_tasks")


# --- checks ---------------------------------------------------------------------------------------------

def test_numbers_in_reads_separators_scales_and_signs():
    assert numbers_in("68.2 million, 68,200,000; -40; 1.5e3 and 17%") == [68.2e6, 68.2e6, -40, 1500, 17]


def test_answer_checks():
    t = _task(check={"answer_contains": ["paris", "Euro"]})
    assert check_answer(t, "Paris uses the euro.", []) is None
    assert "lacks" in check_answer(t, "Paris.", [])
    t = _task(check={"answer_number": 372, "tol": 0.5})
    assert check_answer(t, "It is 372.4", []) is None
    assert check_answer(t, "It is 373", []) is not None
    assert check_answer(t, None, []) is not None
    t = _task(check={"answer_number": [100, 212], "rel_tol": 0.01})
    assert check_answer(t, "100 C is 211 F", []) is None          # 212 ± 2.12
    assert check_answer(t, "It is 212 F", []) is not None
    t = _task(check={"calls": [{"tool": "a", "args": {"x": 1, "s": "v"}}, {"tool": "b"}]})
    ok = [("b", "{}"), ("a", '{"x": 1.0, "s": "v", "extra": 2}'), ("c", "{}"), ("b", "not json")]
    assert check_answer(t, "", ok) is None
    assert "call 1 (a)" in check_answer(t, "", [("a", '{"x": 2, "s": "v"}'), ("b", "{}")])
    assert "call 2 (b)" in check_answer(t, "", [("b", "{}"), ("a", '{"x": 1, "s": "v"}')])   # order matters


@pytest.mark.parametrize("obj, msg", [
    ({"query": "q"}, "field 'id'"),
    ({"id": "a", "query": " "}, "field 'query'"),
    ({"id": "a", "query": "q", "expect": "maybe"}, "field 'expect'"),
    ({"id": "a", "query": "q"}, "needs a check"),
    ({"id": "a", "query": "q", "check": {"answer_number": "5"}}, "check.answer_number must be a number"),
    ({"id": "a", "query": "q", "check": {"answer_contains": "x", "tol": 1}}, "only go with"),
    ({"id": "a", "query": "q", "check": {"calls": [{"name": "x"}]}}, "check.calls"),
    ({"id": "a", "query": "q", "check": {"answer": "x"}}, "unknown check key"),
    ({"id": "a", "query": "q", "expect": "give_up", "colour": 1}, "unknown field"),
    ({"id": "a", "query": "q", "expect": "give_up", "tools": []}, "field 'tools'"),
    ({"id": "a", "query": "q", "expect": "give_up", "max_steps": 0}, "max_steps"),
])
def test_bad_tasks_name_the_field(obj, msg):
    with pytest.raises(UmiError, match=msg) as e:
        parse_task(obj, "f.jsonl:3")
    assert str(e.value).startswith("f.jsonl:3: ")


def test_bad_files(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('# comment\n\n{"id": "a", "query": "q", "expect": "give_up"}\n{"id": "a", "query": "r", "expect": "give_up"}\n')
    with pytest.raises(UmiError, match=r"t.jsonl:4: task id 'a' already used at .*t.jsonl:3"):
        load_tasks(p)
    p.write_text('{"id": "a", "query": "q", "expect": "give_up"}\n{oops\n')
    with pytest.raises(UmiError, match=r"t.jsonl:2: not valid JSON"):
        load_tasks(p)
    p.write_text("# nothing\n")
    with pytest.raises(UmiError, match="no tasks"):
        load_tasks(p)
    with pytest.raises(UmiError, match="not found"):
        load_tasks(tmp_path / "missing.jsonl")
    t = _task(tools=["calculator", "teleport"])
    with pytest.raises(UmiError, match="no demo tool named teleport; valid: calculator"):
        resolve_tools(t)
    with pytest.raises(UmiError, match="task t: --tools no_such_module_xyz:TOOLS: cannot import"):
        resolve_tools(_task(tools="no_such_module_xyz:TOOLS"))


# --- the runner -----------------------------------------------------------------------------------------

def test_runner_success_failure_give_up_and_hallucination():
    """Scripted outputs: one task succeeds, one answers wrongly, one gives up as expected, one calls a tool
    that does not exist (hallucination) before giving up where an answer was expected."""
    tasks = {t.id: t for t in _suite("demo")}
    chosen = [tasks["calc-01"], tasks["country-01"], tasks["impossible-01"], tasks["conv-01"]]
    roles = fake_roles(
        planner=["Compute it. Next: caller.", "I have it. Next: conclusion.",
                 "Look it up. Next: caller.", "Done. Next: conclusion.",
                 "No tool books restaurants. Next: give up.",
                 "Convert. Next: caller.", "That failed. Next: give up."],
        caller=['Action: calculator\nAction Input: {"expression": "15 / 100 * 2480"}',
                'Action: country_info\nAction Input: {"country": "Australia"}',
                'Action: teleport\nAction Input: {}'],
        summarizer=["15% of 2,480 is 372.", "The capital of Australia is Sydney."],
    )
    # unconstrained, so the caller can name a tool that does not exist
    with Team(roles, constrained=False) as team:
        report = run_tasks(chosen, team)
    rows = {r["id"]: r for r in report["tasks"]}
    assert rows["calc-01"]["success"] and rows["calc-01"]["status"] == "answered"
    assert rows["calc-01"]["calls"] == [["calculator", '{"expression": "15 / 100 * 2480"}']]
    assert not rows["country-01"]["success"] and "Canberra" in rows["country-01"]["failure"]
    assert rows["impossible-01"]["success"] and rows["impossible-01"]["status"] == "gave_up"
    assert not rows["conv-01"]["success"] and rows["conv-01"]["hallucinated_calls"] == 1
    assert report["n_tasks"] == 4
    assert report["success_rate"] == 0.5
    assert report["give_up_rate"] == 0.5
    assert report["hallucinated_calls"] == 1
    assert report["mean_steps"] == (2 + 2 + 1 + 2) / 4
    assert report["mean_seconds"] > 0
    assert report["status_counts"] == {"answered": 2, "gave_up": 2}
    assert set(report["tokens_by_role"]) == {"planner", "caller", "summarizer"}
    assert report["tokens_by_role"]["planner"]["generated"] > 0
    assert {"n_tasks", "success_rate", "give_up_rate", "hallucinated_calls", "mean_steps", "mean_seconds"} <= set(report)
    json.dumps(report)   # the --json output is plain JSON


def test_shards_merge_into_the_report_of_one_run():
    """`eval tasks --jobs N` runs tasks k, k+N, ... in process k; the merged report equals one run's."""
    results = [TaskResult(f"t{i}", "answer", "answered" if i % 3 else "max_steps", i % 3 > 0, i % 4 + 1,
                          0.5 * i, i % 2, f"a{i}", [["calculator", "{}"]] * (i % 2),
                          None if i % 3 else "run ended max_steps",
                          {"planner": {"prompt": 10 * i, "reused": i, "evaluated": 9 * i, "generated": 3}})
               for i in range(7)]
    whole = summarize(results)
    for n in (1, 2, 3, 7):
        assert merge_shards([summarize(results[k::n]) for k in range(n)]) == whole


def test_runner_checks_every_tool_before_running(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"id": "a", "query": "q", "expect": "give_up"}\n'
                 '{"id": "b", "query": "q", "expect": "give_up", "tools": ["nope"]}\n')
    roles = fake_roles()          # no scripted output: running anything would fail
    with Team(roles, constrained=False) as team, pytest.raises(UmiError, match="no demo tool named nope"):
        run_tasks(load_tasks(p), team)
    assert roles["planner"].prompts == []
