"""Static sample construction (§6.3), the train-example helper and the oracle bar."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from umi_edge.errors import UmiError
from umi_edge.eval.metrics import score
from umi_edge.eval.samples import (
    build_samples,
    check_records,
    oracle_predictions,
    records_from_train_examples,
)

TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alpha-umi" / "train-example"
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
