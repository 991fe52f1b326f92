"""MCP servers as a tool source, against real servers: mcp-server-time, mcp-server-git on a repo made here, and
a fault server written with the SDK (raises, error result, hangs, dies, refuses to restart); stdio and HTTP;
models.toml [toolsources]; process lifetime owned by the Team."""
from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytest.importorskip("mcp.client")
pytest.importorskip("mcp_server_time")

from mcp_helpers import descendants, free_port, settle_descendants, wait_listening, write_fault_server  # noqa: E402

from umi_edge.engine.fake import fake_roles  # noqa: E402
from umi_edge.errors import ConfigError, ToolError  # noqa: E402
from umi_edge.protocol.grammar import caller_grammar  # noqa: E402
from umi_edge.registry import load_registry  # noqa: E402
from umi_edge.team import Team  # noqa: E402
from umi_edge.tools import ToolSet  # noqa: E402
from umi_edge.tools.mcp import McpServer, McpSource, result_text  # noqa: E402
from umi_edge.tools.sources import open_sources  # noqa: E402

PY = shlex.quote(sys.executable)
TIME = f"mcp:{PY} -m mcp_server_time --local-timezone Etc/UTC"


@pytest.fixture
def fault_server(tmp_path):
    return write_fault_server(tmp_path)


@pytest.fixture
def faults(fault_server):
    """The fault server's tools, on an ExitStack closed after the test."""
    import contextlib

    with contextlib.ExitStack() as stack:
        yield open_sources([f"mcp:{PY} {shlex.quote(str(fault_server))}"], stack)


def obs(toolset, name, args, **kw):
    kw.setdefault("timeout", 20.0)
    return toolset.call(name, json.dumps(args), **kw)


# --- mcp-server-time --------------------------------------------------------------------------------------------


def test_time_server_tools_become_ordinary_tools_and_a_team_calls_them():
    before = descendants()
    roles = fake_roles(
        planner=[" I get the time in Tokyo.\n Next: caller.", " I have it.\n Next: conclusion."],
        caller=['Action: get_current_time\nAction Input: {"timezone": "Asia/Tokyo"}'],
        summarizer=[lambda prompt: "It is " + prompt.split('"datetime": "')[1][11:16] + " in Tokyo."],
    )
    with Team(roles, ["umi_edge.tools.demo:TOOLS", TIME]) as team:
        assert len(descendants() - before) >= 1              # the server runs while the Team lives
        assert team.tools.names[-2:] == ("get_current_time", "convert_time")
        assert "calculator" in team.tools
        doc = team.tools["get_current_time"].doc()
        assert doc["Name"] == "get_current_time"
        assert doc["function"].startswith('This is the subfunction for tool "mcp-time", you can use this tool.')
        assert doc["input"]["timezone"].startswith("string, IANA timezone name")
        grammar = caller_grammar(team.tools, max_tokens=256)
        assert '"get_current_time\\nAction Input: ' in grammar and '"convert_time\\nAction Input: ' in grammar
        events = list(team.run("What time is it in Tokyo?"))
    observation = next(e for e in events if e.kind == "observation")
    assert observation.ok and observation.tool == "get_current_time"
    data = json.loads(observation.text)   # structured content, serialized with sorted keys
    assert list(data) == sorted(data) and data["timezone"] == "Asia/Tokyo" and data["datetime"].endswith("+09:00")
    out = events[-1]
    assert out.status == "answered" and out.answer == f"It is {data['datetime'][11:16]} in Tokyo."
    assert settle_descendants(before) == before                # closing the Team ended the server


@pytest.mark.parametrize("isolation", ["auto", "thread", "process"])
def test_every_tool_isolation_calls_through_the_session(isolation):
    from umi_edge.loop import Limits

    roles = fake_roles(planner=[" Time.\n Next: caller.", " Done.\n Next: conclusion."],
                       caller=['Action: get_current_time\nAction Input: {"timezone": "Asia/Tokyo"}'],
                       summarizer=["ok"])
    with Team(roles, [TIME], limits=Limits(tool_isolation=isolation)) as team:
        observation = next(e for e in team.run("What time is it in Tokyo?") if e.kind == "observation")
    assert observation.ok and '"timezone": "Asia/Tokyo"' in observation.text


def test_arguments_are_validated_here_against_the_input_schema():
    with Team(fake_roles(), [TIME]) as team:
        r = obs(team.tools, "get_current_time", {"zone": "Asia/Tokyo"})
        assert (r.ok, r.error) == (False, "bad_arguments") and "'timezone' is a required property" in r.text
        r = obs(team.tools, "convert_time", {"source_timezone": "Asia/Tokyo", "time": "25:99",
                                             "target_timezone": "Europe/Paris"})
        assert r.error == "raised" and "Invalid time format" in r.text   # the server's own error result


# --- a multi-tool server with typed arguments: mcp-server-git on a repo made here -------------------------------


@pytest.fixture
def repo(tmp_path):
    pytest.importorskip("mcp_server_git")
    path = tmp_path / "repo"
    path.mkdir()
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "a.txt").write_text("alpha\n")
    subprocess.run(["git", "-C", str(path), "add", "a.txt"], check=True)
    subprocess.run([*git, "-C", str(path), "commit", "-qm", "first: alpha"], check=True)
    (path / "a.txt").write_text("alpha\nbeta\n")
    subprocess.run([*git, "-C", str(path), "commit", "-qam", "second: beta"], check=True)
    (path / "b.txt").write_text("new\n")
    return path


def test_git_server_typed_arguments(repo):
    with Team(fake_roles(), [f"mcp:{PY} -m mcp_server_git --repository {shlex.quote(str(repo))}"]) as team:
        tools = team.tools
        assert {"git_status", "git_log", "git_add", "git_diff", "git_show", "git_branch"} <= set(tools.names)
        assert tools["git_log"].doc()["input"]["max_count"].startswith("integer")
        assert tools["git_add"].doc()["input"]["files"] == "array"
        log = obs(tools, "git_log", {"repo_path": str(repo), "max_count": 1})
        assert log.ok and "second: beta" in log.text and "first: alpha" not in log.text
        bad = obs(tools, "git_log", {"repo_path": str(repo), "max_count": "one"})
        assert bad.error == "bad_arguments" and "max_count" in bad.text        # never reached the server
        empty = obs(tools, "git_add", {"repo_path": str(repo), "files": []})
        assert empty.error == "bad_arguments"                                   # minItems: 1
        added = obs(tools, "git_add", {"repo_path": str(repo), "files": ["b.txt"]})
        assert added.ok, added.text
        status = obs(tools, "git_status", {"repo_path": str(repo)})
        assert "b.txt" in status.text and "new file" in status.text
        caller_grammar(tools, max_tokens=256)   # every schema converts to the caller grammar


# --- faults -----------------------------------------------------------------------------------------------------


def test_results_text_blocks_joined_structured_sorted(faults):
    assert obs(faults, "echo", {"text": "ab", "times": 2}).text == "abab"
    assert obs(faults, "point", {"x": 1, "y": 2}).text == '{"x": 1, "y": 2}'
    assert obs(faults, "blocks", {}).text == "first\nsecond"


def test_error_results_are_fault_observations(faults):
    raised = obs(faults, "boom", {"reason": "no luck"})
    assert (raised.ok, raised.error) == (False, "raised")
    assert json.loads(raised.text) == {"error": "boom failed: Error executing tool boom", "response": ""}
    refused = obs(faults, "refuse", {})
    assert refused.error == "raised" and "not allowed here" in refused.text
    assert obs(faults, "echo", {"text": "still up"}).text == "still up"     # an error result is not a crash


def test_hung_server_times_out_and_is_restarted_on_the_next_call(faults):
    first = obs(faults, "whoami", {}).text
    t0 = time.monotonic()
    hung = obs(faults, "freeze", {"seconds": 60}, timeout=1.0)
    assert hung.error == "timeout" and "timed out after 1 s" in hung.text
    assert time.monotonic() - t0 < 3
    second = obs(faults, "whoami", {})
    assert second.ok and second.text != first                               # a fresh server process
    assert faults["whoami"].source.restarts == 1


def test_crashed_server_is_restarted_on_the_next_call(faults, caplog):
    caplog.set_level(logging.DEBUG, logger="umi_edge.tools.mcp")
    first = obs(faults, "whoami", {}).text
    died = obs(faults, "die", {})
    assert died.error == "raised" and "exited" in died.text and "dying now" in died.text
    assert obs(faults, "echo", {"text": "back"}).text == "back"
    assert obs(faults, "whoami", {}).text != first
    # the server's stderr goes to our log at debug level
    assert any(r.levelno == logging.DEBUG and r.getMessage().endswith("fault server up") for r in caplog.records)


def test_cancel_stops_a_waiting_call_at_once(faults):
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    t0 = time.monotonic()
    r = obs(faults, "freeze", {"seconds": 30}, timeout=60, cancel=cancel)
    assert r.error == "cancelled" and time.monotonic() - t0 < 2


def test_a_server_that_cannot_restart_stays_down(tmp_path, fault_server):
    marker = tmp_path / "refuse"
    server = McpServer(label="faults", command=sys.executable, args=(str(fault_server),),
                       env={"FAULT_SERVER_REFUSE_IF": str(marker)})
    before = descendants()
    with McpSource(server) as source:
        tools = ToolSet(source.open())
        marker.touch()
        assert obs(tools, "die", {}).error == "raised"
        down = obs(tools, "echo", {"text": "x"})
        assert down.error == "raised" and "restarting its MCP server failed" in down.text
        assert "refuses to start" in down.text                                  # its stderr's last line
        assert settle_descendants(before) == before                             # nothing left running
        again = obs(tools, "echo", {"text": "x"})
        assert again.text == down.text and source.restarts == 1                 # not retried on every call


def test_startup_failures_are_one_line_errors_naming_the_source(tmp_path, fault_server):
    before = descendants()
    with pytest.raises(ToolError, match=r"command 'no-such-mcp-server' not found"):
        Team(fake_roles(), ["mcp:no-such-mcp-server --flag"])
    (tmp_path / "refuse").touch()
    with pytest.raises(ToolError, match=r"MCP server .*fault_server.py failed to start: .*refuses to start"):
        Team(fake_roles(), [f"mcp:env FAULT_SERVER_REFUSE_IF={tmp_path / 'refuse'} {PY} {fault_server}"])
    with pytest.raises(ToolError, match="did not answer within 1 s"):
        with McpSource(McpServer("sleeper", sys.executable, ("-c", "import time; time.sleep(60)")),
                       connect_timeout=1) as source:
            source.open()
    with pytest.raises(ToolError, match="give the server's command line after mcp:"):
        Team(fake_roles(), ["mcp:  "])
    assert settle_descendants(before) == before


def test_name_clash_between_sources_names_both_and_leaks_nothing(tmp_path):
    (tmp_path / "mine.py").write_text(textwrap.dedent('''
        def get_current_time(timezone: str) -> str:
            """A local clock."""
            return "noon"
        TOOLS = [get_current_time]
    '''))
    before = descendants()
    with pytest.raises(ToolError, match=rf"tool 'get_current_time' is offered by both mcp:.*mcp_server_time.* and "
                                        rf".*mine.py:TOOLS"):
        Team(fake_roles(), [TIME, f"{tmp_path / 'mine.py'}:TOOLS"])
    assert settle_descendants(before) == before      # the server started before the clash was ended


def test_an_mcp_source_needs_an_owner():
    with Team(fake_roles(), ["umi_edge.tools.demo:TOOLS"]) as team:
        with pytest.raises(ToolError, match="an MCP server needs an owner"):
            team.run("q", tools=TIME)


# --- streamable HTTP ----------------------------------------------------------------------------------------------


def test_streamable_http_source(fault_server):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(fault_server), "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        with Team(fake_roles(), [f"mcp+http://127.0.0.1:{port}/mcp"]) as team:
            assert obs(team.tools, "echo", {"text": "over http"}).text == "over http"
            assert obs(team.tools, "point", {"x": 3, "y": 4}).text == '{"x": 3, "y": 4}'
    finally:
        proc.terminate()
        proc.wait(10)
    with pytest.raises(ToolError, match=rf"MCP server mcp\+http://127.0.0.1:{port}/mcp cannot be reached: Connect"):
        Team(fake_roles(), [f"mcp+http://127.0.0.1:{port}/mcp"])


# --- models.toml [toolsources] --------------------------------------------------------------------------------------


@pytest.fixture
def toolsources_set(tmp_path, fault_server, monkeypatch):
    """A models.toml with [toolsources] and a set combining the demo tools with two of them; engines faked."""
    import contextlib

    (tmp_path / "m.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    models = tmp_path / "models.toml"
    models.write_text(textwrap.dedent(f"""
        [toolsources.time]
        mcp = {{ command = {json.dumps(sys.executable)}, args = ["-m", "mcp_server_time"], env = {{ TZ = "UTC" }} }}
        [toolsources.faults]
        mcp = {{ command = {json.dumps(sys.executable)}, args = ["fault_server.py"], cwd = ".", env = {{ X = "hi" }} }}
        [models.m]
        path = "m.gguf"
        [sets.fake]
        model = "m"
        tools = ["umi_edge.tools.demo:TOOLS", "time", "faults"]
    """))

    @contextlib.contextmanager
    def fake_open(spec, paths, *, verbose):
        with contextlib.ExitStack() as stack:
            yield fake_roles(), {}, stack

    monkeypatch.setattr("umi_edge.team._open_engines", fake_open)
    return models


def test_set_combines_named_toolsources(toolsources_set):
    registry = load_registry(toolsources_set)
    assert registry.toolsources["time"].args == ("-m", "mcp_server_time")
    before = descendants()
    with Team.load("fake", models=toolsources_set) as team:
        assert team.spec.tools == ("umi_edge.tools.demo:TOOLS", "time", "faults")
        assert {"calculator", "get_current_time", "echo"} <= set(team.tools.names)
        assert obs(team.tools, "env", {"name": "X"}).text == "hi"   # env and cwd
        assert len(descendants() - before) >= 2
    assert settle_descendants(before) == before


def test_load_failure_after_the_servers_started_ends_them(toolsources_set, tmp_path):
    before = descendants()
    (tmp_path / "m.gguf").unlink()       # fails after the tool sources opened
    with pytest.raises(Exception, match="m.gguf"):
        Team.load("fake", models=toolsources_set)
    assert settle_descendants(before) == before


@pytest.mark.parametrize("table, message", [
    ('mcp = { command = "x", url = "http://h/mcp" }', "exactly one of mcp.command"),
    ('mcp = { command = "x", args = "-m x" }', "mcp.args must be a list of strings"),
    ('mcp = { command = "x", nope = 1 }', "unknown key mcp.nope"),
    ('mcp = { url = "ftp://h" }', "mcp.url must start with http"),
    ('mcp = { url = "http://h/mcp", env = { A = "b" } }', "apply to a command, not to a url"),
    ('command = "x"', "unknown key 'command'"),
    ("", "give mcp = "),
])
def test_toolsource_table_errors(tmp_path, table, message):
    path = tmp_path / "models.toml"
    path.write_text(f"[toolsources.t]\n{table}\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_registry(path)
    assert f"{path} [toolsources.t]" in str(info.value)


@pytest.mark.parametrize("tools", ["[]", '["time", 3]', '[""]'])
def test_set_tools_list_errors(tmp_path, tools):
    from umi_edge.registry import resolve_set

    path = tmp_path / "models.toml"
    path.write_text(f'[models.m]\npath = "m.gguf"\n[sets.s]\nmodel = "m"\ntools = {tools}\n')
    with pytest.raises(ConfigError, match=r"\[sets.s\]: tools must be"):
        resolve_set("s", registry=load_registry(path))


def test_result_text_of_other_blocks():
    from mcp_types import CallToolResult, EmbeddedResource, ImageContent, TextContent, TextResourceContents

    result = CallToolResult(content=[TextContent(text="a"), ImageContent(data="QUJD", mime_type="image/png"),
                                     EmbeddedResource(resource=TextResourceContents(uri="file:///x", text="body"))])
    assert result_text(result) == "a\n[image image/png, 4 base64 chars]\nbody"


# --- lifetime -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_orphans_after_50_team_load_close_cycles(toolsources_set):
    """Measures listing and first-call latency too (printed; run with -s to see it)."""
    before = descendants()
    loads, firsts = [], []
    for _ in range(50):
        t0 = time.monotonic()
        with Team.load("fake", models=toolsources_set, tools=["time"]) as team:
            t1 = time.monotonic()
            assert obs(team.tools, "get_current_time", {"timezone": "Asia/Tokyo"}).ok
            firsts.append(time.monotonic() - t1)
        loads.append(t1 - t0)
    assert settle_descendants(before) == before
    loads.sort(), firsts.sort()
    print(f"\nload + list tools: median {loads[25]:.3f} s, max {loads[-1]:.3f} s; "
          f"first call: median {firsts[25] * 1000:.1f} ms, max {firsts[-1] * 1000:.1f} ms")


@pytest.mark.slow
def test_real_caller_sampling_under_the_grammar_makes_only_valid_calls(default_model_home, repo):
    """The shipped caller (SmolLM2 + its adapter), sampling at temperature 1 under the caller grammar of the demo
    tools, mcp-server-time and mcp-server-git: every call names a listed tool with arguments its schema admits
    (the planner is scripted, so every step is a call)."""
    from umi_edge.engine.fake import FakeEngine

    git = f"mcp:{PY} -m mcp_server_git --repository {shlex.quote(str(repo))}"
    steps = 4
    with Team.load("default", tools=["umi_edge.tools.demo:TOOLS", TIME, git],
                   caller={"temperature": 1.0, "seed": 11}) as real:
        roles = {"planner": FakeEngine([" I call a tool.\n Next: caller."] * steps, name="planner"),
                 "caller": real.roles["caller"], "summarizer": FakeEngine(["done"], name="summarizer")}
        with Team(roles, real.tools) as team:
            events = list(team.run("What time is it in Tokyo, and what changed in the repository?",
                                   max_steps=steps))
    calls = [e for e in events if e.kind == "call"]
    observations = [e for e in events if e.kind == "observation"]
    print("\n" + "\n".join(f"{c.tool} {c.arguments} -> {o.error or 'ok'}" for c, o in zip(calls, observations)))
    assert len(calls) == steps == len(observations)
    assert all(c.tool in real.tools for c in calls)
    assert not [o for o in observations if o.error in ("unknown_tool", "bad_arguments")]
