"""The collaborative loop driven by the scripted fake engine: happy path, every failure path, limits, cancel."""
from __future__ import annotations

import json
import threading
import time

import pytest

from umi_edge.engine.fake import FakeEngine, Scripted, fake_roles
from umi_edge.events import Answer, Call, Error, GiveUp, Notice, Observation, Outcome, Plan
from umi_edge.loop import Limits, run_team
from umi_edge.protocol.grammar import route_grammar
from umi_edge.tools import Tool, ToolSet


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: first
        b: second
    """
    return a + b


def mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


TOOLS = ToolSet([add, mul], keep_order=True)   # listed as given: the exact reference prompts below
DOC = ('{"Name": "add", "function": "This is the subfunction for tool \\"add\\", you can use this tool.The description '
       'of this function is: \\"Add two integers.\\"", "input": {"a": "integer, first", "b": "integer, second"}}\n'
       '{"Name": "mul", "function": "This is the subfunction for tool \\"mul\\", you can use this tool.The description '
       'of this function is: \\"Multiply two integers.\\"", "input": {"a": "integer", "b": "integer"}}\n')
HEAD = f"You have assess to the following apis:\n{DOC}\nThe conversation history is:\n"
PLAN_TAIL = ("\nYou are the assistant to plan what to do next and whether is caller's or conclusion's turn to answer.\n"
             "Answer with a following format:\nThe thought of the next step, followed by Next: caller or conclusion "
             "or give up. assistant: ")


def run(query, roles, tools=TOOLS, **kw):
    kw.setdefault("constrained", False)
    events = list(run_team(query, roles, tools, **kw))
    assert isinstance(events[-1], Outcome) and sum(isinstance(e, Outcome) for e in events) == 1
    json.dumps([e.to_dict() for e in events])  # every event is JSON-ready for --json
    return events, events[-1]


def test_happy_path_two_calls_then_answer_with_exact_prompts():
    roles = fake_roles(
        planner=[" I add 2 and 3.\n Next: caller.", "Now multiply by 4. Next: caller. ignored", ": Done.\n Next: conclusion."],
        caller=[' Action: add\nAction Input: {"a": 2, "b": 3}', 'Action: mul\nAction Input: {\n  "a": 5,\n  "b": 4\n}'],
        summarizer=[" The answer is 20. "],
    )
    events, out = run("What is (2+3)*4?", roles)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Plan", "Call", "Observation", "Plan", "Call", "Observation", "Plan", "Answer", "Outcome"]
    assert (out.status, out.answer, out.steps) == ("answered", "The answer is 20.", 3)
    assert [e.text for e in events if isinstance(e, Observation)] == ["5", "20"]
    assert events[3].text == "Now multiply by 4. Next: caller."            # cut after the first marker
    assert events[4].tool == "mul" and events[4].arguments == '{\n  "a": 5,\n  "b": 4\n}'

    history = ("user: What is (2+3)*4?</s>assistant: I add 2 and 3.\n Next: caller.</s>"
               'caller: Action: add\nAction Input: {"a": 2, "b": 3}</s>observation: 5'
               "assistant: Now multiply by 4. Next: caller.</s>"
               'caller: Action: mul\nAction Input: {\n  "a": 5,\n  "b": 4\n}</s>observation: 20')
    assert roles["planner"].prompts[0] == HEAD + "user: What is (2+3)*4?</s>" + PLAN_TAIL
    assert roles["planner"].prompts[2] == HEAD + history + PLAN_TAIL
    assert roles["caller"].prompts[1] == (
        HEAD + history.split("assistant: Now")[0] + "assistant: Now multiply by 4. Next: caller.</s>"
        "\nThe thought of this step is:\nNow multiply by 4. Next: caller.\nBase on the thought make an api call in "
        "the following format:\nAction: the name of api that should be called in this step, should be exactly in "
        "[add, mul],\nAction Input: the api call request. caller: ")
    assert roles["summarizer"].prompts[0] == ("Make a conclusion based on the conversation history:\n" + history
                                              + "assistant: Done.\n Next: conclusion.</s> conclusion: ")
    # token accounting: the planner's later prompts extend earlier ones, so the prefix is reused
    plans = [e for e in events if isinstance(e, Plan)]
    assert plans[0].usage.reused == 0 and plans[2].usage.reused > 0.5 * plans[2].usage.prompt
    assert out.usage_by_role["planner"].generated == sum(p.usage.generated for p in plans)
    assert set(out.usage_by_role) == {"planner", "caller", "summarizer"}
    assert roles["caller"].grammars == [None, None] and roles["caller"].max_tokens == [512, 512]


def test_give_up_stops_without_other_roles():
    roles = fake_roles(planner=["Nothing fits. Next: give up. more"])
    events, out = run("q", roles)
    assert [type(e) for e in events] == [Plan, GiveUp, Outcome]
    assert events[1].text == "Nothing fits. Next: give up." and out.status == "gave_up" and out.answer is None
    assert roles["caller"].prompts == [] and roles["summarizer"].prompts == []


def _one_call(caller_text, tools=TOOLS, limits=Limits()):
    roles = fake_roles(planner=["call Next: caller.", "ok Next: conclusion."], caller=[caller_text], summarizer=["fine"])
    events, out = run("q", roles, tools, limits=limits)
    assert out.status == "answered"
    obs = next(e for e in events if isinstance(e, Observation))
    assert f"observation: {obs.text}\nYou are the assistant" in roles["planner"].prompts[1]   # the model sees it
    return obs, events


def test_unknown_tool_and_unparseable_call_become_observations():
    obs, _ = _one_call("Action: divide\nAction Input: {}")
    assert (obs.ok, obs.error, obs.tool) == (False, "unknown_tool", "divide")
    assert obs.text == '{"error": "No such function name: divide", "response": ""}'
    obs, events = _one_call("I think I will add things")
    assert obs.error == "unknown_tool" and "No such function name: none" in obs.text
    assert next(e for e in events if isinstance(e, Call)).arguments == "{}"


@pytest.mark.parametrize("arguments,expected", [('{"a": 1}', "'b' is a required property"),
                                                ('{"a": "x", "b": 1}', "a: 'x' is not of type 'integer'"),
                                                ("{oops", "not valid JSON")])
def test_bad_arguments_become_observations(arguments, expected):
    obs, _ = _one_call(f"Action: add\nAction Input: {arguments}")
    assert obs.error == "bad_arguments" and expected in obs.text


def test_tool_raises_hangs_or_returns_non_json():
    def boom() -> str:
        raise KeyError("k")

    def hang() -> str:
        time.sleep(30)

    def opaque() -> object:
        return {1, 2}

    tools = ToolSet([boom, hang, opaque])
    assert _one_call("Action: boom\nAction Input: {}", tools)[0].error == "raised"
    t0 = time.monotonic()
    obs, _ = _one_call("Action: hang\nAction Input: {}", tools, Limits(tool_timeout=0.2))
    assert obs.error == "timeout" and "timed out after 0.2 s" in obs.text and time.monotonic() - t0 < 5
    obs, _ = _one_call("Action: opaque\nAction Input: {}", tools)
    assert obs.error == "not_json" and "set" in obs.text


def test_long_observation_is_truncated_and_suffix_match_noticed():
    tools = ToolSet([Tool.from_function(lambda: "x" * 3000, name="dump_for_store")])
    obs, events = _one_call("Action: store\nAction Input: {}", tools)
    assert obs.ok and obs.text == "x" * 1024 + "..." and obs.tool == "dump_for_store"
    assert any(isinstance(e, Notice) and e.code == "suffix_match" for e in events)


def test_max_steps():
    roles = fake_roles(planner=["again Next: caller."] * 2, caller=['Action: add\nAction Input: {"a": 1, "b": 1}'] * 2)
    events, out = run("q", roles, limits=Limits(max_steps=2))
    assert (out.status, out.steps, out.answer) == ("max_steps", 2, None)
    assert sum(isinstance(e, Observation) for e in events) == 2


def test_cancel_from_another_thread_interrupts_generation():
    roles = fake_roles(planner=[Scripted("never Next: caller.", delay=30)])
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    t0 = time.monotonic()
    events, out = run("q", roles, cancel=cancel)
    assert time.monotonic() - t0 < 5
    assert out.status == "cancelled" and isinstance(events[-2], Notice) and events[-2].code == "cancelled"


def test_cancel_between_steps_and_during_a_tool():
    cancel = threading.Event()
    cancel.set()
    events, out = run("q", fake_roles(), cancel=cancel)
    assert out.status == "cancelled" and out.steps == 0

    def hang() -> str:
        time.sleep(30)

    cancel = threading.Event()
    roles = fake_roles(planner=["go Next: caller."], caller=["Action: hang\nAction Input: {}"])
    threading.Timer(0.2, cancel.set).start()
    events, out = run("q", roles, ToolSet([hang]), cancel=cancel)
    assert out.status == "cancelled" and not any(isinstance(e, Observation) for e in events)


def test_wall_clock_budget():
    roles = fake_roles(planner=[Scripted("slow Next: caller.", delay=30)])
    events, out = run("q", roles, limits=Limits(budget_seconds=0.2))
    assert out.status == "cancelled" and "budget" in out.reason and events[-2].code == "budget"


def test_empty_planner_output_is_retried_then_none_routes_to_caller():
    roles = fake_roles(planner=["", " . ", "ok Next: conclusion."], summarizer=["a"])
    events, out = run("q", roles)
    assert out.status == "answered" and events[1].retries == 2 and events[0].code == "planner_empty"
    assert roles["planner"].prompts[0] == roles["planner"].prompts[2]   # the same prompt, regenerated

    roles = fake_roles(planner=[""] * 5 + ["fine Next: conclusion."], caller=["Action: add\nAction Input: {}"],
                       summarizer=["a"])
    events, out = run("q", roles)
    plan = next(e for e in events if isinstance(e, Plan))   # 5 empty generations, then 'none' (protocol.md §4.6)
    assert (plan.text, plan.route, plan.retries, plan.route_source) == ("none Next: caller.", "caller", 4, "default")
    assert len(roles["planner"].prompts) == 6 and roles["caller"].prompts


def test_route_completion_under_the_route_grammar():
    roles = fake_roles(planner=["I will conclude", "\n Next: conclusion."], summarizer=["done"])
    events, out = run("q", roles, complete_route=True, limits=Limits(route_tokens=32))  # the fake: 1 char = 1 token
    plan = events[0]
    assert (plan.text, plan.route, plan.route_source) == ("I will conclude\n Next: conclusion.", "conclusion", "grammar")
    p = roles["planner"]
    assert p.grammars == [None, route_grammar()]
    assert p.prompt_ids[1] == p.prompt_ids[0] + p.tokenize("I will conclude")   # continues the same text
    assert out.status == "answered"
    # switched off: the reference appends " Next: caller."
    roles = fake_roles(planner=["I will conclude"], caller=["Action: add\nAction Input: {}"])
    events, _ = run("q", roles, complete_route=False, limits=Limits(max_steps=1))
    assert (events[0].text, events[0].route_source) == ("I will conclude Next: caller.", "default")


def test_engines_with_a_trunk_adapter_get_the_trunk_length_of_each_prompt():
    """The planner's and caller's trunk (tool docs + history, the caller's with the plan turn) is passed as a
    token count to engines that have a trunk adapter; route completion keeps the planner's; others get none."""
    roles = fake_roles(planner=["I add 2 and 3.\n Next: caller.", "Done", "\n Next: conclusion."],
                       caller=['Action: add\nAction Input: {"a": 2, "b": 3}'], summarizer=["5"], has_trunk=True)
    roles["summarizer"].has_trunk = False
    _, out = run("What is 2+3?", roles, complete_route=True, limits=Limits(route_tokens=32))
    assert out.status == "answered"
    p, c = roles["planner"], roles["caller"]
    assert len(p.trunks) == 3 and p.trunks[2] == p.trunks[1]          # the route completion continues the turn
    for engine, trunks, tail in ((p, p.trunks[:2], PLAN_TAIL), (c, c.trunks, "\nThe thought of this step is:")):
        for ids, n in zip(engine.prompt_ids, trunks):
            text = engine.detokenize(ids)
            assert engine.detokenize(ids[:n]) == text[:text.rindex(tail)]   # everything up to the role's tail
    assert c.detokenize(c.prompt_ids[0][:c.trunks[0]]).endswith("assistant: I add 2 and 3.\n Next: caller.</s>")
    assert roles["summarizer"].trunks == [0]
    plain = fake_roles(planner=["Done\n Next: conclusion."], summarizer=["5"])
    run("q", plain)
    assert plain["planner"].trunks == [0]


def test_context_overflow_keeps_the_last_tokens_and_says_so():
    roles = fake_roles(planner=["x Next: give up."], n_ctx=600)
    events, out = run("q", roles, limits=Limits(planner_tokens=100))
    notice = events[0]
    assert isinstance(notice, Notice) and notice.code == "context_truncated" and "last 492" in notice.text
    assert len(roles["planner"].prompt_ids[0]) == 600 - 100 - 8
    assert roles["planner"].prompts[0].endswith("or give up. assistant: ")
    assert out.status == "gave_up"
    roles = fake_roles(planner=["x Next: give up."], n_ctx=600)   # max_tokens is capped at n_ctx // 2
    run("q", roles, limits=Limits(planner_tokens=512))
    assert roles["planner"].max_tokens == [300] and len(roles["planner"].prompt_ids[0]) == 600 - 300 - 8


def test_our_faults_end_with_an_error_event():
    events, out = run("q", fake_roles(planner=[]))   # the engine fails (no scripted output)
    assert isinstance(events[-2], Error) and out.status == "error" and "no scripted output" in events[-2].text
    events, out = run("q", {"planner": FakeEngine()})
    assert out.status == "error" and "no engine for role(s) caller, summarizer" in out.reason
    events, out = run("q", fake_roles(), tools=ToolSet.from_toolbench([{"Name": "t", "function": "", "input": {}}]))
    assert out.status == "error" and "no callable or dispatcher" in out.reason
    roles = fake_roles(planner=[Scripted(error=OSError("device lost"))])
    events, out = run("q", roles)
    assert out.status == "error" and events[-2].error_type == "OSError"


def test_constrained_caller_gets_the_tool_grammar():
    pytest.importorskip("llama_cpp")
    from umi_edge.protocol.grammar import caller_grammar

    roles = fake_roles(planner=["go Next: caller."], caller=['Action: add\nAction Input: {"a": 1, "b": 2}'])
    run("q", roles, constrained=True, limits=Limits(max_steps=1))
    assert roles["caller"].grammars == [caller_grammar(TOOLS, max_tokens=512)]
    assert roles["planner"].grammars == [None]


def test_limits_are_validated_and_length_stops_are_noticed():
    from umi_edge.errors import ConfigError

    for bad in ({"max_steps": 0}, {"caller_tokens": -1}, {"tool_timeout": 0}, {"budget_seconds": -1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Limits(**bad)
    assert Limits(budget_seconds=None).budget_seconds is None
    roles = fake_roles(planner=["go Next: caller."], caller=['Action: add\nAction Input: {"a": 1, "b": 2}'])
    events, out = run("q", roles, limits=Limits(max_steps=1, caller_tokens=30))
    notice = next(e for e in events if isinstance(e, Notice))
    assert (notice.code, notice.role) == ("max_tokens", "caller")
    assert next(e for e in events if isinstance(e, Observation)).error == "bad_arguments"   # the cut call


def test_event_dicts_for_json_output():
    roles = fake_roles(planner=["done Next: conclusion."], summarizer=["42"])
    events, out = run("q", roles)
    d = out.to_dict()
    assert d["event"] == "outcome" and (d["status"], d["answer"], d["steps"]) == ("answered", "42", 1)
    assert set(d["usage"]) == {"prompt", "reused", "evaluated", "generated", "forced", "truncated",
                               "prompt_seconds", "decode_seconds"}
    assert set(d["usage_by_role"]) == {"planner", "summarizer"}
    assert events[0].to_dict()["event"] == "plan" and events[1].to_dict()["event"] == "answer"


# --- the single-model baseline (backbone protocol) ----------------------------------------------------


def test_backbone_protocol_runs_one_model_per_step_with_exact_history():
    engine = FakeEngine([' I add 2 and 3.\nAction: add\nAction Input: {"a": 2, "b": 3}',
                         "The sum is 5.\nconclusion: (2+3) is 5."], name="backbone")
    events, out = run("What is 2+3?", {"backbone": engine}, protocol="alpha-umi/toolbench-backbone-v1")
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Plan", "Call", "Observation", "Plan", "Answer", "Outcome"]
    assert (out.status, out.answer, out.steps) == ("answered", "(2+3) is 5.", 2)
    call, obs = events[1], events[2]
    assert (call.role, call.tool, json.loads(call.arguments)) == ("backbone", "add", {"a": 2, "b": 3})
    assert obs.ok and obs.text == "5"
    # step 2 sees step 1 as one assistant turn (thought + call) then the observation (protocol.md §3.1)
    assert ('user: What is 2+3?</s>assistant: I add 2 and 3.\nAction: add\nAction Input: {"a": 2, "b": 3}</s>'
            'observation: 5\nYou should answer') in engine.prompts[1]
    assert engine.prompts[1].endswith(" assistant: ")


def test_backbone_protocol_give_up_and_bad_call():
    engine = FakeEngine(["No tool for that.\nAction: weather\nAction Input: {}",
                         "I cannot do this.\nconclusion: give up."], name="backbone")
    events, out = run("Weather?", {"backbone": engine}, protocol="alpha-umi/toolbench-backbone-v1")
    obs = next(e for e in events if isinstance(e, Observation))
    assert not obs.ok and "weather" in obs.text
    assert out.status == "gave_up" and isinstance(events[-2], GiveUp)


def test_backbone_protocol_constrained_sends_the_backbone_grammar():
    engine = FakeEngine(["Done.\nconclusion: 4"], name="backbone")
    _, out = run("2+2?", {"backbone": engine}, protocol="alpha-umi/toolbench-backbone-v1", constrained=True)
    assert out.answer == "4"
    assert engine.grammars[0].startswith('root ::= thought "\\n" ( call | "conclusion: " answer )')
    assert '"Action: " ( tool0 | tool1 )' in engine.grammars[0]


def test_backbone_budget_too_small_for_thought_and_call_is_a_config_error():
    engine = FakeEngine(["x\nconclusion: y"], name="backbone")
    _, out = run("q", {"backbone": engine}, protocol="alpha-umi/toolbench-backbone-v1", constrained=True,
                 limits=Limits(backbone_tokens=100))
    assert out.status == "error" and "backbone max_tokens 100 leaves no room" in out.reason
