"""Tool retrieval: BM25 ranking on real tool docs, the loop offering only the top k per step (scripted fake
engine), the caller grammar restricted to the offered tools (also on a real llama.cpp model), tool_top_k
configuration, the trace line, and the eval's tool-set widening."""
from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from umi_edge.engine.fake import FakeEngine, fake_roles
from umi_edge.errors import ConfigError
from umi_edge.events import Call, Observation, Outcome, ToolsOffered
from umi_edge.loop import Limits, run_team
from umi_edge.protocol.grammar import INPUT_SEPARATOR, literal
from umi_edge.registry import load_registry, resolve_set
from umi_edge.team import Team
from umi_edge.tools import ToolSet, tool
from umi_edge.tools.demo import TOOLS as DEMO
from umi_edge.tools.retrieval import BM25Ranker, ToolRetriever, ranking_text, top_k, words
from umi_edge.protocol import Turn

# Distractors in the style of the tool-world generator: mixed naming styles, one-line descriptions, typed
# arguments with examples, words that overlap the demo tools' ("country", "date", "unit", "convert").


@tool
def getProductStock(sku: str, warehouse: str = "main") -> dict:
    """How many units of a product are in stock.

    Args:
        sku: The product code, e.g. "A-1042".
        warehouse: Which warehouse to look in.
    """
    return {"sku": sku, "units": 12}


@tool
def weather_now(city: str) -> dict:
    """Current weather in a city: temperature in Celsius and conditions.

    Args:
        city: The city name, e.g. "Oslo".
    """
    return {"city": city, "temp_c": 7}


@tool
def convertCurrency(amount: float, from_currency: str, to_currency: str) -> dict:
    """Convert an amount of money between currencies at today's rate.

    Args:
        amount: How much money.
        from_currency: ISO code, e.g. "EUR".
        to_currency: ISO code, e.g. "USD".
    """
    return {"amount": amount * 1.1}


@tool
def lookup_country_dialing_code(country: str) -> dict:
    """The international telephone dialing code of a country.

    Args:
        country: The country name.
    """
    return {"code": "+33"}


@tool
def meeting_room_booking(room: str, date: str, hours: int = 1) -> dict:
    """Book a meeting room on a date for some hours.

    Args:
        room: Room id, e.g. "R-12".
        date: YYYY-MM-DD.
        hours: How long.
    """
    return {"booked": True}


@tool
def fetch_employee_record(employee_id: str) -> dict:
    """Look up an employee in the HR directory: name, department, office and manager.

    Args:
        employee_id: e.g. "E-2231".
    """
    return {"name": "Ann"}


@tool
def flightStatus(flight_number: str) -> dict:
    """Departure and arrival times and the gate of a flight.

    Args:
        flight_number: e.g. "LH 454".
    """
    return {"gate": "B12"}


@tool
def recipe_search(ingredient: str, max_minutes: int = 30) -> dict:
    """Find recipes that use an ingredient and cook within a time limit.

    Args:
        ingredient: e.g. "lentils".
        max_minutes: Cooking time limit.
    """
    return {"recipes": []}


DISTRACTORS = ToolSet([getProductStock, weather_now, convertCurrency, lookup_country_dialing_code,
                       meeting_room_booking, fetch_employee_record, flightStatus, recipe_search])
# demo tools interleaved with the distractors, so that set order gives the demo tools no head start
MIXED = ToolSet([getProductStock, DEMO["weekday"], weather_now, DEMO["country_info"], convertCurrency,
                 DEMO["date_diff"], lookup_country_dialing_code, DEMO["calculator"], meeting_room_booking,
                 DEMO["convert_units"], fetch_employee_record, DEMO["date_add"], flightStatus,
                 DEMO["list_countries"], recipe_search])


# --- ranking ---------------------------------------------------------------------------------------------


def test_words_split_identifiers_and_drop_stopwords():
    assert words("getProductStock") == ["get", "product", "stock"]
    assert words("lookup_country_dialing-code HTTPServer") == ["lookup", "country", "dialing", "code", "http", "server"]
    assert words("How many units are in the countries?") == ["unit", "country"]


def top(query, k=3, tools=MIXED, history=()):
    return list(ToolRetriever(tools, k).offer(query, history).names)


@pytest.mark.parametrize("query, wanted", [
    ("What is the population of France?", "country_info"),
    ("How many days from 2023-03-14 to 2023-10-31?", "date_diff"),
    ("What weekday was 1989-11-09?", "weekday"),
    ("How many units of A-1042 are in stock in the main warehouse?", "getProductStock"),
    ("What's the weather in Lisbon right now?", "weather_now"),
    ("What is the dialing code of Peru?", "lookup_country_dialing_code"),
    ("List the countries of South America.", "list_countries"),
    ("Is flight LH 454 on time? Which gate?", "flightStatus"),
])
def test_bm25_ranks_the_needed_tool_high_on_real_docs(query, wanted):
    assert wanted in top(query)


def test_ranking_uses_the_history_thoughts_and_calls_not_observations():
    query = "What is 15% of 2,480 plus the population of France?"
    assert "calculator" not in top(query, k=2)          # nothing in the query names arithmetic
    plan = Turn("assistant", "Plan: 1. look up France with country_info; 2. compute with the calculator.")
    assert "calculator" in top(query, k=2, history=[Turn("user", query), plan])
    noisy = Turn("observation", '{"weather": "rain", "city": "Paris", "temperature": 7}')
    assert top(query, k=2, history=[Turn("user", query), noisy]) == top(query, k=2)


def test_top_k_keeps_set_order_and_breaks_ties_by_position():
    assert top_k([0.0, 3.0, 1.0, 3.0], 2) == [1, 3]
    assert top_k([0.0, 0.0, 0.0], 2) == [0, 1]
    assert top_k([1.0, 2.0], 5) == [0, 1]


def test_retriever_offers_everything_when_the_set_fits():
    r = ToolRetriever(DEMO, 7)
    offer = r.offer("What is 2 + 2?")
    assert not r.active and not offer.filtered and offer.names == DEMO.names
    assert not ToolRetriever(MIXED, 0).active
    with pytest.raises(ConfigError, match="tool_top_k must be a non-negative integer"):
        ToolRetriever(DEMO, -1)
    with pytest.raises(ConfigError):
        ToolRetriever(DEMO, True)


def test_retriever_offer_is_top_k_with_scores_listed_in_the_order_asked_for():
    query = "What is the population of France?"
    given = ToolRetriever(MIXED, 4, order="given").offer(query)
    assert given.filtered and given.total == len(MIXED) and len(given.names) == 4
    assert "country_info" in given.names
    assert list(given.names) == [n for n in MIXED.names if n in given.names]
    assert len(given.scores) == 4 and max(given.scores) == given.scores[given.names.index("country_info")]
    # the same four by relevance: the ranking backwards, the best last, each score still beside its tool
    ranked = ToolRetriever(MIXED, 4).offer(query)
    assert set(ranked.names) == set(given.names) and ranked.names[-1] == "country_info"
    assert list(ranked.scores) == sorted(ranked.scores)
    assert dict(zip(ranked.names, ranked.scores)) == dict(zip(given.names, given.scores))


@pytest.mark.parametrize("query, last", [
    ("How many units of A-1042 are in stock in the main warehouse?", "getProductStock"),
    ("What's the weather in Lisbon right now?", "weather_now"),
    ("Is flight LH 454 on time? Which gate?", "flightStatus"),
    ("Please use recipe_search for me.", "recipe_search"),      # a tool named outright wins
])
def test_relevance_order_lists_the_ranking_backwards(query, last):
    r = ToolRetriever(DISTRACTORS, 8)
    assert not r.active and r.ordered and not r.static
    names = r.offer(query).names
    assert names[-1] == last and sorted(names) == sorted(DISTRACTORS.names)
    # the ranking (ties in the set's order) read from the end: the tools the query does not match at all come
    # first, in reverse set order
    scores = dict(zip(DISTRACTORS.names, r.ranker.scores(query)))
    zero = [n for n in names if scores[n] == 0.0]
    assert zero == [n for n in reversed(DISTRACTORS.names) if n in zero] and len(zero) >= 4
    assert names[:len(zero)] == tuple(zero)


def test_tool_order_holds_for_the_whole_task_and_is_kept_where_asked():
    query = "What's the weather in Lisbon right now?"
    r = ToolRetriever(DISTRACTORS, 0)
    first = r.offer(query).names
    # later steps: the history names other tools, the order is still the query's
    thought = Turn("assistant", "I will call convertCurrency and then flightStatus.")
    assert r.offer(query, [Turn("user", query), thought]).names == first
    assert ToolRetriever(DISTRACTORS, 0, order="given").offer(query).names == DISTRACTORS.names
    kept = ToolSet(list(DISTRACTORS), keep_order=True)      # an order a team was trained on
    assert ToolRetriever(kept, 0).static and ToolRetriever(kept, 0).offer(query).names == DISTRACTORS.names
    assert DEMO.keep_order and ToolRetriever(DEMO, 0).offer("What weekday was 1989-11-09?").names == DEMO.names
    assert ToolRetriever(ToolSet([weather_now]), 0).static
    with pytest.raises(ConfigError, match="tool_order must be one of 'relevance', 'given', not 'best'"):
        ToolRetriever(DEMO, 0, order="best")


# --- the loop --------------------------------------------------------------------------------------------


def run(query, roles, tools=MIXED, **kw):
    events = list(run_team(query, roles, tools, **kw))
    assert isinstance(events[-1], Outcome)
    json.dumps([e.to_dict() for e in events])
    return events


def doc_names(prompt: str) -> list[str]:
    head = prompt.split("The conversation history is:")[0]
    return [json.loads(line)["Name"] for line in head.splitlines() if line.startswith('{"Name"')]


def test_loop_offers_the_planner_and_caller_only_the_top_k():
    roles = fake_roles(
        planner=["I look up France with country_info.\n Next: caller.", "Done.\n Next: conclusion."],
        caller=['Action: country_info\nAction Input: {"country": "France"}'],
        summarizer=["France has 68200000 people."],
    )
    events = run("What is the population of France?", roles, tool_top_k=3, constrained=False)
    offered = {(e.step, e.role): e for e in events if isinstance(e, ToolsOffered)}
    assert set(offered) <= {(1, "planner"), (1, "caller"), (2, "planner")} and (2, "planner") in offered
    assert all(e.total == len(MIXED) and len(e.tools) == 3 and e.ranker == "bm25" for e in offered.values())
    planner = offered[1, "planner"]
    assert "country_info" in planner.tools and planner.text == ", ".join(planner.tools)
    assert doc_names(roles["planner"].prompts[0]) == list(planner.tools)   # the prompt holds exactly the offer
    caller = offered.get((1, "caller"), planner)      # emitted only when the plan changed the ranking
    assert caller is planner or caller.tools != planner.tools
    assert doc_names(roles["caller"].prompts[0]) == list(caller.tools)
    assert "country_info" in caller.tools          # the plan names it
    assert "should be exactly in [" + ", ".join(caller.tools) + "]" in roles["caller"].prompts[0]
    assert events[-1].status == "answered"
    obs = next(e for e in events if isinstance(e, Observation))
    assert obs.ok and json.loads(obs.text)["capital"] == "Paris"


def test_without_top_k_or_with_a_small_set_nothing_changes():
    script = dict(planner=["I call.\n Next: caller.", "Done.\n Next: conclusion."],
                  caller=['Action: calculator\nAction Input: {"expression": "2+2"}'], summarizer=["4"])
    a, b = fake_roles(**script), fake_roles(**script)
    ea = run("What is 2+2?", a, tools=DEMO, constrained=False)
    eb = run("What is 2+2?", b, tools=DEMO, tool_top_k=7, constrained=False)
    assert not any(isinstance(e, ToolsOffered) for e in ea + eb)
    assert a["planner"].prompts == b["planner"].prompts and a["caller"].prompts == b["caller"].prompts
    assert doc_names(a["planner"].prompts[0]) == list(DEMO.names)


def test_caller_is_reranked_with_the_plan_and_its_grammar_admits_only_its_offer():
    query = "What is 15% of 2,480 plus the population of France?"
    roles = fake_roles(
        planner=["Plan: 1. look up France with country_info; 2. compute with the calculator. Step 1 of 2.\n"
                 " Next: caller.",
                 "Step 2 of 2: I compute 0.15 * 2480 + 68200000 with the calculator.\n Next: caller.",
                 "Done.\n Next: conclusion."],
        caller=['Action: country_info\nAction Input: {"country": "France"}',
                'Action: calculator\nAction Input: {"expression": "0.15 * 2480 + 68200000"}'],
        summarizer=["68200372"],
    )
    events = run(query, roles, tool_top_k=2, constrained=True)
    offered = [e for e in events if isinstance(e, ToolsOffered)]
    first_planner = offered[0]
    assert (first_planner.role, "calculator" in first_planner.tools) == ("planner", False)
    callers = [e for e in offered if e.role == "caller"]
    assert callers and "calculator" in callers[0].tools                # the plan named it
    for grammar, prompt in zip(roles["caller"].grammars, roles["caller"].prompts):
        shown = doc_names(prompt)
        assert len(shown) == 2
        for name in MIXED.names:   # the grammar's alternatives are exactly the shown tools
            assert (literal(name + INPUT_SEPARATOR) in grammar) == (name in shown), name
    calls = [e for e in events if isinstance(e, Call)]
    assert [c.tool for c in calls] == ["country_info", "calculator"]
    assert events[-1].status == "answered"


def test_a_call_to_a_tool_not_offered_is_an_unknown_tool():
    roles = fake_roles(planner=["I check the weather.\n Next: caller.", "Give up.\n Next: give up."],
                       caller=['Action: recipe_search\nAction Input: {"ingredient": "rice"}'])
    events = run("What's the weather in Oslo?", roles, tool_top_k=2, constrained=False)
    obs = next(e for e in events if isinstance(e, Observation))
    assert (obs.ok, obs.error) == (False, "unknown_tool")


def test_single_model_protocol_gets_the_top_k_and_a_restricted_grammar():
    backbone = FakeEngine(["I look up France.\nAction: country_info\nAction Input: {\"country\": \"France\"}",
                           "Done.\nconclusion: 68 million."], name="backbone")
    events = run("What is the population of France?", {"backbone": backbone}, tool_top_k=3,
                 protocol="alpha-umi/toolbench-backbone-v1", constrained=True)
    assert [e.role for e in events if isinstance(e, ToolsOffered)] == ["backbone", "backbone"]
    offered = next(e for e in events if isinstance(e, ToolsOffered)).tools
    assert "country_info" in offered
    for name in MIXED.names:
        assert (literal(name + INPUT_SEPARATOR) in backbone.grammars[0]) == (name in offered), name
    assert events[-1].status == "answered"


# --- a real llama.cpp caller under the restricted grammar --------------------------------------------------


def test_random_weight_caller_only_ever_calls_offered_tools(tmp_path):
    pytest.importorskip("llama_cpp")
    from test_grammar import write_byte_vocab

    from umi_edge.engine.base import Sampling
    from umi_edge.engine.llama import LlamaBackend

    path = tmp_path / "random.gguf"
    write_byte_vocab(path, n_embd=32, seed=3)
    with LlamaBackend() as backend:
        model = backend.load_model(path)
        caller = backend.new_role(model, name="caller", n_ctx=4096, n_threads=1,
                                  sampling=Sampling(temperature=1.0, seed=7))
        for query in ("What is the population of France?", "What weekday was 1989-11-09?"):
            planner = FakeEngine(["I should call a tool.\n Next: caller."] * 4, name="planner")
            roles = {"planner": planner, "caller": caller, "summarizer": FakeEngine([], name="summarizer")}
            events = run(query, roles, tool_top_k=2, constrained=True, limits=Limits(max_steps=4))
            offers = {e.step: e.tools for e in events if isinstance(e, ToolsOffered)}
            calls = [e for e in events if isinstance(e, Call)]
            assert len(calls) == 4
            for c in calls:
                assert c.tool in offers[c.step], (c.tool, offers[c.step])


# --- configuration and surfaces ----------------------------------------------------------------------------


def write_models(tmp_path, extra: str):
    p = tmp_path / "models.toml"
    p.write_text(textwrap.dedent(f"""
        [models.m]
        path = "m.gguf"
        [sets.s]
        model = "m"
        {extra}
    """))
    return load_registry(p)


@pytest.fixture
def models(tmp_path):
    return lambda extra: write_models(tmp_path, extra)


def test_tool_top_k_config_defaults_toml_env_flag(models):
    assert resolve_set("default", env={}).tool_top_k == 8      # the shipped team: larger tool sets get the top 8
    assert resolve_set("s", registry=models(""), env={}).tool_top_k == 0
    reg = models("tool_top_k = 8")
    assert resolve_set("s", registry=reg, env={}).tool_top_k == 8
    assert resolve_set("s", registry=reg, env={"UMI_EDGE_TOOL_TOP_K": "5"}).tool_top_k == 5
    assert resolve_set("s", registry=reg, env={"UMI_EDGE_TOOL_TOP_K": "5"}, overrides={"tool_top_k": 0}).tool_top_k == 0


@pytest.mark.parametrize("value, message", [
    ("-1", r"\[sets.s\]: tool_top_k must be a non-negative integer \(0 offers every tool\), not -1"),
    ("true", r"tool_top_k must be int, got True"),
    ('"8"', r"tool_top_k must be int, got '8'"),
    ("2.5", r"tool_top_k must be int, got 2.5"),
])
def test_tool_top_k_config_errors_name_the_set_and_key(models, value, message):
    with pytest.raises(ConfigError, match=message):
        resolve_set("s", registry=models(f"tool_top_k = {value}"), env={})


def test_bad_tool_top_k_in_env_and_team(models):
    with pytest.raises(ConfigError, match=r"UMI_EDGE_TOOL_TOP_K='many' is not an integer"):
        resolve_set("s", registry=models(""), env={"UMI_EDGE_TOOL_TOP_K": "many"})
    with pytest.raises(ConfigError, match="tool_top_k must be a non-negative integer"):
        Team(fake_roles(), DEMO, tool_top_k=-2)


def test_team_passes_tool_top_k_to_the_loop():
    roles = fake_roles(planner=["Give up.\n Next: give up."] * 2)
    team = Team(roles, MIXED, tool_top_k=3)
    events = list(team.run("What is the population of France?"))
    assert [type(e).__name__ for e in events] == ["ToolsOffered", "Plan", "GiveUp", "Outcome"]
    team.tool_top_k = 0
    assert not any(isinstance(e, ToolsOffered) for e in team.run("What is the population of France?"))


def test_trace_line_lists_the_offered_tools():
    from umi_edge.cli import _trace_line

    e = ToolsOffered(step=2, role="caller", text="calculator, weekday", tools=("calculator", "weekday"), total=40,
                     ranker="bm25", scores=(1.5, 0.2))
    assert _trace_line(e) == "[2] tools for the caller: 2 of 40 (bm25)\n    calculator, weekday"


def test_run_flag_rejects_a_negative_top_k():
    from umi_edge.cli import cli

    result = CliRunner().invoke(cli, ["run", "hi", "--tool-top-k", "-1"])
    assert result.exit_code == 2 and "--tool-top-k" in result.output


# --- the eval's tool sets ----------------------------------------------------------------------------------


def test_widen_nests_shuffles_and_complains_when_the_pool_is_short():
    from umi_edge.errors import UmiError
    from umi_edge.eval.retrieval import configs, widen

    base = ToolSet([DEMO["calculator"], DEMO["weekday"]])
    pool = ToolSet([*DISTRACTORS, DEMO["weekday"]])
    five, eight = widen(base, pool, 5, "t1"), widen(base, pool, 8, "t1")
    assert len(five) == 5 and len(eight) == 8 and set(five.names) <= set(eight.names)
    assert {"calculator", "weekday"} <= set(five.names) and five.names == widen(base, pool, 5, "t1").names
    assert widen(base, pool, 2, "t1") is base
    with pytest.raises(UmiError, match="distractor pool has 8 tools"):
        widen(base, pool, 11, "t1")
    assert [c.name for c in configs([32, 8, 100], 8)] == ["all 8", "top 8 of 100", "all 100", "top 8 of 32", "all 32"]
    assert [c.name for c in configs([20, 10], 4)] == ["all 10", "top 4 of 20", "all 20", "top 4 of 10"]


def test_run_config_reports_tokens_recall_and_matches_the_first_prompt_measure():
    from umi_edge.eval import tasks as etasks
    from umi_edge.eval.retrieval import Config, compare, first_prompt_tokens, run_config, widen

    task_list = [
        etasks.parse_task({"id": "pop", "query": "What is the population of France?",
                           "check": {"answer_number": 68200000, "calls": [{"tool": "country_info"}]}}, "t:1"),
        etasks.parse_task({"id": "pizza", "query": "Order a pizza to my house.", "expect": "give_up"}, "t:2"),
    ]
    toolsets = [widen(etasks.resolve_tools(t), DISTRACTORS, 12, t.id) for t in task_list]
    roles = fake_roles(
        planner=["I look up France with country_info.\n Next: caller.", "Done.\n Next: conclusion.",
                 "No tool can order food.\n Next: give up."],
        caller=['Action: country_info\nAction Input: {"country": "France"}'],
        summarizer=["France has 68200000 people."],
    )
    team = Team(roles, DEMO)
    report = run_config(team, task_list, toolsets, Config(12, 3), {})
    assert (report["config"], report["n_tools"], report["top_k"]) == ("top 3 of 12", 12, 3)
    assert report["success_rate"] == 1.0 and report["offered_recall"] == 1.0
    prompts = roles["planner"].prompt_ids
    assert report["planner_prompt_per_task"] == sum(len(p) for p in prompts) / 2
    assert first_prompt_tokens(team, task_list[:1], toolsets[:1], Config(12, 3)) == len(prompts[0])
    everything = first_prompt_tokens(team, task_list[:1], toolsets[:1], Config(12))
    assert everything > len(prompts[0])
    rows = compare([{**report, "config": "all 8", "top_k": 0, "n_tools": 8}, report],
                   {"top 3 of 12": len(prompts[0]), "all 12": everything})
    assert rows == [{"config": "top 3 of 12", "success_points_vs": "all 8", "success_points": 0.0,
                     "prompt_ratio_vs": "all 12", "planner_prompt_ratio": None,
                     "first_prompt_ratio": everything / len(prompts[0])}]


@pytest.mark.parametrize("query, family", [
    ("How many units of A-1042 are in stock in the main warehouse?", "inventory"),
    ("What's the exchange rate from EUR to USD?", "fx_rates"),
    ("Which gate does flight LH 454 leave from?", "flights"),
    ("What is the office of employee Ann Lee?", "hr_directory"),
    ("Is room R-12 free tomorrow?", "meeting_rooms"),
])
def test_bm25_finds_the_family_among_the_generated_tool_world(query, family):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "glpft"
    if not (recipe / "toolworld.py").is_file():
        pytest.skip("recipes/glpft/toolworld.py is not in this checkout")
    import sys

    sys.path.insert(0, str(recipe))
    try:
        import toolworld
    finally:
        sys.path.remove(str(recipe))
    offer = ToolRetriever(toolworld.TOOLS, 8).offer(query)      # 321 tools over 40 families
    assert offer.total == len(toolworld.TOOLS) > 300
    best = offer.names[offer.scores.index(max(offer.scores))]
    assert toolworld.family_of(best) == family, (best, offer.names)


def test_tool_order_is_a_set_key_and_a_limit(tmp_path):
    from umi_edge.registry import load_registry, resolve_set

    models = tmp_path / "models.toml"
    models.write_text('[models.m]\npath = "m.gguf"\n[sets.ref]\nmodel = "m"\ntool_order = "given"\n'
                      '[sets.bad]\nmodel = "m"\ntool_order = "best"\n')
    registry = load_registry(models)
    assert resolve_set("ref", registry=registry).tool_order == "given"
    assert resolve_set("default", registry=registry).tool_order == "relevance" == Limits().tool_order
    with pytest.raises(ConfigError, match=r"\[sets.bad\]: tool_order must be one of 'relevance', 'given', not 'best'"):
        resolve_set("bad", registry=registry)
    with pytest.raises(ConfigError, match="limits: tool_order must be one of"):
        Limits(tool_order=["given"])


def test_one_source_keeps_its_order_and_combined_sources_do_not():
    from umi_edge.tools.sources import open_sources

    assert open_sources(["umi_edge.tools.demo:TOOLS"]).keep_order
    assert not open_sources(["umi_edge.tools.unseen:TOOLS"]).keep_order
    both = open_sources(["umi_edge.tools.demo:TOOLS", DISTRACTORS])
    assert not both.keep_order and both.names == DEMO.names + DISTRACTORS.names


def test_the_loop_lists_the_tools_by_relevance_to_planner_and_caller():
    query = "What's the weather in Lisbon right now?"
    for order, last in (("relevance", "weather_now"), ("given", "recipe_search")):
        roles = fake_roles(planner=["I will look up the weather.\n Next: caller.", "Done.\n Next: give up."],
                           caller=['Action: weather_now\nAction Input: {"city": "Lisbon"}'])
        run(query, roles, tools=DISTRACTORS, limits=Limits(tool_order=order))
        for role in ("planner", "caller"):
            assert doc_names(roles[role].prompts[0])[-1] == last, (order, role)
