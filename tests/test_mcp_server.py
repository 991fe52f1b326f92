"""`umi-edge mcp` driven by the MCP SDK's own client: list tools, call run_task, progress per step, cancel
mid-run; over stdio and streamable HTTP. The fast tests script the team's model (the real CLI runs in a child
process whose engines are a scripted fake); the slow one serves the real default set."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("mcp.client")
pytest.importorskip("mcp_server_time")

import anyio  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from mcp.client import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402
from mcp_helpers import descendants, free_port, settle_descendants, wait_listening  # noqa: E402

from umi_edge.cli import cli  # noqa: E402
from umi_edge.events import STATUSES  # noqa: E402

TIME = f"mcp:{shlex.quote(sys.executable)} -m mcp_server_time --local-timezone Etc/UTC"

# Runs the real CLI with Team.load's engines replaced by a scripted model: it asks for the time in Tokyo, then
# answers from the observation; a query containing "slow" keeps the planner busy for two minutes (cancel ends it).
HARNESS = '''
import contextlib, sys
from umi_edge import team as team_module
from umi_edge.engine.fake import FakeEngine, Scripted

def planner(prompt):
    if "slow" in prompt:
        return Scripted(" Thinking.\\n Next: conclusion.", delay=120)
    if '"datetime"' in prompt:
        return " I have the time.\\n Next: conclusion."
    return " I get the time in Tokyo.\\n Next: caller."

def summarizer(prompt):
    return "It is " + prompt.split('"datetime": "')[1][11:16] + " in Tokyo."

@contextlib.contextmanager
def scripted(spec, paths, *, verbose):
    roles = {"planner": FakeEngine([planner] * 100, name="planner"),
             "caller": FakeEngine(['Action: get_current_time\\nAction Input: {"timezone": "Asia/Tokyo"}'] * 100,
                                  name="caller"),
             "summarizer": FakeEngine([summarizer] * 100, name="summarizer")}
    with contextlib.ExitStack() as stack:
        yield roles, {}, stack

team_module._open_engines = scripted
from umi_edge.cli import cli
cli(sys.argv[1:], prog_name="umi-edge")
'''


@pytest.fixture
def harness(tmp_path):
    (tmp_path / "harness.py").write_text(HARNESS)
    (tmp_path / "m.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (tmp_path / "models.toml").write_text(textwrap.dedent("""
        [models.m]
        path = "m.gguf"
        [sets.scripted]
        description = "a scripted model"
        model = "m"
        max_steps = 3
    """))
    return [sys.executable, str(tmp_path / "harness.py"), "mcp", "--models", str(tmp_path / "models.toml"),
            "--set", "scripted", "--tools", TIME]


def run_async(fn, *args):
    return anyio.run(fn, *args)


def test_stdio_list_call_progress_cancel(harness, tmp_path):
    before = descendants()
    errlog = open(tmp_path / "server.log", "w")

    async def session():
        params = StdioServerParameters(command=harness[0], args=harness[1:], cwd=str(tmp_path))
        async with Client(stdio_client(params, errlog=errlog)) as client:
            (tool,) = (await client.list_tools()).tools
            assert tool.name == "run_task" and list(tool.input_schema["properties"]) == ["query"]
            assert "set 'scripted'" in tool.description
            assert "- get_current_time: Get current time in a specific timezone" in tool.description
            assert set(tool.output_schema["properties"]) == {"answer", "status", "steps"}

            progress = []

            async def on_progress(value, total, message):
                progress.append((value, message))

            result = await client.call_tool("run_task", {"query": "What time is it in Tokyo?"},
                                            progress_callback=on_progress)
            assert not result.is_error
            out = result.structured_content
            assert out["status"] == "answered" and out["steps"] == 2
            assert out["answer"].startswith("It is ") and out["answer"].endswith(" in Tokyo.")
            assert [v for v, _ in progress] == [1, 2, 3, 4, 5]
            assert [m.split(":")[0] for _, m in progress] == [
                "[1] plan", "[1] call (get_current_time)", "[1] observation (get_current_time)", "[2] plan",
                "[2] answer"]
            assert '"timezone": "Asia/Tokyo"' in progress[2][1]

            # cancel mid-run: the slow task holds the team for two minutes unless the cancel reaches it
            with anyio.move_on_after(2):
                await client.call_tool("run_task", {"query": "a slow task"})
            t0 = time.monotonic()
            again = await client.call_tool("run_task", {"query": "What time is it in Tokyo?"})
            assert again.structured_content["status"] == "answered"
            return time.monotonic() - t0

    waited = run_async(session)
    assert waited < 20, f"the cancelled run kept the team for {waited:.1f} s"
    errlog.close()
    # the client closed: `umi-edge mcp` exited, and it ended its own MCP tool server
    assert settle_descendants(before) == before


def test_http_transport(harness, tmp_path):
    port = free_port()
    proc = subprocess.Popen([*harness, "--transport", "http", "--port", str(port)], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, proc)

        async def session():
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                result = await client.call_tool("run_task", {"query": "What time is it in Tokyo?"})
                return result.structured_content

        out = run_async(session)
        assert out["status"] == "answered" and out["answer"].endswith(" in Tokyo.")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"serving run_task at http://127.0.0.1:{port}/mcp" in err


def test_missing_extra_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mcp", None)   # as if the mcp extra were not installed
    r = CliRunner().invoke(cli, ["mcp", "--set", "default"])
    assert r.exit_code == 1
    assert r.output.strip() == 'Error: MCP tool sources need the MCP SDK: pip install "umi-edge[mcp]"'
    r = CliRunner().invoke(cli, ["run", "q", "--tools", "mcp:python -m mcp_server_time"])
    assert r.exit_code == 1 and 'pip install "umi-edge[mcp]"' in r.output


def test_bad_tools_flag_fails_before_serving(harness, tmp_path):
    r = subprocess.run([*harness[:-2], "--tools", "mcp:no-such-mcp-server"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == ("Error: MCP server mcp:no-such-mcp-server: command "
                                                 "'no-such-mcp-server' not found; give a full path or install it")
    assert r.stdout == ""


@pytest.mark.slow
def test_default_set_served_over_stdio(default_model_home, tmp_path):
    """The real default set (SmolLM2 + GLPFT adapters) with mcp-server-time beside the demo tools."""
    env = {**os.environ, "UMI_EDGE_HOME": str(default_model_home)}
    args = ["-c", "from umi_edge.cli import cli; cli(prog_name='umi-edge')", "mcp",
            "--tools", "umi_edge.tools.demo:TOOLS", "--tools", TIME, "--max-steps", "3"]

    async def session():
        params = StdioServerParameters(command=sys.executable, args=args, env=env, cwd=str(tmp_path))
        with open(tmp_path / "server.log", "w") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                (tool,) = (await client.list_tools()).tools
                assert "- get_current_time:" in tool.description and "- calculator:" in tool.description
                result = await client.call_tool("run_task", {"query": "What time is it in Tokyo?"})
                with anyio.move_on_after(3):
                    await client.call_tool("run_task", {"query": "What is 15% of 2,480 plus the population "
                                                                 "of France?"})
                t0 = time.monotonic()
                after = await client.call_tool("run_task", {"query": "What is 2 + 40?"})
                return result.structured_content, after.structured_content, time.monotonic() - t0

    first, after, seconds = run_async(session)
    print("\n" + json.dumps(first))
    assert first["status"] in STATUSES and after["status"] in STATUSES
