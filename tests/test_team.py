"""Team with the scripted fake engine: construction, run/cancel/close, tools argument forms, Team.load wiring."""
from __future__ import annotations

import contextlib
import threading
import time

import pytest

from umi_edge import Team, tool
from umi_edge.engine.fake import FakeEngine, Scripted, fake_roles
from umi_edge.errors import ConfigError, ModelError, ToolError
from umi_edge.tools import ToolSet


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


def happy_roles():
    return fake_roles(
        planner=["I need the sum. Next: caller.", "I know it now. Next: conclusion."],
        caller=['Action: add\nAction Input: {"a": 2, "b": 40}'],
        summarizer=["The sum is 42."],
    )


def test_team_runs_the_loop_to_an_answer():
    roles = happy_roles()
    with Team(roles, [add]) as team:
        events = list(team.run("What is 2 + 40?"))
    kinds = [e.kind for e in events]
    assert kinds[-1] == "outcome"
    assert [k for k in kinds if k != "notice"] == ["plan", "call", "observation", "plan", "answer", "outcome"]
    obs = next(e for e in events if e.kind == "observation")
    assert obs.ok and obs.text == "42" and obs.tool == "add"
    out = events[-1]
    assert (out.status, out.answer, out.steps) == ("answered", "The sum is 42.", 2)
    # the tool doc reached the planner prompt, and the observation the second one
    assert '"Name": "add"' in roles["planner"].prompts[0]
    assert "observation: 42" in roles["planner"].prompts[1]


def test_roles_must_be_exactly_the_three():
    roles = happy_roles()
    del roles["summarizer"]
    with pytest.raises(ConfigError, match="missing summarizer; protocol .* needs exactly: planner, caller, summarizer"):
        Team(roles)
    with pytest.raises(ConfigError, match="unknown critic"):
        Team({**happy_roles(), "critic": FakeEngine()})


def test_tools_argument_forms():
    decorated = tool(add)
    for form in ([add], add, decorated, ToolSet([add]), [decorated]):
        with Team(happy_roles(), form) as team:
            assert team.tools.names == ("add",)
    # per-run tools replace the team's
    roles = happy_roles()
    with Team(roles, []) as team:
        assert len(team.tools) == 0
        out = list(team.run("q", tools=[add]))[-1]
        assert out.status == "answered"
    with pytest.raises(ToolError, match=r"cannot import 'no_such_module_xyz'"):
        Team(happy_roles(), "no_such_module_xyz:TOOLS")


def test_run_overrides_max_steps():
    roles = fake_roles(planner=["again. Next: caller."] * 5,
                       caller=['Action: add\nAction Input: {"a": 1, "b": 1}'] * 5)
    with Team(roles, [add]) as team:
        out = list(team.run("loop", max_steps=2))[-1]
    assert out.status == "max_steps" and out.steps == 2
    assert len(roles["planner"].prompts) == 2


def test_cancel_from_another_thread():
    roles = fake_roles(planner=[Scripted("slow. Next: caller.", delay=30)])
    with Team(roles, [add]) as team:
        timer = threading.Timer(0.2, team.cancel)
        timer.start()
        t0 = time.monotonic()
        events = list(team.run("q"))
        timer.join()
    assert events[-1].status == "cancelled"
    assert time.monotonic() - t0 < 10


def test_one_task_at_a_time_and_closed_team():
    roles = fake_roles(planner=[Scripted("x Next: give up.")])
    team = Team(roles, [add])
    it = team.run("a")
    next(it)
    with pytest.raises(RuntimeError, match="one task at a time"):
        next(team.run("b"))
    it.close()
    team.close()
    team.close()   # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        team.run("c")


def test_engine_failure_becomes_an_error_outcome():
    roles = fake_roles(planner=[Scripted(error=RuntimeError("boom"))])
    with Team(roles, [add]) as team:
        events = list(team.run("q"))
    assert events[-1].status == "error"
    assert any(e.kind == "error" and "boom" in e.text for e in events)


# --- Team.load wiring, with the engine seam replaced by fakes ----------------------------------------


@pytest.fixture
def fake_set(tmp_path, monkeypatch):
    """A models.toml with a path model and a set, and Team.load's engine construction scripted."""
    (tmp_path / "m.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    models = tmp_path / "models.toml"
    models.write_text(
        '[models.m]\npath = "m.gguf"\n'
        '[sets.fake]\nmodel = "m"\ntools = "umi_edge.tools.demo:TOOLS"\nmax_steps = 3\nmax_tokens = 32\n'
        'n_ctx = 256\ncaller = { max_tokens = 48 }\n'
    )
    seen = {}

    @contextlib.contextmanager
    def fake_open(spec, paths, *, verbose):
        seen.update(spec=spec, paths=paths)
        stack = contextlib.ExitStack()
        stack.callback(seen.__setitem__, "closed", True)
        with stack:
            yield happy_roles(), {}, stack

    monkeypatch.setattr("umi_edge.team._open_engines", fake_open)
    return models, seen


def test_load_resolves_set_tools_and_limits(fake_set, tmp_path):
    models, seen = fake_set
    with Team.load("fake", models=models, tools=[add], temperature=0.3) as team:
        assert team.spec.name == "fake"
        assert {str(p) for p in seen["paths"].values()} == {str(tmp_path / "m.gguf")}
        assert {r.sampling.temperature for r in seen["spec"].roles.values()} == {0.3}
        assert team.limits.max_steps == 3
        assert team.tools.names == ("add",)
        out = list(team.run("What is 2 + 40?"))[-1]
        assert out.status == "answered"
        caller = team.roles["caller"]
        assert caller.max_tokens == [48] and team.roles["planner"].max_tokens == [32, 32]
    assert seen["closed"]


def test_load_checks_cheap_things_before_loading(fake_set, tmp_path):
    models, seen = fake_set
    with pytest.raises(ConfigError, match="unknown set 'nope'"):
        Team.load("nope", models=models)
    with pytest.raises(ToolError, match="cannot import"):
        Team.load("fake", models=models, tools="no_such_module_xyz:TOOLS")
    with pytest.raises(ModelError, match=r"adapter .*missing.gguf does not exist"):
        Team.load("fake", models=models, adapter=str(tmp_path / "missing.gguf"))
    (tmp_path / "lora.gguf").write_bytes(b"not the shipped adapter")
    with pytest.raises(ModelError, match=r"adapter .*lora.gguf does not match its adapter_sha256"):
        Team.load("fake", models=models, caller={"adapter": str(tmp_path / "lora.gguf"), "adapter_sha256": "0" * 64})
    (tmp_path / "m.gguf").unlink()
    with pytest.raises(ModelError, match=r"model 'm': file .*m.gguf does not exist"):
        Team.load("fake", models=models)
    assert "spec" not in seen   # nothing reached the engine


def test_importing_the_api_loads_no_heavy_modules():
    import subprocess
    import sys

    code = ("import sys, umi_edge, umi_edge.team, umi_edge.registry, umi_edge.fetch, umi_edge.cli\n"
            "umi_edge.Team\n"
            "heavy = [m for m in ('llama_cpp', 'torch', 'transformers', 'gguf', 'umi_convert') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_protocol_fails_before_loading(fake_set, tmp_path):
    models, seen = fake_set
    with pytest.raises(ConfigError, match=r"unknown protocol 'chatml/v0'; valid: .*alpha-umi/toolbench-v1"):
        Team.load("fake", models=models, protocol="chatml/v0")
    assert "spec" not in seen


def test_load_takes_a_backend_for_its_engines(tmp_path):
    """The public seam: engines injected without touching the module's llama.cpp opener."""
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    models = tmp_path / "models.toml"
    models.write_text('[models.m]\npath = "m.gguf"\n[sets.fake]\nmodel = "m"\ntools = "umi_edge.tools.demo:TOOLS"\n'
                      'max_steps = 3\nmax_tokens = 32\nn_ctx = 256\n')
    seen = {}

    @contextlib.contextmanager
    def backend(spec, paths):
        seen.update(spec=spec.name, paths=dict(paths))
        yield happy_roles()
        seen["closed"] = True

    with Team.load("fake", models=models, tools=[add], backend=backend) as team:
        assert seen == {"spec": "fake", "paths": {r: tmp_path / "m.gguf" for r in team.roles}}
        assert list(team.run("What is 2 + 40?"))[-1].status == "answered"
    assert seen["closed"]
    roles = happy_roles()
    with Team.load("fake", models=models, tools=[add], backend=lambda spec, paths: roles) as team:
        assert team.roles["planner"] is roles["planner"]     # a plain mapping is used as given
