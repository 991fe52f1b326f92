"""`umi-edge serve` with real llama.cpp decoding: a random-weight tiny model in process (fast), the CLI as a
subprocess, and the shipped SmolLM2 default team through the openai client (slow)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

from serve_util import LiveServer, http  # noqa: E402

from umi_edge import Team  # noqa: E402

UMI_EDGE = str(Path(sys.executable).with_name("umi-edge"))    # the console script of this environment
from umi_edge.loop import Limits  # noqa: E402
from umi_edge.tools.demo import TOOLS  # noqa: E402

WEATHER = {"type": "function", "function": {
    "name": "weather", "description": "The weather in a city now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city", "days"]}}}


def openai_spec(tool) -> dict:
    return {"type": "function", "function": {"name": tool.name, "description": tool.description,
                                             "parameters": dict(tool.parameters)}}


@pytest.fixture(scope="module")
def tiny_roles(tmp_path_factory):
    """Three contexts on a random byte-vocab model (near-uniform output: the worst case)."""
    from test_grammar import write_byte_vocab

    from umi_edge.engine.base import Sampling
    from umi_edge.engine.llama import LlamaBackend

    path = tmp_path_factory.mktemp("tiny") / "random.gguf"
    write_byte_vocab(path, n_embd=32, seed=9)
    with LlamaBackend() as backend:
        model = backend.load_model(path)
        yield {r: backend.new_role(model, name=r, n_ctx=4096, n_threads=1,
                                   sampling=Sampling(temperature=1.0, seed=i + 21))
               for i, r in enumerate(("planner", "caller", "summarizer"))}


@pytest.fixture
def tiny(tiny_roles):
    """A Team on those contexts (the server closes its teams when it stops; the contexts outlive it)."""
    return Team(tiny_roles, TOOLS, limits=Limits(max_steps=2, planner_tokens=32, caller_tokens=160,
                                                 summarizer_tokens=24))


def test_real_decoding_streams_schema_valid_call_arguments(tiny):
    schema = WEATHER["function"]["parameters"]
    with LiveServer({"tiny": tiny}) as s:
        c = s.client()
        for k in range(3):
            stream = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"weather {k}"}],
                                               tools=[WEATHER], tool_choice="required", stream=True)
            calls, finish = [], None
            for chunk in stream:
                if chunk.choices:
                    calls += chunk.choices[0].delta.tool_calls or []
                    finish = chunk.choices[0].finish_reason or finish
            assert finish == "tool_calls" and all(tc.index == 0 for tc in calls)
            assert calls[0].id and calls[0].function.name == "weather"
            args = json.loads("".join(tc.function.arguments or "" for tc in calls))
            jsonschema.validate(args, schema)
            assert len(calls) > 2            # real tokens streamed, not one final blob


def test_real_decoding_round_trip_with_a_named_tool(tiny):
    calc = openai_spec(TOOLS["calculator"])
    units = openai_spec(TOOLS["convert_units"])
    with LiveServer({"tiny": tiny}) as s:
        c = s.client()
        messages = [{"role": "user", "content": "What is 6 * 7?"}]
        r = c.chat.completions.create(model="tiny", messages=messages, tools=[calc, units],
                                      tool_choice={"type": "function", "function": {"name": "calculator"}})
        msg = r.choices[0].message
        assert r.choices[0].finish_reason == "tool_calls" and msg.tool_calls[0].function.name == "calculator"
        jsonschema.validate(json.loads(msg.tool_calls[0].function.arguments), calc["function"]["parameters"])
        assert msg.content.endswith("Next: caller.")
        messages += [msg.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": '{"result": 42}'}]
        r = c.chat.completions.create(model="tiny", messages=messages, tools=[calc, units], tool_choice="none")
        assert r.choices[0].finish_reason == "stop" and r.model_extra["umi"]["status"] in ("answered", "gave_up")
        assert r.model_extra["umi"]["steps"] == 2
        usage = r.usage.model_extra["roles"]
        assert usage["planner"]["cached_tokens"] > 0      # the rebuilt history re-used the planner's KV


# --- the CLI ------------------------------------------------------------------------------------------------

@pytest.fixture
def tiny_models_toml(tmp_path):
    from test_grammar import write_byte_vocab

    write_byte_vocab(tmp_path / "random.gguf", n_embd=32, seed=4)
    (tmp_path / "models.toml").write_text(textwrap.dedent(f"""
        [models.random]
        path = "{tmp_path / 'random.gguf'}"
        [sets.tiny]
        model = "random"
        tools = "umi_edge.tools.demo:TOOLS"
        n_ctx = 2048
        max_tokens = 96
        max_steps = 2
        sampling = {{temperature = 1.0}}
        [sets.tiny2]
        model = "random"
        tools = "umi_edge.tools.demo:TOOLS"
        n_ctx = 1024
        max_tokens = 96
        max_steps = 1
    """))
    return tmp_path / "models.toml"


def _start(args, env=None):
    proc = subprocess.Popen([UMI_EDGE, "serve", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"API (http://\S+)/v1", line)
        if m:
            return proc, m.group(1), lines
    proc.kill()
    raise AssertionError("the server did not get ready:\n" + "".join(lines))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_until_stopped(tiny_models_toml, stop):
    proc, url, lines = _start(["--models", str(tiny_models_toml), "--set", "tiny,tiny2", "--port", "0"])
    try:
        assert url.startswith("http://127.0.0.1:")
        assert "loading tiny, tiny2" in lines[0]
        status, _, body = http("GET", url + "/health")
        assert status == 200 and json.loads(body)["status"] == "ready"
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        assert [m.id for m in c.models.list()] == ["tiny", "tiny2"]
        r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
        assert r.model_extra["umi"]["status"] in ("answered", "gave_up", "max_steps")
        status, _, body = http("GET", url + "/")
        assert status == 200 and b"<title>umi-edge" in body
    finally:
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err.rstrip().endswith("umi-edge serve: stopped"), err


def test_cli_refuses_what_it_cannot_serve(tiny_models_toml, monkeypatch):
    from click.testing import CliRunner

    from umi_edge.cli import cli

    run = lambda *a: CliRunner().invoke(cli, ["serve", "--models", str(tiny_models_toml), *a])  # noqa: E731
    r = run("--set", "tiny", "--host", "0.0.0.0")
    assert r.exit_code == 1 and "--api-key" in r.output and "Traceback" not in r.output
    r = run("--set", "nope")
    assert r.exit_code == 1 and "nope" in r.output
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    r = run("--set", "tiny")
    assert r.exit_code == 1 and 'pip install "umi-edge[serve]"' in r.output


def test_help_does_not_import_the_server_stack():
    code = ("import sys; from click.testing import CliRunner; from umi_edge.cli import cli; "
            "CliRunner().invoke(cli, ['--help']); CliRunner().invoke(cli, ['serve', '--help']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'sse_starlette')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_model_that_fails_to_load_stops_the_server(tmp_path):
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    (tmp_path / "models.toml").write_text(textwrap.dedent(f"""
        [models.bad]
        path = "{tmp_path / 'bad.gguf'}"
        [sets.bad]
        model = "bad"
        tools = "umi_edge.tools.demo:TOOLS"
    """))
    proc = subprocess.run([UMI_EDGE, "serve", "--models", str(tmp_path / "models.toml"),
                           "--set", "bad", "--port", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Error:" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_serve_reports_ratios_side_by_side(tiny_models_toml, tmp_path):
    from click.testing import CliRunner

    from umi_edge.cli import cli

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{k}", "query": f"What is {k} + 1?", "tools": "demo",
                                         "expect": "answer", "check": {"answer_number": k + 1}}) + "\n"
                             for k in range(2)))
    r = CliRunner().invoke(cli, ["bench", "serve", "--models", str(tiny_models_toml), "--set", "tiny",
                                 "--tasks", str(tasks), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert [t["id"] for t in report["tasks"]] == ["t0", "t1"]
    for t in report["tasks"]:
        assert all(len(v) == 1 and v[0] > 0 for v in t["seconds"].values())
    for side in ("server", "server_stream"):
        assert report["ratios"][side]["median_task_ratio"] > 0 and report["ratios"][side]["total_ratio"] > 0
    from umi_edge.bench.serve import table

    text = table(report)
    assert "median per-task ratio: server" in text and text.count("\n") == len(report["tasks"]) + 4
    assert report["ratios"]["server"]["cpu_total_ratio"] > 0


# --- the shipped default team (SmolLM2-135M + trained adapters) ---------------------------------------------

@pytest.mark.slow
def test_default_team_answers_through_the_server_in_both_modes(default_model_home):
    from umi_edge.tools import ToolSet

    team = Team.load("default")
    question = "What is 15% of 2,480 plus the population of France?"
    with LiveServer({"default": team}) as s:
        c = s.client()
        # server-side tools, streamed
        pieces = [ch.choices[0].delta.content for ch in c.chat.completions.create(
            model="default", messages=[{"role": "user", "content": question}], stream=True)
            if ch.choices and ch.choices[0].delta.content]
        assert "68200372" in "".join(pieces).replace(",", "") and len(pieces) > 3
        # client-side tools: this test is the client and runs the demo tools itself
        local = ToolSet(TOOLS)
        messages = [{"role": "user", "content": question}]
        specs = [openai_spec(t) for t in TOOLS]
        for _ in range(6):
            r = c.chat.completions.create(model="default", messages=messages, tools=specs)
            msg = r.choices[0].message
            if r.choices[0].finish_reason != "tool_calls":
                break
            call = msg.tool_calls[0]
            result = local.call(call.function.name, call.function.arguments)
            messages += [msg.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": result.text}]
        assert r.choices[0].finish_reason == "stop"
        assert "68200372" in msg.content.replace(",", "")
        assert [m["role"] for m in messages].count("tool") >= 2
    team.close()
