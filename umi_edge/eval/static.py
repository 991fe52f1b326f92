"""`umi-edge eval static`: teacher-forced step-level evaluation of a team on ToolBench-format test data,
scored exactly as the α-UMi evaluator scores it (protocol.md §6).

For every sample (protocol.md §6.3) the planner sees the gold history; its output is post-processed (§4.6, strip
included) and routed (protocol.md §5.1, real-time rules: a marker-less plan gets " Next: caller."); then the caller
or the summarizer runs once on the *predicted* plan, with the plan in its history under `plan_label`
(`assistant:` as in training, the default; `planner:` as the reference static pipeline). Prediction
strings follow protocol.md §6.4, "asssitant: " typo included, so the paper's own evaluator can score our file.
Generation is single-shot per role (no empty-output retries) and the caller is unconstrained by
default, as in the reference static pipeline; `constrained=True` (`--constrained`) decodes it under the
runtime's tool-call grammar for the sample's tools instead.

`--out` is a predictions.json (a JSON list; each record has `id`, `tools`, `reference`, `predictions`
and our extras). It is rewritten atomically every few seconds and at the end; a rerun with the same
`--out` keeps the records already there (matched by `id`, checked against the data) and predicts only
the rest.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import Cancelled, UmiError
from .metrics import score
from .samples import (
    StaticSample,
    build_samples,
    check_predictions,
    check_records,
    load_json,
    prediction_record,
    records_from_train_examples,
    write_json_atomic,
)

__all__ = ["StaticRun", "load_samples", "predict_sample", "records_from_train_examples", "run_static",
           "score_file"]

FLUSH_SECONDS = 5.0   # how often --out is rewritten during a run (the whole list, atomically)


@dataclass
class StaticRun:
    """What `run_static` did: the metrics of all predictions for the evaluated samples, and counts."""

    metrics: dict[str, Any]
    predicted: int = 0          # samples predicted in this run
    resumed: int = 0            # samples taken from an existing --out
    seconds: float = 0.0
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)


def load_samples(data: str | os.PathLike | list, *, limit: int | None = None):
    """Samples of a test-data file (or of a `train-example/` folder, through the train-example helper)."""
    if isinstance(data, list):
        records = check_records(data)
    elif Path(data).is_dir():
        records = records_from_train_examples(data)
    else:
        records = check_records(load_json(data, "test data"), str(data))
    sset = build_samples(records)
    samples = sset.samples
    if limit is not None:
        if limit < 1:
            raise UmiError(f"--limit must be at least 1, not {limit}")
        samples = samples[:limit]
    if not samples:
        raise UmiError(f"{data}: no assistant turn with a 'Next: ...' marker, so no sample to evaluate")
    return samples, sset


def _max_tokens(limits: Any, role: str) -> int:
    mt = getattr(limits, "max_tokens", 512)
    if callable(mt):            # loop.Limits.max_tokens(role)
        return int(mt(role))
    if isinstance(mt, Mapping):
        return int(mt.get(role, 512))
    return int(mt)


def _generate(engine: Any, protocol: Any, prompt: str, max_tokens: int, cancel, grammar=None):
    ids = protocol.encode(prompt, engine.tokenize, engine.bos_id, engine.eos_id)
    gen = engine.generate(ids, max_tokens=max_tokens, grammar=grammar, cancel=cancel)
    if gen.stop_reason == "cancelled":
        raise Cancelled("static evaluation cancelled")
    return gen


def caller_grammar_for(tools: list, max_tokens: int, cache: dict | None = None) -> str:
    """The constrained caller's grammar over a record's ToolBench docs (cached per distinct tool list)."""
    import json

    key = json.dumps(tools, sort_keys=True)
    if cache is not None and key in cache:
        return cache[key]
    from ..protocol.grammar import caller_grammar
    from ..tools import ToolSet

    grammar = caller_grammar(ToolSet.from_toolbench(tools), max_tokens=max_tokens)
    if cache is not None:
        cache[key] = grammar
    return grammar


def predict_sample(sample: StaticSample, roles: Mapping[str, Any], protocol: Any, *, limits: Any = None,
                   constrained: bool = False, grammars: dict | None = None,
                   cancel: threading.Event | None = None) -> dict:
    """Run planner → (caller | summarizer | nothing) on one sample; the predictions.json record.

    `constrained`: the caller decodes under the tool-call grammar of the sample's tools (the runtime's
    setting); off by default, as in the reference static pipeline."""
    history = [{"from": w, "value": v} for w, v in sample.history]
    tokens: dict[str, dict[str, int]] = {}
    started = time.perf_counter()

    def run(role: str, prompt: str) -> str:
        grammar = None
        if role == "caller" and constrained:
            grammar = caller_grammar_for(sample.tools, _max_tokens(limits, role), grammars)
        gen = _generate(roles[role], protocol, prompt, _max_tokens(limits, role), cancel, grammar)
        tokens[role] = {"prompt": gen.n_prompt, "generated": gen.n_generated, "truncated": gen.n_truncated}
        return protocol.postprocess_planner(gen.text)   # protocol.md §4.6 1-3; static does 2-3 for all roles

    raw = run("planner", protocol.planner_prompt(sample.tools, history))
    route = protocol.route(raw)
    if route.kind == "give_up":
        prediction = route.plan
    elif route.kind == "conclusion":
        answer = run("summarizer", protocol.summarizer_prompt(history, route.plan))
        prediction = "asssitant: " + route.plan + "</s>conclusion: " + answer
    else:
        call = run("caller", protocol.caller_prompt(sample.tools, history, route.plan))
        prediction = "asssitant: " + route.plan + "</s>caller: " + call
    return prediction_record(
        sample, prediction, planner_output=raw, route=route.kind, plan_label=protocol.plan_label,
        constrained=constrained, tokens=tokens, seconds=round(time.perf_counter() - started, 4),
    )


def _resume(out: Path, samples: list[StaticSample], settings: Mapping[str, Any]) -> dict[str, dict]:
    if not out.exists():
        return {}
    old = check_predictions(load_json(out, "predictions"), str(out))
    by_id = {s.id: s for s in samples}
    done = {}
    for i, rec in enumerate(old):
        sid = rec.get("id")
        if not isinstance(sid, str):
            raise UmiError(f"{out}: record {i} has no 'id', so it was not written by `umi-edge eval static`; "
                           "choose another --out")
        s = by_id.get(sid)
        if s is not None and s.reference != rec["reference"]:
            raise UmiError(f"{out}: record {sid} has another reference than the data; it was made from "
                           "different test data, choose another --out")
        for key, value in settings.items():
            if rec.get(key, False if key == "constrained" else value) != value:
                raise UmiError(f"{out}: record {sid} was predicted with {key}={rec.get(key)!r}, this run uses "
                               f"{value!r}; use the same flags to resume, or another --out")
        done[sid] = rec
    return done


def run_static(
    data: str | os.PathLike | list,
    roles: Mapping[str, Any],
    *,
    protocol: Any = None,
    limits: Any = None,
    plan_label: str = "assistant",
    out: str | os.PathLike | None = None,
    limit: int | None = None,
    constrained: bool = False,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> StaticRun:
    """Teacher-forced predictions for every sample of `data` with the role engines `roles`, then scores.

    `protocol`: a protocol object (default: α-UMi with `plan_label`). `limits`: a `loop.Limits` (a Team's
    `limits`), or anything whose `max_tokens` is an int or a role mapping; default 512 per role. `progress(done, total)` is called after each
    sample. Records already in `out` are kept and skipped (resume)."""
    samples, sset = load_samples(data, limit=limit)
    if protocol is None:
        from ..protocol import get_protocol

        protocol = get_protocol(plan_label=plan_label)
    out_path = Path(out) if out is not None else None
    settings = {"plan_label": getattr(protocol, "plan_label", plan_label), "constrained": constrained}
    done = _resume(out_path, samples, settings) if out_path is not None else {}
    resumed = sum(1 for s in samples if s.id in done)
    kept_other = [r for sid, r in done.items() if sid not in {s.id for s in samples}]
    started = time.perf_counter()
    predicted = 0
    totals: dict[str, dict[str, int]] = {}
    grammars: dict[str, str] = {}
    last_flush = time.monotonic()

    def flush():
        if out_path is not None:
            ordered = [done[s.id] for s in samples if s.id in done]
            write_json_atomic(out_path, ordered + kept_other)

    if progress is not None:
        progress(0, len(samples))
    try:
        for i, sample in enumerate(samples):
            if sample.id not in done:
                rec = predict_sample(sample, roles, protocol, limits=limits, constrained=constrained,
                                     grammars=grammars, cancel=cancel)
                done[sample.id] = rec
                predicted += 1
                for role, t in rec["tokens"].items():
                    acc = totals.setdefault(role, {"prompt": 0, "generated": 0})
                    acc["prompt"] += t["prompt"]
                    acc["generated"] += t["generated"]
                if out_path is not None and time.monotonic() - last_flush >= FLUSH_SECONDS:
                    flush()
                    last_flush = time.monotonic()
            if progress is not None:
                progress(i + 1, len(samples))
    finally:
        if predicted:
            flush()
    metrics = score(done[s.id] for s in samples)
    notes = metrics["notes"]
    notes["plan_label"] = getattr(protocol, "plan_label", plan_label)
    notes["constrained_caller"] = constrained
    if sset.missing_next_turn or sset.ignored_turns:
        notes["data"] = {"missing_next_turn": sset.missing_next_turn, "ignored_turns": sset.ignored_turns}
    return StaticRun(metrics, predicted, resumed, round(time.perf_counter() - started, 3), totals)


def score_file(data: str | os.PathLike | None, predictions: str | os.PathLike) -> dict[str, Any]:
    """Score an existing predictions.json (ours or the reference pipeline's). With `data`, every record's
    reference must be one of the data's samples (a `--limit` run covers a prefix of them)."""
    from collections import Counter

    preds = check_predictions(load_json(predictions, "predictions"), str(predictions))
    if not preds:
        raise UmiError(f"{predictions}: no records to score")
    metrics = score(preds)
    if data is not None:
        samples, _ = load_samples(data)
        extra = Counter(r["reference"] for r in preds) - Counter(s.reference for s in samples)
        if extra:
            raise UmiError(f"{predictions}: {sum(extra.values())} record(s) have a reference that is not a sample "
                           f"of {data}; give the data the predictions were made from (or score without it)")
        metrics["notes"]["coverage"] = f"{len(preds)} of {len(samples)} samples"
    return metrics
