"""The loop on the real llama.cpp engine with a random-weight model: under the caller grammar every call
names a registered tool with schema-valid JSON, and route completion always yields a route."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")
from test_grammar import write_byte_vocab  # noqa: E402  (byte-level vocab: the worst case for call length)

from umi_edge.engine.base import Sampling  # noqa: E402
from umi_edge.engine.fake import FakeEngine  # noqa: E402
from umi_edge.events import Call, Error, Observation, Outcome, Plan  # noqa: E402
from umi_edge.loop import Limits, run_team  # noqa: E402
from umi_edge.tools import parse_arguments  # noqa: E402
from umi_edge.tools.demo import TOOLS  # noqa: E402


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
    from umi_edge.engine.llama import LlamaBackend

    path = tmp_path_factory.mktemp("tiny") / "random.gguf"
    write_byte_vocab(path, n_embd=32, seed=1)
    with LlamaBackend() as backend:
        model = backend.load_model(path)
        yield {r: backend.new_role(model, name=r, n_ctx=4096, n_threads=1,
                                   sampling=Sampling(temperature=1.0, seed=i + 1))
               for i, r in enumerate(("planner", "caller", "summarizer"))}


def _check(events):
    assert not any(isinstance(e, Error) for e in events), [e.text for e in events if isinstance(e, Error)]
    assert isinstance(events[-1], Outcome) and events[-1].status in ("answered", "gave_up", "max_steps")
    calls = 0
    for e in events:
        if isinstance(e, Plan):
            assert e.route_source in ("model", "grammar")       # route completion never falls back
        if isinstance(e, Call):
            calls += 1
            assert e.tool in TOOLS.names, e.text
            args = json.loads(e.arguments)
            assert parse_arguments(e.arguments, TOOLS[e.tool].parameters) == (args, None), e.text
        if isinstance(e, Observation):
            assert e.error in (None, "raised"), e.text         # a tool may reject a value, never the call
    return calls


def test_random_team_runs_clean(roles):
    limits = Limits(max_steps=3, planner_tokens=24, summarizer_tokens=8)
    for k in range(12):
        _check(list(run_team(f"task {k}: what is 2 + 2?", roles, TOOLS, limits=limits)))


def test_random_caller_always_makes_valid_calls(roles):
    planner = FakeEngine(["I should call a tool.\n Next: caller."] * 24, name="planner")
    team = {"planner": planner, "caller": roles["caller"], "summarizer": roles["summarizer"]}
    calls = sum(_check(list(run_team(f"task {k}", team, TOOLS, limits=Limits(max_steps=8)))) for k in range(3))
    assert calls == 24
