"""GLPFT recipe data generator: exact rendering, valid calls, real observations, no held-out leak."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "glpft"
sys.path.insert(0, str(RECIPE))

import generate  # noqa: E402

from umi_edge.protocol import Turn, get_protocol  # noqa: E402
from umi_edge.protocol.backbone import Backbone  # noqa: E402
from umi_edge.tools import parse_arguments  # noqa: E402
from umi_edge.tools.demo import TOOLS  # noqa: E402

N = 250


@pytest.fixture(scope="module")
def data():
    return generate.build(N, seed=0)


def _turns(record):
    return [Turn(h["from"], h["value"]) for h in record["history"]]


def test_inputs_render_exactly_as_the_runtime_builds_them(data):
    proto = get_protocol("alpha-umi/toolbench-v1")
    docs = TOOLS.docs(proto.doc_chars)
    for r in data["planner"]:
        assert r["tools"] == docs
        assert r["input"] == proto.planner_prompt(docs, _turns(r))
    for r in data["caller"]:
        *history, plan = _turns(r)
        assert plan.role == "assistant" and plan.text == r["history"][-1]["value"]
        assert r["input"] == proto.caller_prompt(docs, history, plan.text)
        assert r["input"].endswith("the api call request. caller: ")
    for r in data["summarizer"]:
        *history, plan = _turns(r)
        assert plan.text.endswith("\n Next: conclusion.")
        assert r["input"] == proto.summarizer_prompt(history, plan.text)
        assert r["input"].endswith("Next: conclusion.</s> conclusion: ")
    for r in data["backbone"]:
        assert r["input"] == Backbone().prompt(docs, _turns(r))


def test_targets_have_the_role_shapes(data):
    proto = get_protocol("alpha-umi/toolbench-v1")
    kinds = {"caller": 0, "conclusion": 0, "give_up": 0}
    for r in data["planner"]:
        route = proto.route(r["target"])
        assert route.marker and route.plan == r["target"]
        assert r["target"].endswith("\n Next: " + {"caller": "caller.", "conclusion": "conclusion.",
                                                   "give_up": "give up."}[route.kind])
        kinds[route.kind] += 1
    assert all(kinds.values()), kinds
    assert len(data["backbone"]) == len(data["planner"])
    for r in data["backbone"]:
        assert "Next:" not in r["target"]
        assert "\nAction: " in r["target"] or "\nconclusion: " in r["target"]


def test_every_caller_target_is_a_registered_tool_with_schema_valid_arguments(data):
    proto = get_protocol("alpha-umi/toolbench-v1")
    for r in data["caller"]:
        call = proto.parse_call(r["target"])
        assert r["target"] == f"Action: {call.action}\nAction Input: {call.arguments}"
        assert call.action in TOOLS.names
        args, problem = parse_arguments(call.arguments, TOOLS[call.action].parameters)
        assert problem is None, (r["target"], problem)
        assert call.arguments.isascii()


def test_observations_are_the_real_tool_outputs(data):
    proto = get_protocol("alpha-umi/toolbench-v1")
    seen = errors = 0
    for r in data["planner"] + data["summarizer"]:
        h = r["history"]
        for i, turn in enumerate(h):
            if turn["from"] != "observation":
                continue
            assert h[i - 1]["from"] == "caller"
            call = proto.parse_call(h[i - 1]["value"], TOOLS.names)
            assert turn["value"] == proto.truncate_observation(TOOLS.call(call.action, call.arguments).text)
            seen += 1
            errors += '"error": ' in turn["value"]
    assert seen and errors, (seen, errors)  # tool errors (and the recoveries after them) are in the data


def test_episodes_have_one_to_four_calls_and_grounded_answers(data):
    counts = set()
    for r in data["summarizer"]:
        calls = [t for t in r["history"] if t["from"] == "caller"]
        counts.add(len(calls))
        observations = " ".join(t["value"] for t in r["history"] if t["from"] == "observation")
        numbers = [w for w in r["target"].replace(",", "").replace("(", " ").split() if w[:1].isdigit()]
        for w in numbers:  # every number the answer states comes from the query or an observation
            w = w.rstrip(".:;)").rstrip("°%")
            assert w in observations or w in r["history"][0]["value"].replace(",", ""), (w, r["target"])
    assert {1, 2, 3, 4} <= counts, counts


def test_no_heldout_query_country_or_date(data):
    banned = generate.heldout()
    assert len(banned["queries"]) == 31 and banned["countries"] and banned["dates"]
    for records in data.values():
        for r in records:
            query = r["history"][0]["value"]
            assert generate.normalize_query(query) not in banned["queries"]
            text = r["input"] + r["target"]
            for c in banned["countries"]:
                assert c not in query
            for d in banned["dates"]:
                assert d not in text


def test_deterministic_in_the_seed(data, tmp_path):
    again = generate.build(N, seed=0)
    assert again == data
    assert generate.build(N, seed=1)["planner"] != data["planner"]
    counts = generate.write(again, tmp_path)
    for role, n in counts.items():
        assert json.loads((tmp_path / f"train_{role}.json").read_text(encoding="utf-8")) == data[role]
        assert n == len(data[role])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"train_{r}.json" for r in sorted(generate.ROLES)]


def test_every_caller_and_backbone_target_passes_its_runtime_grammar(data, smollm2_gguf):
    """Fed as SmolLM2 tokens through llama.cpp's grammar sampler with the loop's caller grammar at the
    trained set's caller budget, every target is admitted and may end with EOS."""
    import ctypes

    L = pytest.importorskip("llama_cpp")
    from umi_edge.engine.llama import LlamaBackend
    from umi_edge.protocol.grammar import THOUGHT_CHARS, backbone_grammar, caller_grammar

    grammar = caller_grammar(TOOLS, max_tokens=generate.CALLER_MAX_TOKENS).encode()
    with LlamaBackend() as backend:
        m = backend.load_model(smollm2_gguf)
        vocab = L.llama_model_get_vocab(m.ptr)

        def admitted(tokens) -> bool:
            g = L.llama_sampler_init_grammar(vocab, grammar, b"root")
            try:
                cell = (L.llama_token_data * 1)()
                for tok in [*tokens, m.eos_id]:
                    cell[0].id, cell[0].logit, cell[0].p = tok, 0.0, 0.0
                    arr = L.llama_token_data_array(data=cell, size=1, selected=-1, sorted=False)
                    L.llama_sampler_apply(g, ctypes.byref(arr))
                    if cell[0].logit == float("-inf"):
                        return False
                    if tok != m.eos_id:
                        L.llama_sampler_accept(g, tok)
                return True
            finally:
                L.llama_sampler_free(g)

        targets = sorted({r["target"] for r in data["caller"]})
        assert not admitted(m.tokenize('Action: calculator\nAction Input: {\n  "expression": "1"\n}'))
        rejected = [t for t in targets if not admitted(m.tokenize(t))]
        assert not rejected, rejected[:5]

        # the single-model baseline: every backbone target under the backbone grammar at the overlay's budget
        grammar = backbone_grammar(TOOLS, max_tokens=generate.CALLER_MAX_TOKENS + THOUGHT_CHARS + 1).encode()
        targets = sorted({r["target"] for r in data["backbone"]})
        assert not admitted(m.tokenize("x" * (THOUGHT_CHARS + 1) + "\nconclusion: y"))
        rejected = [t for t in targets if not admitted(m.tokenize(t))]
    assert not rejected, rejected[:5]


def test_validation_tasks_are_new_queries_whose_checks_pass_on_the_reference_run(tmp_path):
    from umi_edge.eval.tasks import check_answer, load_tasks

    train = {generate.normalize_query(e.query) for e in generate.episodes(60, seed=0)}
    eps = list(generate.episodes(40, seed=5, exclude=train))
    assert not train & {generate.normalize_query(e.query) for e in eps}
    path = tmp_path / "valid.jsonl"
    assert generate.main(["--tasks", "40", "--seed", "5", "--episodes", "60", "--out", str(path)]) == 0
    tasks = load_tasks(path)  # the eval's own parser accepts every task
    assert [t.query for t in tasks] == [e.query for e in eps]
    for task, e in zip(tasks, eps):
        calls = [(c["tool"], json.dumps(c["arguments"])) for c in e.calls]
        if task.expect == "give_up":
            assert e.history[-1].role != "conclusion"
            continue
        answer = e.history[-1].text
        assert check_answer(task, answer, calls) is None, (task, answer)
        assert task.check.get("answer_number") or task.check.get("answer_contains")
        # and the checks bite: without the answer, or without the calls, the task fails
        assert check_answer(task, "I do not know.", calls) is not None
        assert check_answer(task, answer, []) is not None


def test_plans_number_the_steps_so_the_planner_can_count_what_remains():
    """Each episode with tool steps opens with its plan; every call names its step, a retry repeats it and
    the conclusion names the last one; an impossible request has no plan."""
    import re
    seen = {"multi": 0, "retry": 0, "give_up": 0}
    for e in generate.episodes(300, seed=1):
        thoughts = [r["target"].rsplit("\n Next: ", 1)[0] for r in e.samples["planner"]]
        head = re.match(r"Plan: ((?:\d+\. [^;]+; )*\d+\. [^;]+)\. Step 1 of (\d+): ", thoughts[0])
        if head is None:
            assert not e.calls and e.samples["planner"][-1]["target"].endswith("Next: give up."), thoughts[0]
            seen["give_up"] += 1
            continue
        n = int(head.group(2))
        assert [int(x) for x in re.findall(r"(?:^|; )(\d+)\. ", head.group(1))] == list(range(1, n + 1))
        assert len({c["tool"] for c in e.calls}) <= n
        step = 1
        for t, call in zip(thoughts[1:], e.calls):
            again = call["ok"] is False
            m = re.match(r"Step (\d+) of (\d+)( again)?: ", t)
            if t.startswith(f"Step {n} of {n} is done") or not m:
                break
            assert int(m.group(2)) == n and int(m.group(1)) == (step if again else step + 1), (t, e.query)
            seen["retry"] += again
            step = int(m.group(1))
        if e.samples["summarizer"]:
            assert thoughts[-1] == f"Step {n} of {n} is done, so I can give the final answer."
            assert step == n and sum(c["ok"] for c in e.calls) == n, e.query
        seen["multi"] += n > 1
    assert all(seen.values()), seen
