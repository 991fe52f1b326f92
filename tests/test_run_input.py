"""`run`'s input and settings, refused before any model loads: empty or non-UTF-8 queries, stdin and
--query-file, non-finite numbers in flags / models.toml / env / the library; the budget's own exit code.
The engines are the scripted fake behind Team.load (the prompts they receive are checked)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from umi_edge.cli import RUN_EXIT_BUDGET, cli
from umi_edge.engine.base import Sampling
from umi_edge.engine.fake import Scripted, fake_roles
from umi_edge.errors import ConfigError
from umi_edge.loop import Limits
from umi_edge.registry import load_registry, resolve_set


@pytest.fixture
def env(tmp_path, monkeypatch):
    """models.toml with a set 'fake' whose engines are scripted; returns (script, engines seen)."""
    (tmp_path / "m.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (tmp_path / "models.toml").write_text(textwrap.dedent("""
        [models.m]
        path = "m.gguf"
        [models.gone]
        path = "gone.gguf"
        [sets.fake]
        model = "m"
        tools = "umi_edge.tools.demo:TOOLS"
        max_tokens = 64
        n_ctx = 512
        [sets.gone]
        model = "gone"
    """))
    script: dict = {}
    seen: list = []

    @contextlib.contextmanager
    def fake_open(spec, paths, *, verbose):
        roles = fake_roles(**script)
        seen.append(roles)
        with contextlib.ExitStack() as stack:
            yield roles, {}, stack

    monkeypatch.setattr("umi_edge.team._open_engines", fake_open)
    monkeypatch.chdir(tmp_path)
    return script, seen


def run(*args, input=None):
    return CliRunner().invoke(cli, ["run", *args], input=input)


def answer(script):
    script.update(planner=["Done. Next: conclusion."], summarizer=["ok."])


def error_line(r) -> str:
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


# --- the query ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_refused_before_loading(env, query):
    """Before: an empty query ran and the team invented an answer. The set 'gone' has no model file: the
    query is refused before that would be noticed."""
    r = run(query, "--set", "gone", "--models", "models.toml")
    assert r.exit_code == 1 and error_line(r) == "Error: the query is empty; give the task to run"
    r = run(query, "--set", "gone", "--models", "models.toml", "--json")
    out = json.loads(r.stdout.splitlines()[-1])
    assert r.exit_code == 1 and (out["status"], out["reason"]) == ("error", "the query is empty; give the task to run")


def test_non_utf8_argv_is_refused_before_loading(env):
    """Before: the query failed with a UnicodeEncodeError message after the models loaded."""
    r = run("caf\udce9 au lait", "--set", "gone", "--models", "models.toml")   # how argv byte 0xe9 arrives
    assert r.exit_code == 1
    assert error_line(r) == "Error: the query is not UTF-8 text (byte 0xe9 at character 3); pass UTF-8 text"


def test_non_utf8_argv_real_process(env, tmp_path):
    exe = Path(sys.executable).with_name("umi-edge")
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e .)")
    p = subprocess.run([os.fsencode(exe), b"run", b"caf\xe9", b"--set", b"gone", b"--models", b"models.toml"],
                       capture_output=True, cwd=tmp_path, env={**os.environ, "LC_ALL": "C.UTF-8"}, timeout=120)
    assert p.returncode == 1 and p.stdout == b""
    assert p.stderr.decode().strip() == "Error: the query is not UTF-8 text (byte 0xe9 at character 3); pass UTF-8 text"


def test_query_from_stdin_and_file(env, tmp_path):
    script, seen = env
    long_query = "Find the population of " + "Spain and " * 30_000 + "France."    # 300 kB, past most ARG_MAX
    answer(script)
    r = run("-", "--set", "fake", "--models", "models.toml", input=("\ufeff" + long_query + "\n").encode())
    assert r.exit_code == 0 and r.stdout == "ok.\n", r.output
    assert f"user: {long_query}</s>" in seen[-1]["planner"].prompts[0]     # BOM and surrounding whitespace dropped
    (tmp_path / "q.txt").write_text("  What is 2 + 40?\n", encoding="utf-8")
    answer(script)
    r = run("--query-file", "q.txt", "--set", "fake", "--models", "models.toml")
    assert r.exit_code == 0 and r.stdout == "ok.\n"
    assert "user: What is 2 + 40?</s>" in seen[-1]["planner"].prompts[0]
    answer(script)
    r = run("--query-file", "-", "--set", "fake", "--models", "models.toml", input=b"via stdin")
    assert r.exit_code == 0 and "user: via stdin</s>" in seen[-1]["planner"].prompts[0]


@pytest.mark.parametrize("args, data, message", [
    (["-"], b"caf\xe9", "Error: the query from stdin is not UTF-8 text (byte 0xe9 at offset 3); convert it, "
                         "e.g. with iconv -t UTF-8"),
    (["-"], b"  \n", "Error: the query from stdin is empty; give the task to run"),
    (["--query-file", "bad.txt"], None, "Error: the query from bad.txt is not UTF-8 text (byte 0xff at offset 0)"),
    (["--query-file", "missing.txt"], None, "Error: cannot read the query file missing.txt: No such file or directory"),
    (["--query-file", "big.txt"], None, "Error: the query from big.txt is over 1048576 bytes"),
])
def test_bad_query_input_is_one_line(env, tmp_path, args, data, message):
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe not utf-8")
    (tmp_path / "big.txt").write_bytes(b"a" * ((1 << 20) + 1))
    r = run(*args, "--set", "gone", "--models", "models.toml", input=data)
    assert r.exit_code == 1 and error_line(r).startswith(message), r.output


def test_query_and_query_file_are_exclusive(env, tmp_path):
    (tmp_path / "q.txt").write_text("q")
    for args in (["q", "--query-file", "q.txt"], []):
        r = run(*args, "--set", "gone", "--models", "models.toml")
        assert r.exit_code == 2 and "exactly one" in r.stderr and "Traceback" not in r.output


def test_library_refuses_empty_and_undecodable_queries(env):
    from umi_edge.team import Team

    with Team(fake_roles(planner=["x Next: conclusion."], summarizer=["y"])) as team:
        for bad, msg in (("", "empty"), (" \n", "empty"), ("a\udcff", "byte 0xff"), (b"q", "must be text")):
            with pytest.raises(ConfigError, match=msg):
                team.run(bad)


# --- the budget's exit code ----------------------------------------------------------------------------

def test_exceeded_budget_has_its_own_exit_code(env):
    """Before: an exceeded budget exited 130, like Ctrl-C."""
    script, _ = env
    script.update(planner=[Scripted("Thinking. Next: conclusion.", delay=5)], summarizer=["late"])
    r = run("q", "--set", "fake", "--models", "models.toml", "--budget", "0.3", "--json")
    assert r.exit_code == RUN_EXIT_BUDGET == 124, r.output
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[-1]["status"] == "cancelled" and "budget" in events[-1]["reason"]
    assert any(e["event"] == "notice" and e["code"] == "budget" for e in events)


# --- non-finite numbers ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--temperature", "nan"), ("--temperature", "inf"), ("--budget", "nan"),
                                         ("--budget", "inf"), ("--temperature", "-nan")])
def test_non_finite_flags_are_usage_errors(env, flag, value):
    """Before: --temperature nan reached llama.cpp's sampler and the process died of SIGABRT."""
    r = run("q", "--set", "gone", "--models", "models.toml", flag, value)
    assert r.exit_code == 2 and f"'{value}' is not a finite number" in r.stderr, r.output
    r = CliRunner().invoke(cli, ["eval", "tasks", "demo", flag if flag != "--budget" else "--temperature", value])
    assert r.exit_code == 2 and "is not a finite number" in r.stderr


@pytest.mark.parametrize("line, key", [
    ("sampling = { temperature = nan }", "temperature"), ("sampling = { temperature = inf }", "temperature"),
    ("sampling = { top_p = -inf }", "top_p"), ("sampling = { min_p = nan }", "min_p"),
    ("budget_seconds = inf", "budget_seconds"), ("tool_timeout = nan", "tool_timeout"),
    ("planner = { sampling = { temperature = nan } }", "temperature"),
])
def test_non_finite_models_toml_values(env, tmp_path, line, key):
    models = tmp_path / "bad.toml"
    models.write_text(f'[models.m]\npath = "m.gguf"\n[sets.s]\nmodel = "m"\n{line}\n')
    with pytest.raises(ConfigError, match=rf"{key} must be a finite number, got (nan|inf|-inf)"):
        resolve_set("s", registry=load_registry(models, env={}), env={})
    r = run("q", "--set", "s", "--models", str(models))
    assert r.exit_code == 1 and "must be a finite number" in error_line(r)


@pytest.mark.parametrize("var, value", [("UMI_EDGE_TEMPERATURE", "nan"), ("UMI_EDGE_TOP_P", "inf"),
                                        ("UMI_EDGE_BUDGET_SECONDS", "nan"), ("UMI_EDGE_TOOL_TIMEOUT", "-inf")])
def test_non_finite_environment_values(var, value):
    with pytest.raises(ConfigError, match=r"must be a finite number"):
        resolve_set("default", env={var: value})


def test_non_finite_library_values():
    for kw in ({"temperature": float("nan")}, {"top_p": float("inf")}, {"min_p": float("-inf")},
               {"temperature": "0.5"}):
        with pytest.raises(ConfigError, match="sampling: .* must be a finite number"):
            Sampling(**kw)
    for kw in ({"budget_seconds": float("nan")}, {"budget_seconds": float("inf")}, {"tool_timeout": float("nan")}):
        with pytest.raises(ConfigError, match="positive, finite number of seconds"):
            Limits(**kw)
    assert Limits(budget_seconds=None).budget_seconds is None and Sampling(temperature=1).temperature == 1


def test_chat_skips_lines_that_are_not_utf8(env, monkeypatch):
    """A line that is not UTF-8 is reported and skipped; the session goes on."""
    script, seen = env
    answer(script)
    r = CliRunner().invoke(cli, ["chat", "--set", "fake", "--models", "models.toml"], input=b"caf\xe9\n")
    assert r.exit_code == 0 and "that line is not UTF-8 text; ignored" in r.stderr, r.output
    lines = iter(["caf\udce9", "What is 2 + 40?"])      # stdin decoded with surrogateescape (C locale)

    def fake_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    answer(script)
    r = CliRunner().invoke(cli, ["chat", "--set", "fake", "--models", "models.toml"])
    assert r.exit_code == 0, r.output
    assert "Error: the query is not UTF-8 text (byte 0xe9 at character 3); pass UTF-8 text; line ignored" in r.stderr
    assert "answer: ok." in r.stdout and len(seen[-1]["planner"].prompts) == 1
