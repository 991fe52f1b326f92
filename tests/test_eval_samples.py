"""Static sample construction (protocol.md §6.3), the train-example helper and the oracle bar."""
from __future__ import annotations

import json

import pytest

from umi_edge.errors import UmiError
from umi_edge.eval.metrics import score
from umi_edge.eval.samples import (
    build_samples,
    check_records,
    oracle_predictions,
    records_from_train_examples,
)
from shared_data import TRAIN, needs_train

TOOLS = [{"Name": "t_for_x", "function": "f", "input": {}}]


def test_sample_construction_by_hand():
    conv = [
        {"from": "user", "value": "q"},
        {"from": "assistant", "value": "thinking, no marker"},                 # history only
        {"from": "assistant", "value": "call it Next: caller."},
        {"from": "caller", "value": "Action: t_for_x\nAction Input: {}"},
        {"from": "observation", "value": "{'r': 1}"},
        {"from": "system", "value": "ignored"},
        {"from": "assistant", "value": "stuck Next: give up."},
        {"from": "user", "value": "try again"},
        {"from": "assistant", "value": "done Next: conclusion."},
        {"from": "conclusion", "value": "It is 1."},
        {"from": "assistant", "value": "trailing Next: caller."},              # no next turn
    ]
    ss = build_samples(check_records([{"tools": TOOLS, "instruction": "q", "conversations": conv}]))
    assert [s.id for s in ss.samples] == ["0:2", "0:6", "0:8", "0:10"]
    call, give_up, fin, trailing = ss.samples
    assert call.reference == "assistant: call it Next: caller.</s>caller: Action: t_for_x\nAction Input: {}</s>"
    assert call.history == (("user", "q"), ("assistant", "thinking, no marker"))
    assert give_up.reference == "stuck Next: give up."
    assert give_up.history[-1] == ("observation", "{'r': 1}")     # 'system' is not in the history
    assert fin.reference == "assistant: done Next: conclusion.</s>conclusion: It is 1.</s>"
    assert fin.history[-2:] == (("assistant", "stuck Next: give up."), ("user", "try again"))
    assert trailing.reference == "assistant: trailing Next: caller.</s>"
    assert ss.ignored_turns == 1 and ss.missing_next_turn == 1


def test_bad_records_name_the_field():
    with pytest.raises(UmiError, match="record 0 field 'conversations'"):
        check_records([{"tools": TOOLS, "conversations": [{"from": "user"}]}])
    with pytest.raises(UmiError, match="record 1 field 'tools'"):
        check_records([{"tools": TOOLS, "conversations": []}, {"tools": [{}], "conversations": []}])
    with pytest.raises(UmiError, match="JSON list"):
        check_records({"tools": []})


@needs_train
def test_train_examples_round_trip_and_oracle_bar():
    records = records_from_train_examples(TRAIN)
    assert len(records) == 20
    samples = build_samples(records).samples
    planner = json.loads((TRAIN / "train_planner.json").read_text())
    assert len(samples) == len(planner) == 79
    # one sample per planner record, with the record's own history
    histories = {tuple((t["from"], t["value"]) for t in p["history"]) for p in planner}
    assert {s.history for s in samples} == histories
    r = score(oracle_predictions(samples))
    assert r["n_samples"] == 79
    assert r["plan_acc"] == r["act_em"] == 1.0
    assert r["arg_f1"] == r["easy_arg_f1"] == r["hard_arg_f1"] == 1.0
    assert r["hallu_rate"] == 0.0
    assert r["rouge_l"] == pytest.approx(1.0, abs=1e-7)
    assert r["notes"]["plans"] == {"call": 59, "finish": 14, "give_up": 6}
    assert "divergences" not in r["notes"]


@needs_train
def test_train_examples_missing_continuation_is_an_error():
    planner = json.loads((TRAIN / "train_planner.json").read_text())
    caller = json.loads((TRAIN / "train_caller.json").read_text())
    with pytest.raises(UmiError, match="no conclusion record"):
        records_from_train_examples(planner, caller, [])


def test_eval_modules_import_no_heavy_dependency():
    import subprocess
    import sys

    code = ("import sys, umi_edge.eval.static, umi_edge.eval.tasks, umi_edge.eval.demo_tasks; "
            "print([m for m in ('llama_cpp', 'torch', 'transformers', 'gguf') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _damage(i, rec):
    """Deterministic wrong predictions of several kinds (give up, wrong tool, wrong args, short answer)."""
    p = rec["predictions"]
    m = i % 7
    if m == 1:
        return "I am stuck. Next: give up."
    if m == 2 and "</s>caller: " in p:
        return p.replace("Action: ", "Action: x", 1)
    if m == 3 and "</s>caller: " in p:
        return p.split("Action Input:")[0] + 'Action Input: {"page": "2"}'
    if m == 4 and "</s>conclusion: " in p:
        head, answer = p.split("</s>conclusion: ")
        return head + "</s>conclusion: " + " ".join(answer.split()[:8])
    if m == 5:
        return "asssitant: done Next: conclusion.</s>conclusion: I could not find it."
    return p


@needs_train
def test_golden_numbers_of_the_reference_evaluator():
    """Values printed by the paper's evaluate-multi_agent.py (with rouge==1.0.1) on these predictions."""
    preds = oracle_predictions(build_samples(records_from_train_examples(TRAIN)).samples)
    for i, rec in enumerate(preds):
        rec["predictions"] = _damage(i, rec)
    r = score(preds)
    assert r["rouge_l"] == pytest.approx(0.648627430729043, abs=1e-12)
    assert r["plan_acc"] == pytest.approx(0.7341772151898734, abs=1e-12)
    assert r["act_em"] == pytest.approx(0.559322033898305, abs=1e-12)
    assert r["easy_arg_f1"] == pytest.approx(0.2558139534883721, abs=1e-12)
    assert r["hard_arg_f1"] == pytest.approx(0.2857142857142857, abs=1e-12)
    assert r["arg_f1"] == pytest.approx(0.3898305084745763, abs=1e-12)
    assert r["hallu_rate"] == pytest.approx(0.10126582278481013, abs=1e-12)
