"""The static metrics of the α-UMi evaluator (`evaluate-multi_agent.py`, protocol.md §6.5-6.6), reproduced
to the bit on the same predictions: Plan ACC, Act. EM, Hallu., Arg F1 (easy/hard) and Rouge-L.

The scoring parser lives here, not in `umi_edge.protocol`: it is the *evaluator's* definition of a step
(markers matched without the period, last `conclusion: `), applied alike to reference and prediction,
and it must not follow later changes to the runtime parser.

Where the reference evaluator crashes we score and flag instead (each case is counted in `notes`):
- a call-shaped text with no `</s>` (reference: IndexError) parses as action 'none', arguments '{}';
- a finish text holding 'conclusion:' but no 'conclusion: ' (reference: ValueError) takes the answer
  after the last 'conclusion:';
- an empty easy/hard/overall Arg F1 list (reference: ZeroDivisionError) reports None;
- a Rouge-L text with no sentence (reference: ValueError from `rouge`) scores 0.0 for that pair.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .rouge import rouge_l

GIVE_UP, FINISH, CALL = "give up", "finish", "call"


@dataclass(frozen=True)
class Step:
    """One text parsed for scoring: plan label, and the action/arguments (call) or the answer (finish)."""

    plan: str
    action: str | None = None
    args: str | None = None
    answer: str | None = None
    flaw: str | None = None     # set where the reference evaluator would have crashed on this text


def parse_step(text: str) -> Step:
    """The evaluator's `parse_output` (protocol.md §6.5); never raises."""
    if "Next: give up" in text:
        return Step(GIVE_UP)
    if "Next: conclusion" in text:
        flaw = None
        if "conclusion:" in text:
            if "conclusion: " in text:
                answer = text[text.rindex("conclusion: ") + len("conclusion: "):]
            else:
                flaw = "conclusion_without_space"
                answer = text[text.rindex("conclusion:") + len("conclusion:"):]
        else:
            answer = text
        return Step(FINISH, answer=answer.replace("</s>", ""), flaw=flaw)
    parts = text.split("</s>")
    flaw = None if len(parts) > 1 else "call_without_eos"
    body = parts[1] if len(parts) > 1 else ""
    if "Action Input:" in body:
        args = body[body.rindex("Action Input:") + len("Action Input:"):].strip()
    else:
        args = "{}"
    if "Action:" in body:
        action = body[body.rindex("Action:") + len("Action:"):].strip()
        if "Action Input:" in action:
            action = action[: action.index("Action Input:")].strip()
    else:
        action = "none"
    return Step(CALL, action=action, args=args, flaw=flaw)


def _loads(s: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(s)
    except (ValueError, RecursionError):
        return False, None


def arg_score(ref_args: str, pred_args: str) -> tuple[str, float] | None:
    """One call sample whose actions match: ("easy"|"hard", score), or None when the sample is skipped
    (reference arguments are not JSON). Python equality after json.loads, half credit for a key with a
    different value, 1e-30 in the denominators, exactly as the reference computes it."""
    ok, ref = _loads(ref_args)
    if not ok:
        return None
    easy = ref == {}
    ok, pred = _loads(pred_args)
    if not ok:
        return ("easy" if easy else "hard"), 0
    if easy:
        return "easy", (1 if pred == {} else 0)
    if not isinstance(ref, dict) or not isinstance(pred, dict):
        return "hard", 0    # the reference hits AttributeError on .items()/.keys() and scores 0
    full = half = 0
    for k, v in ref.items():
        if k in pred:
            if pred[k] == v:
                full += 1
            else:
                half += 1
    recall = (0.5 * half + full) / (len(ref) + 1e-30)
    precision = (0.5 * half + full) / (len(pred) + 1e-30)
    if recall + precision == 0:
        return "hard", 0
    return "hard", (2 * recall * precision) / (recall + precision)


def _mean(xs: list) -> float | None:
    return sum(xs) / len(xs) + 1e-30 if xs else None


def score(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Score records shaped like the reference predictions.json (`tools`, `reference`, `predictions`).

    Returns {"n_samples", "plan_acc", "act_em", "hallu_rate", "arg_f1", "easy_arg_f1", "hard_arg_f1",
    "rouge_l", "notes"}; fractions in [0, 1] (the paper prints them × 100)."""
    n = 0
    plan_hits = 0
    hallucinated: list[int] = []
    act_hits = n_calls = 0
    easy: list = []
    hard: list = []
    overall: list = []
    skipped_non_json = 0
    answers_ref: list[str] = []
    answers_pred: list[str] = []
    flaws: dict[str, int] = {}
    plans = {CALL: 0, FINISH: 0, GIVE_UP: 0}
    for i, rec in enumerate(records):
        n += 1
        ref, pred = parse_step(rec["reference"]), parse_step(rec["predictions"])
        for step in (ref, pred):
            if step.flaw:
                flaws[step.flaw] = flaws.get(step.flaw, 0) + 1
        plans[ref.plan] += 1
        names = [t["Name"] for t in rec["tools"]]
        if pred.action is not None and pred.action != "none" and pred.action not in names:
            hallucinated.append(i)
        plan_hits += pred.plan == ref.plan
        if ref.plan == FINISH:
            answers_ref.append(ref.answer)
            answers_pred.append("none" if pred.answer is None else pred.answer)
        elif ref.plan == CALL:
            n_calls += 1
            pred_action = "none" if pred.action is None else pred.action
            pred_args = "{}" if pred.args is None else pred.args
            act_hits += pred_action == ref.action
            if pred_action != ref.action:
                easy.append(0)
                hard.append(0)
                overall.append(0)
                continue
            scored = arg_score(ref.args, pred_args)
            if scored is None:
                skipped_non_json += 1
                continue
            kind, value = scored
            (easy if kind == "easy" else hard).append(value)
            overall.append(value)
    if n == 0:
        from ..errors import UmiError

        raise UmiError("no samples to score: the predictions are empty")
    rouge = rouge_l(answers_pred, answers_ref)
    notes: dict[str, Any] = {
        "plans": {"call": plans[CALL], "finish": plans[FINISH], "give_up": plans[GIVE_UP]},
        "arg_f1_counts": {"easy": len(easy), "hard": len(hard), "all": len(overall),
                          "skipped_non_json_reference": skipped_non_json},
        "hallucinated": len(hallucinated),
        "hallucinated_samples": hallucinated,
    }
    divergences = []
    for key, name in (("easy_arg_f1", easy), ("hard_arg_f1", hard), ("arg_f1", overall)):
        if not name:
            divergences.append(f"{key}: no samples (the reference evaluator raises ZeroDivisionError); reported null")
    if n_calls == 0:
        divergences.append("act_em: no call references; reported 0 as the reference evaluator does")
    if rouge.n_empty:
        divergences.append(f"rouge_l: {rouge.n_empty} answer pair(s) with a text of only dots/empty scored 0.0 "
                           "(rouge==1.0.1 raises ValueError)")
    for flaw, count in sorted(flaws.items()):
        divergences.append(f"{flaw}: {count} text(s) the reference evaluator cannot parse (it crashes); scored")
    if divergences:
        notes["divergences"] = divergences
    return {
        "n_samples": n,
        "plan_acc": plan_hits / n,
        "act_em": act_hits / n_calls if n_calls else 0,
        "hallu_rate": len(hallucinated) / n,
        "arg_f1": _mean(overall),
        "easy_arg_f1": _mean(easy),
        "hard_arg_f1": _mean(hard),
        "rouge_l": rouge.f,
        "notes": notes,
    }
