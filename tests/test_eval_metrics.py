"""Static metrics (protocol.md §6.5-6.6) on hand-made records: every edge case of the reference evaluator."""
from __future__ import annotations

import pytest

from umi_edge.errors import UmiError
from umi_edge.eval.metrics import arg_score, parse_step, score

TOOLS = [{"Name": "get_a_for_x", "function": "", "input": {}}, {"Name": "get_b_for_x", "function": "", "input": {}}]


def call_ref(action, args):
    return f"assistant: plan Next: caller.</s>caller: Action: {action}\nAction Input: {args}</s>"


def call_pred(action, args):
    return f"asssitant: plan Next: caller.</s>caller: Action: {action}\nAction Input: {args}"


def fin_ref(answer):
    return f"assistant: done Next: conclusion.</s>conclusion: {answer}</s>"


def fin_pred(answer):
    return f"asssitant: done Next: conclusion.</s>conclusion: {answer}"


def rec(reference, prediction, tools=TOOLS):
    return {"tools": tools, "reference": reference, "predictions": prediction}


# --- the scoring parser -------------------------------------------------------------------------------

def test_parse_markers_without_period_and_priority():
    assert parse_step("blah Next: give up").plan == "give up"
    # give up wins over conclusion and caller, wherever it occurs
    assert parse_step("x Next: conclusion.</s>conclusion: a Next: give up").plan == "give up"
    assert parse_step("x Next: conclusion</s>").plan == "finish"


def test_parse_finish_answer_after_last_conclusion():
    s = parse_step("asssitant: p Next: conclusion.</s>conclusion: first conclusion: second</s>")
    assert (s.plan, s.answer) == ("finish", "second")
    assert parse_step("Next: conclusion. no label here</s>").answer == "Next: conclusion. no label here"


def test_parse_call_last_action_and_input():
    s = parse_step("p</s>caller: Action: a\nAction Input: {}\nAction: b\nAction Input: {\"k\": 1}  ")
    assert (s.plan, s.action, s.args) == ("call", "b", '{"k": 1}')
    s = parse_step("p</s>caller: nothing here")
    assert (s.action, s.args) == ("none", "{}")
    # only the segment between the first and second </s> is read
    assert parse_step("p</s>caller: Action: a</s>Action: b").action == "a"


def test_parse_flaws_where_reference_crashes():
    s = parse_step("no eos Action: a")
    assert (s.plan, s.action, s.flaw) == ("call", "none", "call_without_eos")
    s = parse_step("p Next: conclusion.</s>conclusion:\nanswer")
    assert (s.answer, s.flaw) == ("\nanswer", "conclusion_without_space")


# --- metrics ------------------------------------------------------------------------------------------

def test_plan_acc_and_act_em():
    r = score([
        rec(call_ref("get_a_for_x", "{}"), call_pred("get_a_for_x", "{}")),
        rec(call_ref("get_a_for_x", "{}"), call_pred("get_b_for_x", "{}")),
        rec(call_ref("get_a_for_x", "{}"), fin_pred("oops")),          # not a call: action 'none'
        rec(fin_ref("answer"), "plan Next: give up."),
    ])
    assert r["n_samples"] == 4
    assert r["plan_acc"] == 2 / 4
    assert r["act_em"] == 1 / 3
    assert r["notes"]["plans"] == {"call": 3, "finish": 1, "give_up": 0}


def test_hallucination_denominator_is_all_samples():
    r = score([
        rec(call_ref("get_a_for_x", "{}"), call_pred("made_up", "{}")),   # hallucinated
        rec(call_ref("get_a_for_x", "{}"), "p</s>caller: no action"),      # 'none' is not a hallucination
        rec(fin_ref("a"), call_pred("also_made_up", "{}")),               # counts even on a finish sample
        rec(fin_ref("a"), fin_pred("a")),
        rec("p Next: give up.", "p Next: give up."),
    ])
    assert r["hallu_rate"] == 2 / 5
    assert r["notes"]["hallucinated_samples"] == [0, 2]


def test_empty_action_name_is_a_hallucination():
    r = score([rec(call_ref("get_a_for_x", "{}"), call_pred("", "{}"))])
    assert r["hallu_rate"] == 1.0


def test_arg_f1_easy_hard_and_mismatch_counted_in_both():
    r = score([
        rec(call_ref("get_a_for_x", "{}"), call_pred("get_a_for_x", "{}")),                    # easy 1
        rec(call_ref("get_a_for_x", "{}"), call_pred("get_a_for_x", '{"k": 1}')),              # easy 0
        rec(call_ref("get_a_for_x", '{"k": 1}'), call_pred("get_a_for_x", '{"k": 1}')),        # hard 1
        rec(call_ref("get_a_for_x", '{"k": 1}'), call_pred("get_b_for_x", '{"k": 1}')),        # mismatch: 0 in all
    ])
    assert r["easy_arg_f1"] == pytest.approx((1 + 0 + 0) / 3)
    assert r["hard_arg_f1"] == pytest.approx((1 + 0) / 2)
    assert r["arg_f1"] == pytest.approx((1 + 0 + 1 + 0) / 4)
    assert r["notes"]["arg_f1_counts"] == {"easy": 3, "hard": 2, "all": 4, "skipped_non_json_reference": 0}


def test_arg_f1_half_credit_and_python_equality():
    # ref {a:1, b:"x", c:true}; pred {a:1, b:"y", c:1, d:0}: a full, b half, c full (True == 1), d extra
    kind, f = arg_score('{"a": 1, "b": "x", "c": true}', '{"a": 1, "b": "y", "c": 1, "d": 0}')
    hits = 2 + 0.5
    recall, precision = hits / 3, hits / 4
    assert kind == "hard" and f == pytest.approx(2 * recall * precision / (recall + precision))
    # "1" != 1 after JSON parsing: half credit only
    assert arg_score('{"a": 1}', '{"a": "1"}') == ("hard", pytest.approx(2 * 0.5 * 0.5 / 1.0))


def test_arg_f1_zero_cases():
    assert arg_score('{"a": 1}', "not json") == ("hard", 0)
    assert arg_score("{}", "not json") == ("easy", 0)
    assert arg_score('{"a": 1}', "[1, 2]") == ("hard", 0)        # non-dict prediction
    assert arg_score('{"a": 1}', "{}") == ("hard", 0)            # P + R = 0
    assert arg_score('{"a": 1}', '{"b": 1}') == ("hard", 0)
    assert arg_score("[1]", "[1]") == ("hard", 0)                # non-dict reference scores 0 in hard
    assert arg_score("not json", "{}") is None                    # skipped


def test_non_json_reference_skipped_only_when_actions_match():
    r = score([
        rec(call_ref("get_a_for_x", "{oops"), call_pred("get_a_for_x", "{}")),    # skipped
        rec(call_ref("get_a_for_x", "{oops"), call_pred("get_b_for_x", "{}")),    # mismatch first: 0
        rec(call_ref("get_a_for_x", '{"k": 2}'), call_pred("get_a_for_x", '{"k": 2}')),
    ])
    assert r["notes"]["arg_f1_counts"]["skipped_non_json_reference"] == 1
    assert r["arg_f1"] == pytest.approx(0.5)
    assert r["hard_arg_f1"] == pytest.approx(0.5)
    assert r["easy_arg_f1"] == pytest.approx(0.0, abs=1e-29)   # the mismatch zero lands in easy too


def test_epsilon_added_after_division():
    r = score([rec(call_ref("get_a_for_x", "{}"), call_pred("get_b_for_x", "{}"))])
    assert r["arg_f1"] == 1e-30 and r["easy_arg_f1"] == 1e-30 and r["hard_arg_f1"] == 1e-30


def test_empty_arg_lists_are_null_and_flagged():
    r = score([rec(fin_ref("a b"), fin_pred("a b"))])
    assert r["arg_f1"] is None and r["easy_arg_f1"] is None and r["hard_arg_f1"] is None
    assert r["act_em"] == 0     # the reference's guard for no call references
    notes = " ".join(r["notes"]["divergences"])
    assert "ZeroDivisionError" in notes and "act_em" in notes
    r = score([rec(call_ref("get_a_for_x", "{}"), call_pred("get_a_for_x", "{}"))])
    assert r["easy_arg_f1"] == 1.0 and r["hard_arg_f1"] is None and r["arg_f1"] == 1.0


def test_rouge_over_finish_references_only_with_none_for_non_finish():
    r = score([
        rec(fin_ref("the answer is 42"), fin_pred("the answer is 42")),
        rec(fin_ref("none at all"), call_pred("get_a_for_x", "{}")),   # hypothesis 'none': shares "none"
        rec(call_ref("get_a_for_x", "{}"), fin_pred("ignored")),
    ])
    # pair 2: m = 3 distinct ref tokens, n = 1, hits = 1 -> R 1/3, P 1
    f2 = 2 * (1 * (1 / 3)) / (1 + 1 / 3 + 1e-8)
    assert r["rouge_l"] == pytest.approx((1.0 + f2) / 2, abs=1e-7)


def test_rouge_no_finish_references_is_zero_and_dots_are_flagged():
    assert score([rec("p Next: give up.", "p Next: give up.")])["rouge_l"] == 0
    r = score([rec(fin_ref("..."), fin_pred("a"))])
    assert r["rouge_l"] == 0.0
    assert any("rouge_l" in d for d in r["notes"]["divergences"])


def test_empty_input_raises():
    with pytest.raises(UmiError):
        score([])


def test_json_keys_exact():
    r = score([rec(fin_ref("a"), fin_pred("a"))])
    assert set(r) == {"n_samples", "plan_acc", "act_em", "hallu_rate", "arg_f1", "easy_arg_f1",
                      "hard_arg_f1", "rouge_l", "notes"}


# --- robustness: the scorer never crashes, whatever the model wrote ---------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_piece = st.sampled_from(["Next: give up", "Next: conclusion", "Next: caller.", "</s>", "conclusion: ",
                          "conclusion:", "Action: ", "Action Input: ", "{", "}", '"a"', ": ", "1", "get_a_for_x",
                          "\n", ".", " ", "[", "]", "NaN", "\x00", "é"])
_text = st.one_of(st.text(max_size=40), st.lists(_piece, max_size=16).map("".join))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_text, _text), min_size=1, max_size=6))
def test_score_never_raises_and_stays_in_range(pairs):
    r = score([rec(ref, pred) for ref, pred in pairs])
    assert r["n_samples"] == len(pairs)
    for k in ("plan_acc", "act_em", "hallu_rate", "rouge_l"):
        assert 0.0 <= r[k] <= 1.0
    for k in ("arg_f1", "easy_arg_f1", "hard_arg_f1"):
        assert r[k] is None or 0.0 <= r[k] <= 1.0 + 1e-12
