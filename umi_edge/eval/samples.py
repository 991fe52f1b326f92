"""Static-evaluation data: ToolBench-format test records → teacher-forced samples with their `reference`
strings (protocol.md §6.1, §6.3), the train-example → test-record helper, and predictions.json I/O.

A test record is `{"tools": [{"Name", "function", "input"}], "instruction": str, "conversations":
[{"from": "user|assistant|caller|observation|conclusion", "value": str}]}`. Walking each conversation
with the running gold history, every assistant turn containing `Next: caller.`, `Next: conclusion.` or
`Next: give up.` is one sample; its reference is `"assistant: <turn></s><next from>: <next value></s>"`
when the turn contains `Next: caller` or `Next: conclusion.`, else the bare turn (give up). Marker-less
assistant turns only extend the history. Turns with another `from` are ignored, as the reference does,
and counted in `SampleSet.ignored_turns`.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import UmiError
from ..protocol.alpha_umi import MARKERS

HISTORY_ROLES = ("user", "assistant", "caller", "observation", "conclusion")
_MARKERS = tuple(marker for _, marker in MARKERS)


@dataclass(frozen=True)
class StaticSample:
    """One planner step to predict from the gold history."""

    id: str                                  # "<record index>:<turn index>", stable across runs (resume key)
    tools: list                              # the record's tool docs, as given
    instruction: str | None
    history: tuple[tuple[str, str], ...]     # gold (from, value) turns before this planner turn
    reference: str


@dataclass
class SampleSet:
    samples: list[StaticSample] = field(default_factory=list)
    ignored_turns: int = 0                   # turns whose `from` is not a history role
    missing_next_turn: int = 0               # caller/conclusion steps at the end of a conversation


def load_json(path: str | os.PathLike, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise UmiError(f"{p}: {what} file not found; give the path to a JSON file")
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise UmiError(f"{p}: not valid JSON ({e}); give a {what} file") from None


def check_records(records: Any, source: str = "DATA") -> list[dict]:
    """Validate the protocol.md §6.1 shape; errors name the record and field."""
    if not isinstance(records, list):
        raise UmiError(f"{source}: expected a JSON list of test records (tools, instruction, conversations)")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise UmiError(f"{source}: record {i} is not an object")
        tools = r.get("tools")
        if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("Name"), str) for t in tools):
            raise UmiError(f"{source}: record {i} field 'tools' must be a list of objects with a string 'Name'")
        conv = r.get("conversations")
        if not isinstance(conv, list) or not all(
            isinstance(u, dict) and isinstance(u.get("from"), str) and isinstance(u.get("value"), str) for u in conv
        ):
            raise UmiError(f"{source}: record {i} field 'conversations' must be a list of {{from, value}} strings")
    return records


def build_samples(records: Sequence[dict]) -> SampleSet:
    """protocol.md §6.3 `build_infer_samples`: one sample per marked assistant turn, with the running gold history."""
    out = SampleSet()
    for ri, rec in enumerate(records):
        conv = rec["conversations"]
        history: list[tuple[str, str]] = []
        for j, turn in enumerate(conv):
            who, value = turn["from"], turn["value"]
            if who == "assistant" and any(m in value for m in _MARKERS):
                if "Next: caller" in value or "Next: conclusion." in value:
                    if j + 1 < len(conv):
                        nxt = conv[j + 1]
                        reference = f"assistant: {value}</s>{nxt['from']}: {nxt['value']}</s>"
                    else:
                        # the reference code raises IndexError here; keep the step with no next turn
                        out.missing_next_turn += 1
                        reference = f"assistant: {value}</s>"
                else:
                    reference = value
                out.samples.append(
                    StaticSample(f"{ri}:{j}", rec["tools"], rec.get("instruction"), tuple(history), reference)
                )
            if who in HISTORY_ROLES:
                history.append((who, value))
            else:
                out.ignored_turns += 1
    return out


def _group_key(rec: dict) -> str:
    return json.dumps([rec["tools"], rec["history"][0]], sort_keys=True)


def records_from_train_examples(
    planner: str | os.PathLike | Sequence[dict],
    caller: Sequence[dict] | None = None,
    summarizer: Sequence[dict] | None = None,
) -> list[dict]:
    """Rebuild static test records (protocol.md §6.1) from the α-UMi training examples (§6.2).

    `planner` is either the `train-example/` folder (the three `train_{planner,caller,summarizer}.json`
    files are read from it) or the planner records, with `caller` and `summarizer` records alongside.
    Planner records of one dialogue share their tools and first turn; the longest history plus its target
    is the conversation, and the step after the final planner turn comes from the caller or summarizer
    record whose history equals it. Every planner record must lie on that conversation (checked), so the
    sample builder yields exactly one sample per planner record, with the record's history.
    """
    if not isinstance(planner, (list, tuple)):
        folder = Path(planner)
        planner = load_json(folder / "train_planner.json", "train_planner")
        caller = load_json(folder / "train_caller.json", "train_caller")
        summarizer = load_json(folder / "train_summarizer.json", "train_summarizer")
    if caller is None or summarizer is None:
        raise UmiError("records_from_train_examples: give the caller and summarizer records with the planner records")
    groups: dict[str, list[dict]] = {}
    for rec in planner:
        groups.setdefault(_group_key(rec), []).append(rec)
    by_history = {}
    for kind, recs in (("caller", caller), ("conclusion", summarizer)):
        for rec in recs:
            by_history[(kind, json.dumps(rec["history"]))] = rec["target"]
    records = []
    for key, recs in groups.items():
        longest = max(recs, key=lambda r: len(r["history"]))
        conv = [dict(t) for t in longest["history"]] + [{"from": "assistant", "value": longest["target"]}]
        for rec in recs:
            n = len(rec["history"])
            if conv[:n] != rec["history"] or conv[n] != {"from": "assistant", "value": rec["target"]}:
                raise UmiError(f"train examples: planner record with target {rec['target'][:60]!r} is not on its "
                               "dialogue's conversation; the examples are inconsistent")
        last = longest["target"]
        if "Next: give up." not in last:
            kind = "conclusion" if "Next: conclusion." in last else "caller"
            nxt = by_history.get((kind, json.dumps(conv)))
            if nxt is None:
                raise UmiError(f"train examples: no {kind} record continues the dialogue starting "
                               f"{conv[0]['value'][:60]!r}; give the matching caller/summarizer file")
            conv.append({"from": kind, "value": nxt})
        records.append({"tools": longest["tools"], "instruction": conv[0]["value"], "conversations": conv})
    return records


def prediction_record(sample: StaticSample, prediction: str, **extra: Any) -> dict:
    """A predictions.json record as the reference pipeline writes it (plus our `id` and extras)."""
    rec = {
        "id": sample.id,
        "tools": sample.tools,
        "instruction": sample.instruction,
        "history": [{"from": w, "value": v} for w, v in sample.history],
        "reference": sample.reference,
        "predictions": prediction,
    }
    rec.update(extra)
    return rec


def check_predictions(preds: Any, source: str = "predictions") -> list[dict]:
    if not isinstance(preds, list):
        raise UmiError(f"{source}: expected a JSON list of records with 'tools', 'reference', 'predictions'")
    for i, r in enumerate(preds):
        if not isinstance(r, dict):
            raise UmiError(f"{source}: record {i} is not an object")
        for k in ("reference", "predictions"):
            if not isinstance(r.get(k), str):
                raise UmiError(f"{source}: record {i} field {k!r} must be a string")
        tools = r.get("tools")
        if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("Name"), str) for t in tools):
            raise UmiError(f"{source}: record {i} field 'tools' must be a list of objects with a string 'Name'")
    return preds


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON through a temp file in the same folder and os.replace, so a crash leaves the old file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def oracle_predictions(samples: Iterable[StaticSample]) -> list[dict]:
    """References fed back as predictions, in the protocol.md §6.4 shape ("asssitant: " label included)."""
    out = []
    for s in samples:
        ref = s.reference
        pred = "asssitant: " + ref[len("assistant: "):].removesuffix("</s>") if ref.startswith("assistant: ") else ref
        out.append(prediction_record(s, pred))
    return out
