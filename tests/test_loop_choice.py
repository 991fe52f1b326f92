"""run_team's `history` (a task resumed from its turns) and `choice` (what the first planner turn may do: the
routes and the tools of OpenAI's tool_choice), with the scripted fake engine and a random llama.cpp model."""
from __future__ import annotations

import json

import pytest

from umi_edge.engine.fake import fake_roles
from umi_edge.errors import ConfigError
from umi_edge.loop import Choice, Limits, run_team
from umi_edge.protocol import Turn
from umi_edge.protocol.grammar import caller_grammar, route_grammar
from umi_edge.tools import ToolSet

from serve_util import add, mul

PLAN1 = "I need the sum.\n Next: caller."
CALL1 = 'Action: add\nAction Input: {"a": 2, "b": 40}'
PLAN2 = "I know it now.\n Next: conclusion."


def test_a_resumed_task_sends_the_prompts_of_an_unbroken_one():
    whole = fake_roles(planner=[PLAN1, PLAN2], caller=[CALL1], summarizer=["42."])
    events = list(run_team("What is 2 + 40?", whole, [add, mul]))
    assert events[-1].answer == "42."
    resumed = fake_roles(planner=[PLAN2], summarizer=["42."])
    history = [Turn("assistant", PLAN1), Turn("caller", CALL1), Turn("observation", "42")]
    again = list(run_team("What is 2 + 40?", resumed, [add, mul], history=history))
    assert resumed["planner"].prompts == whole["planner"].prompts[1:]
    assert resumed["summarizer"].prompts == whole["summarizer"].prompts
    assert [e.step for e in again if e.kind in ("plan", "answer")] == [2, 2]
    assert again[-1].steps == 2 and again[-1].answer == "42."


def test_steps_count_from_the_last_user_turn_and_stop_at_max_steps():
    history = [Turn("assistant", PLAN1), Turn("caller", CALL1), Turn("observation", "42"),
               Turn("conclusion", "42."), Turn("user", "and times 2?")]
    roles = fake_roles(planner=[PLAN2], summarizer=["84."])
    events = list(run_team("What is 2 + 40?", roles, [add], history=history))
    assert events[0].step == 1 and events[-1].answer == "84."
    assert "conclusion: 42.</s>user: and times 2?</s>" in roles["planner"].prompts[0]
    full = [Turn("assistant", PLAN1), Turn("caller", CALL1), Turn("observation", "42")] * 2
    out = list(run_team("q", fake_roles(), [add], history=full, limits=Limits(max_steps=2)))
    assert out[-1].status == "max_steps" and out[-1].steps == 2


def test_required_turns_a_conclusion_into_a_call():
    roles = fake_roles(planner=["I know it.\n Next: conclusion.", "\n Next: caller.", PLAN2],
                       caller=[CALL1], summarizer=["42."])
    events = list(run_team("What is 2 + 40?", roles, [add], choice=Choice(routes=("caller",))))
    plan = events[0]
    assert (plan.kind, plan.route, plan.route_source, plan.text) == ("plan", "caller", "choice",
                                                                     "I know it.\n Next: caller.")
    planner = roles["planner"]
    # the completion continues the prompt with the thought's own tokens, under a caller-only grammar
    assert planner.prompts[1] == planner.prompts[0] + "I know it."
    assert planner.grammars[1] == route_grammar(("caller",))
    assert planner.prompt_ids[1][:len(planner.prompt_ids[0])] == planner.prompt_ids[0]
    # only the first turn is constrained: the next one concludes as the model says
    assert [e.route for e in events if e.kind == "plan"] == ["caller", "conclusion"]
    assert events[-1].answer == "42."


def test_none_turns_a_call_into_a_conclusion():
    roles = fake_roles(planner=[PLAN1, " Next: conclusion."], summarizer=["I cannot add without tools."])
    events = list(run_team("q", roles, [add], choice=Choice(routes=("conclusion", "give_up"))))
    assert events[0].route == "conclusion" and events[0].text == "I need the sum. Next: conclusion."
    assert roles["planner"].grammars[1] == route_grammar(("conclusion", "give_up"))
    assert not roles["caller"].prompts and events[-1].status == "answered"


def test_an_allowed_route_is_left_alone_and_a_missing_marker_completes_within_the_choice():
    roles = fake_roles(planner=[PLAN1], caller=[CALL1])
    events = list(run_team("q", roles, [add], choice=Choice(routes=("caller",)), limits=Limits(max_steps=1)))
    assert events[0].route_source == "model" and len(roles["planner"].prompts) == 1
    roles = fake_roles(planner=["I need the sum.", "\n Next: conclusion."], summarizer=["x"])
    events = list(run_team("q", roles, [add], choice=Choice(routes=("conclusion",))))
    assert events[0].route_source == "grammar" and roles["planner"].grammars[1] == route_grammar(("conclusion",))


def test_a_named_tool_bounds_the_first_call_only():
    roles = fake_roles(planner=[PLAN1, PLAN1, PLAN2], caller=['Action: mul\nAction Input: {"a": 2, "b": 3}', CALL1],
                       summarizer=["6"])
    tools = ToolSet([add, mul], keep_order=True)     # listed as given, so the grammars below compare as written
    events = list(run_team("q", roles, tools, choice=Choice(routes=("caller",), tools=("mul",))))
    grammars = roles["caller"].grammars
    assert grammars[0] == caller_grammar(ToolSet([mul]), max_tokens=512)
    assert grammars[1] == caller_grammar(ToolSet([add, mul]), max_tokens=512)
    assert '"Name": "add"' in roles["caller"].prompts[0]       # the docs still show every tool
    assert [e.text for e in events if e.kind == "observation"] == ["6", "42"]


def test_bad_choices_are_configuration_errors():
    with pytest.raises(ConfigError, match="routes must be some of"):
        Choice(routes=("tool",))
    with pytest.raises(ConfigError, match="routes must be some of"):
        Choice(routes=())
    with pytest.raises(ConfigError, match="needs the caller route"):
        Choice(routes=("conclusion",), tools=("add",))
    out = list(run_team("q", fake_roles(), [add], choice=Choice(tools=("nope",))))[-1]
    assert out.status == "error" and "no tool named nope" in out.reason
    out = list(run_team("q", fake_roles(), [add], constrained=False, choice=Choice(tools=("add",))))[-1]
    assert out.status == "error" and "unconstrained" in out.reason


def test_the_backbone_follows_a_choice_under_its_grammar():
    from umi_edge.engine.fake import FakeEngine

    engine = FakeEngine(['I add.\nAction: add\nAction Input: {"a": 1, "b": 2}', "done\nconclusion: 3"])
    events = list(run_team("q", {"backbone": engine}, [add, mul], protocol="alpha-umi/toolbench-backbone-v1",
                           choice=Choice(routes=("caller",), tools=("add",))))
    assert events[-1].answer == "3"
    first, second = engine.grammars
    assert 'root ::= thought "\\n" ( call )' in first and "mul" not in first
    assert "( call | \"conclusion: \" answer )" in second and "mul" in second


# --- llama.cpp: a random model follows the choice ---------------------------------------------------------

@pytest.fixture(scope="module")
def random_roles(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from test_grammar import write_byte_vocab

    from umi_edge.engine.base import Sampling
    from umi_edge.engine.llama import LlamaBackend

    path = tmp_path_factory.mktemp("tiny") / "random.gguf"
    write_byte_vocab(path, n_embd=32, seed=5)
    with LlamaBackend() as backend:
        model = backend.load_model(path)
        yield {r: backend.new_role(model, name=r, n_ctx=2048, n_threads=1,
                                   sampling=Sampling(temperature=1.0, seed=i + 11))
               for i, r in enumerate(("planner", "caller", "summarizer"))}


def test_random_model_follows_every_choice(random_roles):
    from umi_edge.tools.demo import TOOLS

    limits = Limits(max_steps=1, planner_tokens=24, summarizer_tokens=8)
    for k in range(4):
        events = list(run_team(f"t{k}", random_roles, TOOLS, limits=limits,
                               choice=Choice(routes=("caller",), tools=("calculator",))))
        plan = next(e for e in events if e.kind == "plan")
        call = next(e for e in events if e.kind == "call")
        assert plan.route == "caller" and plan.text.endswith("Next: caller.")
        assert call.tool == "calculator" and isinstance(json.loads(call.arguments), dict)
        events = list(run_team(f"t{k}", random_roles, TOOLS, limits=limits,
                               choice=Choice(routes=("conclusion", "give_up"))))
        assert events[-1].status in ("answered", "gave_up"), events[-1].reason
