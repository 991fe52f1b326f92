"""The tool world and its training episodes: many families and naming styles, deterministic backends, exact
α-UMi rendering with each episode's own tools, real observations, grounded answers, and the family split (no
validation-family or `unseen`-suite tool, name or domain in training data)."""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "glpft"
sys.path.insert(0, str(RECIPE))

import generate  # noqa: E402
import toolworld as W  # noqa: E402
import unseen_tasks  # noqa: E402
import worldgen  # noqa: E402

from umi_edge.eval.tasks import fabricated_numbers, load_tasks, resolve_tools  # noqa: E402
from umi_edge.protocol import Turn, get_protocol  # noqa: E402
from umi_edge.protocol.backbone import Backbone  # noqa: E402
from umi_edge.tools import parse_arguments  # noqa: E402
from umi_edge.tools import unseen as U  # noqa: E402

N = 300
SHARE = 0.2


@pytest.fixture(scope="module")
def eps():
    return list(generate.episodes(N, seed=0, demo_share=SHARE))


@pytest.fixture(scope="module")
def data():
    return generate.build(N, seed=0, demo_share=SHARE)


def _offered(docs) -> "W.ToolSet":
    return W.offered([d["Name"] for d in docs])


# --- the world ------------------------------------------------------------------------------------------------

def test_the_world_has_hundreds_of_tools_in_many_families_and_naming_styles():
    assert len(W.FAMILIES) >= 34 and len(W.TRAIN_FAMILIES) >= 30 and len(W.TOOLS) >= 250
    names = W.TOOLS.names
    styles = Counter("camel" if re.search(r"[a-z][A-Z]", n) else "kebab" if "-" in n else
                     "snake" if "_" in n else "word" for n in names)
    assert styles["camel"] >= 50 and styles["snake"] >= 50 and styles["kebab"] >= 5, styles
    assert len({t.description for t in W.TOOLS}) >= 150      # varied wording, not one template
    enums = [t for t in W.TOOLS if any("enum" in p for p in t.parameters["properties"].values())]
    assert len(enums) >= 30
    for t in W.TOOLS:
        doc = t.doc(get_protocol("alpha-umi/toolbench-v1").doc_chars)
        assert doc["function"].endswith('"'), doc   # the description is never cut


def test_backends_are_deterministic_with_error_objects_for_unknown_keys():
    fam = W.FAMILIES["inventory"]
    e = fam.entities[0]
    lookup = fam.functions[0].variants[0]
    key = lookup.parameters["required"][0]
    first = W.TOOLS.call(lookup.name, json.dumps({key: e["id"]}))
    assert first.ok and json.loads(first.text)["units_in_stock"] == e["values"]["main"]["units_in_stock"]
    assert W.TOOLS.call(lookup.name, json.dumps({key: e["id"].lower()})).text == first.text
    opt = next(a for a in lookup.parameters["properties"] if a != key)
    north = json.loads(W.TOOLS.call(lookup.name, json.dumps({key: e["id"], opt: "north"})).text)
    assert north["units_in_stock"] == e["values"]["north"]["units_in_stock"]
    missing = W.TOOLS.call(lookup.name, json.dumps({key: "Q-0000"}))
    assert missing.ok and "error" in json.loads(missing.text)
    # a rebuilt world is the same world
    assert W._build()["inventory"].entities == fam.entities


def test_doc_examples_never_name_a_real_entity():
    for fam in W.FAMILIES.values():
        real = {e["id"].upper() for e in fam.entities} | {str(e["name"]).upper() for e in fam.entities}
        for t in fam.tools:
            for prop in t.parameters["properties"].values():
                for ex in re.findall(r'"([^"]+)"', prop.get("description", "")):
                    assert ex.upper() not in real, (t.name, ex)


# --- training episodes --------------------------------------------------------------------------------------------

def test_inputs_render_exactly_as_the_runtime_builds_them_with_each_episodes_tools(data):
    proto = get_protocol("alpha-umi/toolbench-v1")
    for r in data["planner"]:
        turns = [Turn(h["from"], h["value"]) for h in r["history"]]
        assert r["input"] == proto.planner_prompt(r["tools"], turns)
        assert 3 <= len(r["tools"]) <= 12    # world: 3-12 offered; demo: all seven
    for r in data["caller"]:
        *history, plan = [Turn(h["from"], h["value"]) for h in r["history"]]
        assert r["input"] == proto.caller_prompt(r["tools"], history, plan.text)
    for r in data["backbone"]:
        assert r["input"] == Backbone().prompt(r["tools"], [Turn(h["from"], h["value"]) for h in r["history"]])


def test_calls_are_offered_tools_with_schema_valid_arguments_and_real_observations(data):
    proto = get_protocol("alpha-umi/toolbench-v1")
    for r in data["caller"]:
        tools = _offered(r["tools"])
        call = proto.parse_call(r["target"])
        assert call.action in tools.names, (call.action, tools.names)
        _, problem = parse_arguments(call.arguments, tools[call.action].parameters)
        assert problem is None and call.arguments.isascii(), (r["target"], problem)
    for r in data["summarizer"]:
        tools = _offered(r["tools"]) if r["tools"] else None
        h = r["history"]
        for i, turn in enumerate(h):
            if turn["from"] == "observation" and tools is not None:
                call = proto.parse_call(h[i - 1]["value"], tools.names)
                assert turn["value"] == proto.truncate_observation(tools.call(call.action, call.arguments).text)


def test_episode_kinds_chains_give_ups_and_distractors(eps):
    world = [e for e in eps if e.kind.startswith("world/")]
    assert 0.7 * N <= len(world) <= 0.9 * N                  # the demo tools stay a minority share
    kinds = Counter(worldgen.kind_of(e.kind.split("/")[1]) for e in world)
    assert kinds["chain"] >= 0.25 * len(world) and kinds["give_up"] >= 0.1 * len(world), kinds
    calls = Counter(len(e.calls) for e in world)
    assert calls[0] and calls[1] and calls[2] and calls[3], calls
    sizes = Counter(len(e.tools) for e in world)
    assert min(sizes) == 3 and max(sizes) == 12
    # distractors share words with the tool that is needed (overlapping names and descriptions)
    shared = sum(any(worldgen._words(t) & worldgen._words(e.tools[e.calls[0]["tool"]])
                     for t in e.tools if t.name != e.calls[0]["tool"]) for e in world if e.calls)
    assert shared >= 0.6 * sum(1 for e in world if e.calls)
    # a call's arguments come from the query (or an earlier observation), never from a doc's example
    for e in world:
        for c in e.calls:
            for v in c["arguments"].values() if isinstance(c["arguments"], dict) else json.loads(
                    c["arguments"]).values():
                for t in e.tools:
                    for p in t.parameters["properties"].values():
                        assert f'"{v}"' not in p.get("description", "") or isinstance(v, (int, float))


def test_answers_state_only_numbers_from_the_query_calls_or_observations(data):
    for r in data["summarizer"]:
        h = r["history"]
        grounds = [h[0]["value"]] + [t["value"] for t in h if t["from"] in ("caller", "observation")]
        assert fabricated_numbers(r["target"], grounds) == [], r["target"]


def test_deterministic_in_the_seed(data):
    assert generate.build(N, seed=0, demo_share=SHARE) == data
    assert generate.build(N, seed=1, demo_share=SHARE)["planner"] != data["planner"]
    # demo_share 1 is the demo-only stream, unchanged by the world
    assert generate.build(40, seed=0) == generate.build(40, seed=0, demo_share=1.0)


# --- the family split -----------------------------------------------------------------------------------------------

def test_no_validation_or_unseen_family_tool_or_name_in_training_data(data):
    text = json.dumps(data).lower()
    for fam in W.VALID_FAMILIES:
        for t in W.FAMILIES[fam].tools:
            assert f'"name": "{t.name.lower()}"' not in text, t.name
        spec = W.FAMILIES[fam].spec
        assert spec.entity not in text or spec.entity in ("array",), spec.entity
    for t in U.TOOLS:
        if t.name != "calculator":
            assert t.name.lower() not in text, t.name
    for fam in U.FAMILIES:
        for word in fam.split("_"):
            if word not in ("gym", "shop", "resort"):   # generic words; the families themselves are absent
                assert not re.search(rf"\b{word}", text), word
    assert not set(U.TOOLS.names) - {"calculator"} & set(W.TOOLS.names)


# --- the unseen suite ---------------------------------------------------------------------------------------------

def test_unseen_suite_is_valid_sized_and_current():
    from importlib import resources

    path = resources.files("umi_edge").joinpath("data/tasks/unseen.jsonl")
    tasks = load_tasks(str(path))
    assert len(tasks) >= 40
    families = {t.tools.split(":")[1] for t in tasks}
    assert len(families) >= 8
    assert 4 <= sum(t.expect == "give_up" for t in tasks) <= 10
    cache: dict = {}
    for t in tasks:
        tools = resolve_tools(t, cache)
        for c in t.check.get("calls", []):
            assert c["tool"] in tools.names
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert rows == [{k: v for k, v in r.items() if k != "kind"} for r in unseen_tasks.tasks()], (
        "unseen.jsonl is stale: run python recipes/glpft/unseen_tasks.py")
    kinds = Counter(unseen_tasks.kinds().values())
    assert kinds["chain"] >= 10 and kinds["one_call"] >= 20


def test_validation_tasks_use_only_validation_families(tmp_path):
    out = tmp_path / "valid.jsonl"
    assert generate.main(["--tasks", "30", "--world", "--seed", "7", "--episodes", "60", "--out", str(out)]) == 0
    tasks = load_tasks(out)
    cache: dict = {}
    train = json.dumps(generate.build(60, 0, SHARE))
    from umi_edge.eval.tasks import check_answer

    eps = list(generate.episodes(30, 7, exclude={generate.normalize_query(e.query) for e in generate.episodes(60, 0)},
                                 demo_share=0.0, world_families=W.VALID_FAMILIES))
    assert [t.query for t in tasks] == [e.query for e in eps]
    for t, e in zip(tasks, eps):      # the reference run passes its own task's checks, and they bite
        if t.expect == "answer":
            calls = [(c["tool"], json.dumps(c["arguments"])) for c in e.calls]
            assert check_answer(t, e.history[-1].text, calls) is None, (t, e.history[-1].text)
            assert check_answer(t, "I do not know.", calls) is not None
    for t in tasks:
        tools = resolve_tools(t, cache)
        fams = {W.family_of(n) for n in tools.names} - {None}
        assert fams <= set(W.VALID_FAMILIES), fams
        for n in tools.names:
            assert n == "calculator" or W.family_of(n) is None or f'"{n}"' not in train


def test_world_caller_targets_pass_their_own_runtime_grammar(data, smollm2_gguf):
    """A sample of world caller targets, as SmolLM2 tokens, through the caller grammar of the episode's own
    offered tools at the trained set's budget."""
    import ctypes

    L = pytest.importorskip("llama_cpp")
    from umi_edge.engine.llama import LlamaBackend
    from umi_edge.protocol.grammar import caller_grammar

    records = [r for r in data["caller"] if len(r["tools"]) != 7][:40]
    with LlamaBackend() as backend:
        m = backend.load_model(smollm2_gguf)
        vocab = L.llama_model_get_vocab(m.ptr)
        rejected = []
        for r in records:
            grammar = caller_grammar(_offered(r["tools"]), max_tokens=generate.CALLER_MAX_TOKENS).encode()
            g = L.llama_sampler_init_grammar(vocab, grammar, b"root")
            try:
                cell = (L.llama_token_data * 1)()
                for tok in [*m.tokenize(r["target"]), m.eos_id]:
                    cell[0].id, cell[0].logit, cell[0].p = tok, 0.0, 0.0
                    arr = L.llama_token_data_array(data=cell, size=1, selected=-1, sorted=False)
                    L.llama_sampler_apply(g, ctypes.byref(arr))
                    if cell[0].logit == float("-inf"):
                        rejected.append(r["target"])
                        break
                    if tok != m.eos_id:
                        L.llama_sampler_accept(g, tok)
            finally:
                L.llama_sampler_free(g)
    assert not rejected, rejected[:3]


@pytest.mark.slow
def test_the_config_data_is_the_trained_runs_data(tmp_path):
    """config.toml's data (1,400 episodes, seed 0, demo share 0.2) is byte for byte what the world-1 run
    trained on (recipes/glpft/README.md): a generator change that alters it needs a new run."""
    import hashlib
    import tomllib

    cfg = tomllib.loads((RECIPE / "config.toml").read_text(encoding="utf-8"))["data"]
    generate.write(generate.build(cfg["episodes"], cfg["seed"], cfg["demo_share"]), tmp_path)
    digest = hashlib.sha256((tmp_path / "train_planner.json").read_bytes()).hexdigest()
    assert digest == "b8cdc11590417b1feb59867dc5e420d771913c84b298e5f51db0e6a6c88cd16b"
