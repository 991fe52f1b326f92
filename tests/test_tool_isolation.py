"""Where tool calls run (tool_isolation auto / thread / process) and what becomes of whatever a tool does:
a hung worker process is killed, hung threads are capped, and values or exceptions that cannot be printed,
deeply nested results and unresolvable schemas are all fault observations, never the end of a run."""
from __future__ import annotations

import json
import os
import textwrap
import threading
import time

import pytest

import isolation_tools as it
from umi_edge.engine.fake import fake_roles
from umi_edge.errors import ConfigError, ToolError
from umi_edge.loop import Limits, run_team
from umi_edge.tools import Tool, ToolSet, load_tools
from umi_edge.tools.demo import TOOLS
from umi_edge.tools.isolation import MAX_HUNG, MAX_IDLE, POOL, locate

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads child processes from /proc (Linux)")


def children() -> set[int]:
    """Live child processes of this one (Linux /proc)."""
    out: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            out |= {int(p) for p in f.read().split()}
    return out


@pytest.fixture(autouse=True)
def _release_hung_threads():
    it.RELEASE.clear()
    yield
    it.RELEASE.set()   # the thread-mode tests leave hung threads behind on purpose; let them end


def test_auto_runs_process_safe_tools_in_a_worker_and_others_here():
    def here() -> int:
        return os.getpid()

    ts = ToolSet([it.pid, here])
    worker = json.loads(ts.call("pid", "{}").text)
    assert worker != os.getpid() and worker in children()
    assert json.loads(ts.call("pid", "{}").text) == worker          # the idle worker is reused
    assert json.loads(ts.call("pid", "{}", isolation="thread").text) == os.getpid()
    assert json.loads(ts.call("here", "{}").text) == os.getpid()    # not process_safe: a thread


@pytest.mark.parametrize("expression", ["2 * (3 + 4)", "round(5, -10**18)", "sqrt(-1)", "1/0"])
def test_demo_results_are_the_same_in_a_worker(expression):
    args = json.dumps({"expression": expression})
    a, b = TOOLS.call("calculator", args, isolation="process"), TOOLS.call("calculator", args, isolation="thread")
    assert (a.text, a.error, a.tool) == (b.text, b.error, b.tool)


def test_a_hung_worker_is_killed_on_timeout_and_replaced():
    ts = ToolSet([it.hang, it.pid])
    worker = json.loads(ts.call("pid", "{}").text)   # the idle worker the next call takes
    t0 = time.monotonic()
    r = ts.call("hang", "{}", timeout=0.3, isolation="process")
    assert r.error == "timeout" and "timed out after 0.3 s" in r.text and time.monotonic() - t0 < 5
    assert worker not in children() and not os.path.exists(f"/proc/{worker}")   # killed and reaped
    assert len(children()) <= MAX_IDLE
    t0 = time.monotonic()
    assert json.loads(ts.call("pid", "{}").text) not in (worker, os.getpid())     # its successor answers
    assert time.monotonic() - t0 < 5


def test_cancel_kills_the_worker():
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    before = children()
    r = ToolSet([it.hang]).call("hang", "{}", timeout=60, cancel=cancel, isolation="process")
    assert r.error == "cancelled" and children() <= before


def test_a_worker_that_dies_is_a_fault_and_the_next_call_works():
    ts = ToolSet([it.crash, it.pid])
    r = ts.call("crash", '{"code": 3}', isolation="process")
    assert r.error == "raised" and "exit code 3" in json.loads(r.text)["error"]
    assert ts.call("pid", "{}", isolation="process").ok


def test_a_workers_prints_go_to_stderr(capfd):
    POOL.close()   # a fresh worker, started while fds 1 and 2 are captured
    r = ToolSet([it.shout]).call("shout", '{"text": "hello"}', isolation="process")
    assert r.text == "HELLO"
    out, err = capfd.readouterr()
    assert "hello" not in out and "hello" in err    # stdout stays clean for --json output


def test_thread_mode_caps_hung_threads_per_tool():
    ts = ToolSet([it.hang])
    before = threading.active_count()
    errors = [ts.call("hang", "{}", timeout=0.05, isolation="thread").error for _ in range(MAX_HUNG + 6)]
    assert errors == ["timeout"] * MAX_HUNG + ["hung"] * 6
    assert threading.active_count() - before == MAX_HUNG
    it.RELEASE.set()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ts.call("hang", "{}", timeout=5, isolation="thread").ok      # the cap lifts as they end


def test_process_mode_needs_importable_functions():
    def local() -> str:
        return "x"

    nested = Tool.from_function(local)
    assert locate(local) is None and locate(it.pid.fn) == ("isolation_tools", "pid", it.__file__)
    with pytest.raises(ToolError, match="cannot run in a worker process"):
        ToolSet([nested]).check_isolation("process")
    ToolSet([nested]).check_isolation("auto")
    assert ToolSet([nested]).call("local", "{}", isolation="auto").text == "x"
    events = list(run_team("q", fake_roles(), [nested], limits=Limits(tool_isolation="process"), constrained=False))
    assert events[-1].status == "error" and "cannot run in a worker process" in events[-1].reason
    with pytest.raises(ConfigError, match="tool_isolation must be one of auto, thread, process"):
        Limits(tool_isolation="fork")


def test_tools_from_a_file_run_in_a_worker(tmp_path):
    path = tmp_path / "mytools.py"
    path.write_text(textwrap.dedent('''
        import os
        from umi_edge.tools import tool

        @tool
        def where() -> int:
            """The process id."""
            return os.getpid()

        TOOLS = [where]
    '''))
    ts = load_tools(f"{path}:TOOLS")
    assert json.loads(ts.call("where", "{}", isolation="process").text) != os.getpid()


def test_registry_setting(tmp_path):
    from umi_edge.registry import load_registry, resolve_set

    path = tmp_path / "models.toml"
    path.write_text('[sets.x]\nmodel = "smollm2-135m-instruct"\ntool_isolation = "process"\n')
    assert resolve_set("x", registry=load_registry(path), env={}).tool_isolation == "process"
    assert resolve_set("default", registry=load_registry(path), env={}).tool_isolation == "auto"
    path.write_text('[sets.x]\nmodel = "smollm2-135m-instruct"\ntool_isolation = "fork"\n')
    with pytest.raises(ConfigError, match=r"\[sets.x\]: tool_isolation must be one of auto, thread, process"):
        resolve_set("x", registry=load_registry(path), env={})


# ---- whatever a tool does is an observation ---------------------------------------------------------------

@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_100k_deep_result_is_a_fault(isolation):
    r = ToolSet([it.deep]).call("deep", "{}", isolation=isolation)
    assert r.error == "not_json" and json.loads(r.text)["error"] == "deep returned a list nested too deeply for JSON"


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_an_exception_that_cannot_be_printed_is_a_fault(isolation):
    r = ToolSet([it.unprintable]).call("unprintable", "{}", isolation=isolation)
    assert r.error == "raised"
    assert json.loads(r.text)["error"] == "unprintable raised Unprintable (its message cannot be printed)"


def test_odd_return_values_are_faults_or_plain_text():
    class Loud(str):
        def __getitem__(self, item):
            raise RuntimeError("no slicing")

    class Weird(dict):
        def items(self):
            raise RuntimeError("no items")

    class BadStr(Exception):
        def __str__(self):
            return 42

    def raise_bad() -> str:
        raise BadStr()

    ts = ToolSet([Tool.from_function(lambda: Loud("x" * 2000), name="loud"),
                  Tool.from_function(lambda: Weird(a=1), name="weird"), raise_bad])
    r = ts.call("loud", "{}")
    assert r.ok and type(r.text) is str and r.text == "x" * 2000      # a plain str the loop can cut
    r = ts.call("weird", "{}")
    assert r.error == "not_json" and "no items" in r.text
    assert json.loads(ts.call("raise_bad", "{}").text)["error"] == \
        "raise_bad raised BadStr (its message cannot be printed)"


REMOTE = {"type": "object", "properties": {"x": {"$ref": "https://example.com/schema.json"}}}


@pytest.mark.parametrize("schema", [REMOTE, {"$ref": "https://example.com/schema.json"},
                                    {"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}])
def test_unresolvable_refs_are_faults_the_model_sees(schema):
    remote = Tool.from_openai({"name": "remote", "parameters": schema}, lambda **kw: "never")
    r = ToolSet([remote]).call("remote", '{"x": 1}')
    assert r.error == "bad_arguments" and "parameter schema cannot be checked" in r.text
    pytest.importorskip("llama_cpp")    # the constrained loop builds the caller grammar with llama.cpp's converter
    roles = fake_roles(planner=["call remote\n Next: caller.", "done\n Next: conclusion."],
                       caller=['Action: remote\nAction Input: {"x": 1}'], summarizer=["sorry"])
    events = list(run_team("q", roles, [remote], constrained=True))
    obs = [e for e in events if e.kind == "observation"]
    assert events[-1].status == "answered" and obs[0].error == "bad_arguments"
    assert 'root ::= " "? "Action: " ( tool0 )' in roles["caller"].grammars[0]   # any object, still constrained


def test_faults_reach_the_model_through_the_loop():
    roles = fake_roles(planner=["go\n Next: caller.", "go\n Next: caller.", "done\n Next: conclusion."],
                       caller=["Action: deep\nAction Input: {}", "Action: unprintable\nAction Input: {}"],
                       summarizer=["ok"])
    events = list(run_team("q", roles, [it.deep, it.unprintable], constrained=False))
    assert events[-1].status == "answered"
    assert [e.error for e in events if e.kind == "observation"] == ["not_json", "raised"]
    assert "nested too deeply" in roles["planner"].prompts[1] and "cannot be printed" in roles["planner"].prompts[2]

