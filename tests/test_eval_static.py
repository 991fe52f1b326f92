"""`eval static` runner with the scripted fake engine: byte-exact prompts, prediction strings, resume."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from umi_edge.engine.fake import fake_roles
from umi_edge.errors import UmiError
from umi_edge.loop import Limits
from umi_edge.eval.samples import write_json_atomic
from umi_edge.eval.static import load_samples, run_static, score_file
from shared_data import TRAIN, needs_train

TOOLS = [{"Name": "t_for_x", "function": "f", "input": {"a": "string, A"}}]


def _train(name):
    return json.loads((TRAIN / f"train_{name}.json").read_text())


@needs_train
def test_gold_outputs_through_the_runner_reproduce_training_prompts_and_score_1():
    """Planner/caller/summarizer answer with the training target of the prompt they get: the prompts the
    runner renders must be the training `input`s byte for byte, and the predictions must score as the oracle.
    Exception: 4 planner targets are a bare " Next: caller."; protocol.md §4.6 strips the leading space (as HF decoding
    would), so their caller prompt carries the stripped plan."""
    planner, caller, summarizer = _train("planner"), _train("caller"), _train("summarizer")
    by_input = {r["input"]: r["target"] for r in planner + summarizer}
    # caller prompts keyed by everything before the current plan, which the strip may change
    by_head = {r["input"][: r["input"].rindex("assistant: ")]: r for r in caller}

    def gold_caller(prompt):
        return by_head[prompt[: prompt.rindex("assistant: ")]]["target"]

    roles = fake_roles(planner=[by_input.get] * 79, caller=[gold_caller] * 59, summarizer=[by_input.get] * 14)
    # the fake tokenizes per character: lift the 512-token cap so no target is cut
    run = run_static(TRAIN, roles, limits=SimpleNamespace(max_tokens=10**5))
    assert [len(roles[r].prompts) for r in ("planner", "caller", "summarizer")] == [79, 59, 14]
    assert all(p in by_input for p in roles["planner"].prompts + roles["summarizer"].prompts)
    stripped = 0
    for prompt in roles["caller"].prompts:
        rec = by_head[prompt[: prompt.rindex("assistant: ")]]
        plan = rec["history"][-1]["value"]
        if plan != plan.strip():
            stripped += 1
            tail = "assistant: {0}</s>\nThe thought of this step is:\n{0}\nBase on"
            assert rec["input"].count(tail.format(plan)) == 1
            assert prompt == rec["input"].replace(tail.format(plan), tail.format(plan.strip()))
        else:
            assert prompt == rec["input"]
    assert stripped == 4
    m = run.metrics
    assert m["n_samples"] == 79 and run.predicted == 79
    assert m["plan_acc"] == m["act_em"] == m["arg_f1"] == m["easy_arg_f1"] == m["hard_arg_f1"] == 1.0
    assert m["hallu_rate"] == 0.0 and m["rouge_l"] == pytest.approx(1.0, abs=1e-7)
    assert m["notes"]["plan_label"] == "assistant"
    assert set(run.tokens) == {"planner", "caller", "summarizer"}


def _data(tmp_path):
    conv = [
        {"from": "user", "value": "q"},
        {"from": "assistant", "value": "call Next: caller."},
        {"from": "caller", "value": 'Action: t_for_x\nAction Input: {"a": "1"}'},
        {"from": "observation", "value": "ok"},
        {"from": "assistant", "value": "done Next: conclusion."},
        {"from": "conclusion", "value": "The result is ok."},
        {"from": "assistant", "value": "hmm Next: give up."},
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"tools": TOOLS, "instruction": "q", "conversations": conv}]))
    return path


def test_prediction_strings_routes_and_plan_label(tmp_path):
    data = _data(tmp_path)
    roles = fake_roles(
        planner=[" thinking Next: caller. trailing", "no marker at all", ": answer now Next: conclusion.x"],
        caller=['Action: t_for_x\nAction Input: {"a": "1"}', ""],
        summarizer=["  The result is ok.  "],
    )
    out = tmp_path / "preds.json"
    run = run_static(data, roles, out=out, plan_label="planner", limits=Limits(caller_tokens=300))
    assert roles["planner"].max_tokens == [512] * 3 and roles["caller"].max_tokens == [300] * 2
    preds = json.loads(out.read_text())
    assert [p["id"] for p in preds] == ["0:1", "0:4", "0:6"]
    assert preds[0]["predictions"] == 'asssitant: thinking Next: caller.</s>caller: Action: t_for_x\nAction Input: {"a": "1"}'
    # no marker: the real-time default route; an empty caller output becomes 'none' (protocol.md §4.6)
    assert preds[1]["predictions"] == "asssitant: no marker at all Next: caller.</s>caller: none"
    assert preds[2]["predictions"] == "asssitant: answer now Next: conclusion.</s>conclusion: The result is ok."
    assert all({"tools", "reference", "predictions"} <= set(p) for p in preds)
    # the current plan sits in the caller/summarizer history under the chosen label
    assert "planner: thinking Next: caller.</s>\nThe thought of this step is:" in roles["caller"].prompts[0]
    assert roles["summarizer"].prompts[0].endswith("planner: answer now Next: conclusion.</s> conclusion: ")
    m = run.metrics
    assert m["plan_acc"] == pytest.approx(1 / 3)     # call ok, call≠finish, finish≠give up
    assert m["act_em"] == 1.0 and m["hard_arg_f1"] == 1.0
    assert m["notes"]["plan_label"] == "planner"
    # score-only on the file gives the same numbers
    assert score_file(data, out)["plan_acc"] == m["plan_acc"]


def test_resume_predicts_only_missing_samples(tmp_path):
    data = _data(tmp_path)
    out = tmp_path / "preds.json"
    first = run_static(data, fake_roles(planner=["a Next: give up."]), out=out, limit=1)
    assert first.predicted == 1 and len(json.loads(out.read_text())) == 1
    roles = fake_roles(planner=["b Next: give up.", "c Next: give up."])
    second = run_static(data, roles, out=out)
    assert (second.predicted, second.resumed) == (2, 1)
    assert len(roles["planner"].prompts) == 2
    preds = json.loads(out.read_text())
    assert [p["predictions"] for p in preds] == ["a Next: give up.", "b Next: give up.", "c Next: give up."]
    third = run_static(data, fake_roles(), out=out)            # nothing left to predict
    assert (third.predicted, third.resumed) == (0, 3)
    assert third.metrics == second.metrics


def test_interrupted_run_keeps_what_it_predicted(tmp_path):
    data = _data(tmp_path)
    out = tmp_path / "preds.json"
    roles = fake_roles(planner=["a Next: give up."])      # the second sample finds no scripted output
    with pytest.raises(RuntimeError, match="no scripted output"):
        run_static(data, roles, out=out)
    assert [p["id"] for p in json.loads(out.read_text())] == ["0:1"]


def test_resume_refuses_foreign_files(tmp_path):
    data = _data(tmp_path)
    out = tmp_path / "preds.json"
    write_json_atomic(out, [{"tools": TOOLS, "reference": "x", "predictions": "y"}])
    with pytest.raises(UmiError, match="no 'id'"):
        run_static(data, fake_roles(), out=out)
    write_json_atomic(out, [{"id": "0:1", "tools": TOOLS, "reference": "other", "predictions": "y"}])
    with pytest.raises(UmiError, match="different test data"):
        run_static(data, fake_roles(), out=out)


def test_score_file_checks_data_and_shapes(tmp_path):
    data = _data(tmp_path)
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps([{"tools": TOOLS, "reference": "not a sample", "predictions": "x"}]))
    with pytest.raises(UmiError, match="not a sample"):
        score_file(data, preds)
    assert score_file(None, preds)["n_samples"] == 1
    preds.write_text(json.dumps([{"tools": TOOLS, "reference": 3, "predictions": "x"}]))
    with pytest.raises(UmiError, match="record 0 field 'reference'"):
        score_file(None, preds)
    preds.write_text("{not json")
    with pytest.raises(UmiError, match="not valid JSON"):
        score_file(None, preds)
    with pytest.raises(UmiError, match="not found"):
        score_file(None, tmp_path / "missing.json")


def test_limit_and_empty_data(tmp_path):
    data = _data(tmp_path)
    samples, _ = load_samples(data, limit=2)
    assert len(samples) == 2
    with pytest.raises(UmiError, match="--limit"):
        load_samples(data, limit=0)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([{"tools": TOOLS, "conversations": [{"from": "user", "value": "q"}]}]))
    with pytest.raises(UmiError, match="no sample"):
        load_samples(empty)


def test_resume_refuses_other_settings(tmp_path):
    data = _data(tmp_path)
    out = tmp_path / "preds.json"
    run_static(data, fake_roles(planner=["a Next: give up."]), out=out, limit=1)
    with pytest.raises(UmiError, match="plan_label='assistant'.*'planner'"):
        run_static(data, fake_roles(), out=out, plan_label="planner")
    with pytest.raises(UmiError, match="constrained=False.*True"):
        run_static(data, fake_roles(), out=out, constrained=True)


def test_constrained_caller_gets_the_tools_grammar(tmp_path):
    data = _data(tmp_path)
    roles = fake_roles(planner=["x Next: caller.", "y Next: caller.", "z Next: give up."],
                       caller=['Action: t_for_x\nAction Input: {"a": "1"}'] * 2)
    run = run_static(data, roles, constrained=True)
    g1, g2 = roles["caller"].grammars
    assert g1 is not None and g1 == g2 and "t_for_x" in g1 and "root ::=" in g1
    assert roles["planner"].grammars == [None] * 3
    assert run.metrics["notes"]["constrained_caller"] is True
    roles = fake_roles(planner=["x Next: caller."], caller=["Action: t_for_x\nAction Input: {}"])
    run_static(data, roles, limit=1)
    assert roles["caller"].grammars == [None]          # the reference's unconstrained caller by default
