"""α-UMi protocol rendering, routing, parsing and encoding (protocol.md §3-§5), byte for byte."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden_prompts import CALLER_37, PLANNER_37, SUMMARIZER_37
from umi_edge.errors import ConfigError
from umi_edge.protocol import ALPHA_UMI, AlphaUmi, Turn, get_protocol
from umi_edge.protocol import alpha_umi as au
from umi_edge.tools import Tool, ToolSet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TRAIN = SHARED / "data" / "alpha-umi" / "train-example"

DOCS_37 = [
    {"Name": "get_weather_for_weatherapi",
     "function": 'This is the subfunction for tool "weatherapi", you can use this tool.'
                 'The description of this function is: "Current weather for a city"',
     "input": {"city": "string, City name"}},
    {"Name": "get_time_for_timeapi", "function": 'This is the subfunction for tool "timeapi", you can use this tool.',
     "input": {}},
]
HISTORY_37 = [
    Turn("user", "What is the weather in Paris?"),
    Turn("assistant", "I should call get_weather_for_weatherapi with city Paris.\n Next: caller."),
    Turn("caller", 'Action: get_weather_for_weatherapi\nAction Input: {\n  "city": "Paris"\n}'),
    Turn("observation", "{'temp_c': 18, 'condition': 'Cloudy'}"),
]


def test_worked_example_byte_for_byte():
    p = AlphaUmi()
    assert p.planner_prompt(DOCS_37, HISTORY_37) == PLANNER_37
    assert p.caller_prompt(DOCS_37, HISTORY_37, "I should call get_time_for_timeapi.\n Next: caller.") == CALLER_37
    assert p.summarizer_prompt(HISTORY_37, "The weather was returned, I can now answer.\n Next: conclusion.") \
        == SUMMARIZER_37


def test_tools_render_the_training_doc_format():
    weather = Tool.from_openai(
        {"type": "function", "function": {"name": "get_weather_for_weatherapi", "description": "Current weather for a city",
                                          "parameters": {"type": "object", "properties": {
                                              "city": {"type": "string", "description": "City name"}}}}},
        lambda city: city, toolkit="weatherapi")
    clock = Tool.from_openai({"name": "get_time_for_timeapi"}, lambda: "12:00", toolkit="timeapi")
    assert ToolSet([weather, clock]).docs() == DOCS_37
    assert AlphaUmi().planner_prompt(ToolSet([weather, clock]).docs(), HISTORY_37) == PLANNER_37


def test_doc_truncation_and_input_rules():
    t = Tool(name="t", description="x" * 400, toolkit="kit",
             parameters={"type": "object", "properties": {"a": {"type": "string", "description": "d" * 300},
                                                          "b": {"type": "integer"}, "c": {"description": ""}}})
    doc = t.doc(150)
    assert len(doc["function"]) == 150 and doc["function"].startswith('This is the subfunction for tool "kit"')
    assert len(t.doc()["function"]) == 256
    assert doc["input"] == {"a": "string, " + "d" * 256, "b": "integer", "c": "string, "}
    # json.dumps defaults: ensure_ascii, ", " / ": " separators, key order Name, function, input
    assert au.render_doc([{"Name": "é", "function": "", "input": {}}]) == \
        '{"Name": "\\u00e9", "function": "", "input": {}}\n'


def _records(role):
    path = TRAIN / f"train_{role}.json"
    if not path.is_file():
        pytest.skip(f"{path} not found (the shared/ folder sits next to the repository)")
    return json.loads(path.read_text())


@pytest.mark.parametrize("role,count", [("planner", 79), ("caller", 59), ("summarizer", 14)])
def test_train_examples_reproduce_input(role, count):
    p = AlphaUmi()
    records = _records(role)
    assert len(records) == count
    for i, r in enumerate(records):
        docs = ToolSet.from_toolbench(r["tools"]).docs()  # via the tool registry: ToolBench docs render verbatim
        assert docs == r["tools"]
        if role == "planner":
            got = p.planner_prompt(docs, r["history"])
        elif role == "caller":
            got = p.caller_prompt(docs, r["history"][:-1], r["history"][-1]["value"])
        else:
            got = p.summarizer_prompt(r["history"][:-1], r["history"][-1]["value"])
        assert got == r["input"], f"{role} record {i}"


def test_history_containing_placeholders_renders_literally():
    p = AlphaUmi()
    user = "Echo {thought} and {tool_names} please"
    plan = "Use the tool.\n Next: caller."
    got = p.caller_prompt(DOCS_37[:1], [Turn("user", user)], plan)
    # inference order doc -> tool_names -> thought -> history: the history is inserted last, untouched
    expected = au.CALLER_TEMPLATE.replace("{doc}", au.render_doc(DOCS_37[:1])) \
        .replace("{tool_names}", "get_weather_for_weatherapi").replace("{thought}", plan) \
        .replace("{history}", f"user: {user}</s>assistant: {plan}</s>") + " caller: "
    assert got == expected
    assert got.count("Echo {thought} and {tool_names} please") == 1
    # training order (history before thought) would have substituted the user's literal {thought}
    assert au.fill("{thought}|{history}", thought="T", history="{thought}") == "T|{thought}"


def test_history_rendering_rules():
    h = au.render_history([{"from": "user", "value": "q"}, {"from": "assistant", "value": "p Next: caller."},
                           {"from": "caller", "value": "Action: a\nAction Input: {}"},
                           {"from": "observation", "value": "obs"}, {"from": "conclusion", "value": "done"}])
    assert h == "user: q</s>assistant: p Next: caller.</s>caller: Action: a\nAction Input: {}</s>observation: obs" \
                "conclusion: done</s>"
    with pytest.raises(ValueError):
        au.render_history([Turn("robot", "x")])


def test_switches_system_prefix_and_plan_label():
    p = AlphaUmi(system_prefix=True, plan_label="planner")
    s = p.summarizer_prompt([Turn("user", "q")], "ok Next: conclusion.")
    assert s == "system: Make a conclusion based on the conversation history:\nuser: q</s>planner: ok Next: conclusion.</s>" \
                " conclusion: "
    assert p.planner_prompt([], []).startswith("system: You have assess")
    assert AlphaUmi().planner_prompt([], []).endswith("or give up. assistant: ")


def test_registry():
    assert ALPHA_UMI == "alpha-umi/toolbench-v1"
    assert get_protocol().name == ALPHA_UMI
    assert get_protocol(ALPHA_UMI, doc_chars=150).doc_chars == 150
    with pytest.raises(ConfigError, match="unknown protocol .nope.; valid: alpha-umi/toolbench-backbone-v1, alpha-umi/toolbench-v1"):
        get_protocol("nope")
    with pytest.raises(ConfigError, match="plan_label"):
        get_protocol(plan_label="caller")
    with pytest.raises(ConfigError):
        get_protocol(colour="red")


@pytest.mark.parametrize("text,kind,plan,marker", [
    ("think\n Next: caller.", "caller", "think\n Next: caller.", True),
    ("a Next: conclusion. trailing text", "conclusion", "a Next: conclusion.", True),
    ("a Next: caller. then Next: give up.", "give_up", "a Next: caller. then Next: give up.", True),
    ("a Next: caller. b Next: conclusion.", "conclusion", "a Next: caller. b Next: conclusion.", True),
    ("Next: give up. Next: give up.", "give_up", "Next: give up.", True),
    ("no marker", "caller", "no marker Next: caller.", False),
    ("Next: caller", "caller", "Next: caller Next: caller.", False),     # period required
    ("next: Caller.", "caller", "next: Caller. Next: caller.", False),   # case-sensitive
])
def test_route(text, kind, plan, marker):
    r = au.route(text)
    assert (r.kind, r.plan, r.marker) == (kind, plan, marker)


@pytest.mark.parametrize("raw,out", [("  hello ", "hello"), (": hi", "hi"), ("", "none"), (" . ", "none"),
                                     (",", "none"), (": .", "none"), ("::", "::")])
def test_postprocess_planner(raw, out):
    assert au.postprocess_planner(raw) == out
    assert au.is_empty(raw) == (out == "none")


@pytest.mark.parametrize("text,action,args", [
    ('Action: get_x\nAction Input: {"a": 1}', "get_x", '{"a": 1}'),
    ("Action: a\nAction Input: {}\nAction: b\nAction Input: {\"k\": 2}", "b", '{"k": 2}'),
    ("Action: only_name", "only_name", "{}"),
    ("Action Input: {\"x\": 1}", "none", '{"x": 1}'),
    ("gibberish", "none", "{}"),
    ("caller: Action: x\nAction Input: 5</s>Action: y", "x", "5"),
    ("Action:   spaced   Action Input:   [1]  ", "spaced", "[1]"),
    ("Action: a\nAction Input: {\"s\": \"Action: b\"}", "b\"}", "{\"s\": \"Action: b\"}"),  # last wins (§5.3)
])
def test_parse_call(text, action, args):
    c = au.parse_call(text)
    assert (c.action, c.arguments) == (action, args)


def test_truncate_observation():
    assert au.truncate_observation("x" * 1024) == "x" * 1024
    assert au.truncate_observation("x" * 1025) == "x" * 1024 + "..."
    assert AlphaUmi(observation_chars=3).truncate_observation("abcd") == "abc..."


def test_encode_splits_on_eos_and_skips_empty_segments():
    tok = lambda s: [ord(c) for c in s]  # noqa: E731
    assert au.encode("a</s>caller: x", tok, 1, 2) == [1, 97, 2, *tok("caller: x")]
    assert au.encode("</s></s>", tok, 1, 2) == [1, 2, 2]
    assert au.encode("", tok, 1, 2) == [1]
    calls = []
    au.encode("p</s> conclusion: ", lambda s: calls.append(s) or [0], 1, 2)
    assert calls == ["p", " conclusion: "]  # each segment tokenized on its own (own dummy prefix)


def test_parse_call_with_registered_names_uses_the_structure():
    text = 'Action: calc\nAction Input: {"expression": "Action: x\\nAction Input: 1"}'
    assert au.parse_call(text).action == "x\\n"     # the reference's last-occurrence rule misreads it
    c = au.parse_call(text, ["calc", "calculator"])
    assert (c.action, c.arguments) == ("calc", '{"expression": "Action: x\\nAction Input: 1"}')
    c = au.parse_call(' Action: calculator\nAction Input: {}', ["calc", "calculator"])   # longest name first
    assert (c.action, c.arguments) == ("calculator", "{}")
    assert au.parse_call("Action: other\nAction Input: {}", ["calc"]).action == "other"  # falls back


def test_diversity_prompt_reproduces_the_training_turns():
    turns = {t["value"] for r in _records("planner") for t in r["history"]
             if t["from"] == "user" and t["value"].startswith("This is not the first time")}
    assert len(turns) == 11
    head = "Here are some previous actions candidates:\n"
    for text in turns:
        start = text.index(head) + len(head)
        candidates, end = json.JSONDecoder().raw_decode(text, start)
        rest = text[end + 1:]
        observation = None
        if rest.startswith("again, your former observation: "):
            observation = rest[len("again, your former observation: "):rest.rindex("\n\nRemember you are")]
        assert au.diversity_prompt(candidates, observation) == text


@pytest.mark.parametrize("options", [{}, {"system_prefix": True, "plan_label": "planner"}])
def test_trunk_is_the_shared_head_of_the_planner_and_caller_prompts(options):
    p = AlphaUmi(**options)
    plan = "I should call get_time_for_timeapi.\n Next: caller."
    planner, caller = p.planner_prompt(DOCS_37, HISTORY_37), p.caller_prompt(DOCS_37, HISTORY_37, plan)
    trunk, caller_trunk = p.trunk(DOCS_37, HISTORY_37), p.trunk(DOCS_37, HISTORY_37, plan)
    assert planner.startswith(trunk) and caller.startswith(caller_trunk)
    # the trunk ends with the history: what follows is the role's own instructions and cue
    assert planner[len(trunk):].startswith("\nYou are the assistant to plan")
    assert caller[len(caller_trunk):].startswith("\nThe thought of this step is:\n" + plan)
    # the caller's trunk is the planner's trunk plus the plan turn: one KV prefix serves both roles
    assert caller_trunk.startswith(trunk) and caller_trunk[len(trunk):].endswith(f": {plan}</s>")
