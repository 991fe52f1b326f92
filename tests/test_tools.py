"""Tools: schemas from callables, OpenAI and ToolBench constructors, loading, guarded execution."""
from __future__ import annotations

import json
import sys
import textwrap
import time
from typing import Literal, Optional

import pytest

from umi_edge.errors import ToolError
from umi_edge.tools import Tool, ToolSet, as_toolset, load_tools, parse_arguments, serialize, tool


@tool
def add(a: int, b: int = 2) -> int:
    """Add two integers.

    Longer explanation that is part of the description.

    Args:
        a: The first number, which may need a description
            spanning two lines.
        b (int): The second number.

    Returns:
        The sum.
    """
    return a + b


def sphinx(city: str, units: Literal["metric", "imperial"] = "metric", days: Optional[int] = None,
           tags: list[str] = ()) -> dict:
    """Weather for a city.

    :param city: City name.
    :param units: Unit system.
    :param days: Forecast length.
    :returns: a dict
    """
    return {"city": city, "units": units, "days": days}


def test_schema_from_hints_and_google_docstring():
    assert add.name == "add"
    assert add.description == "Add two integers. Longer explanation that is part of the description."
    assert add.parameters == {
        "type": "object",
        "properties": {"a": {"type": "integer", "description": "The first number, which may need a description "
                                                                 "spanning two lines."},
                       "b": {"type": "integer", "description": "The second number.", "default": 2}},
        "required": ["a"], "additionalProperties": False}
    assert add(1, 2) == 3  # the decorated function stays callable


def test_schema_from_sphinx_docstring_and_rich_types():
    t = Tool.from_function(sphinx)
    props = t.parameters["properties"]
    assert t.description == "Weather for a city."
    assert props["city"] == {"type": "string", "description": "City name."}
    assert props["units"] == {"type": "string", "enum": ["metric", "imperial"], "description": "Unit system.",
                              "default": "metric"}
    assert props["days"] == {"type": "integer", "description": "Forecast length."}
    assert props["tags"]["type"] == "array" and props["tags"]["items"] == {"type": "string"}
    assert t.parameters["required"] == ["city"]
    assert t.doc()["input"]["units"] == "string, Unit system."


def test_decorator_with_options_and_bad_definitions():
    @tool(name="renamed", toolkit="kit", timeout=1.5)
    def f(x: str) -> str:
        return x

    assert (f.name, f.toolkit, f.timeout) == ("renamed", "kit", 1.5)
    assert f.doc()["function"] == 'This is the subfunction for tool "kit", you can use this tool.'

    def star(*args):
        return args

    with pytest.raises(ToolError, match=r"\*args"):
        tool(star)

    def weird(x: set) -> None: ...

    with pytest.raises(ToolError, match="unsupported type annotation"):
        tool(weird)
    with pytest.raises(ToolError, match="tool name"):
        Tool(name="has space")
    with pytest.raises(ToolError, match="unique"):
        ToolSet([add, add])
    with pytest.raises(ToolError, match="callable"):
        ToolSet([{"type": "function", "function": {"name": "x"}}])


def test_openai_specs_with_callables_and_dispatcher():
    specs = [{"type": "function", "function": {"name": "mul", "description": "Multiply.",
                                               "parameters": {"type": "object", "properties": {
                                                   "x": {"type": "number"}, "y": {"type": "number"}},
                                                   "required": ["x", "y"]}}},
             {"type": "function", "function": {"name": "echo", "parameters": {"type": "object", "properties": {
                 "s": {"type": "string"}}}}}]
    seen = []
    ts = ToolSet.from_openai(specs, {"mul": lambda x, y: x * y},
                             dispatcher=lambda name, args: seen.append((name, args)) or "ok")
    assert ts.call("mul", '{"x": 3, "y": 4}').text == "12"
    assert ts.call("echo", '{"s": "hi"}').text == "ok" and seen == [("echo", {"s": "hi"})]
    with pytest.raises(ToolError, match="invalid JSON schema"):
        Tool.from_openai({"name": "bad", "parameters": {"type": "object", "properties": 5}}, print)
    with pytest.raises(ToolError, match="unknown tools: nope"):
        ToolSet.from_openai(specs, {"nope": print})


def test_toolbench_docs_render_verbatim_and_need_a_dispatcher():
    doc = {"Name": "quiz_for_moodring", "function": "This is the subfunction for tool \"moodring\"...",
           "input": {"quizid": "string, ", "n": "integer, how many"}}
    plain = ToolSet.from_toolbench([doc])
    assert plain.docs() == [doc] and not plain["quiz_for_moodring"].executable
    assert plain.call("quiz_for_moodring", "{}").error == "not_executable"
    live = ToolSet.from_toolbench([doc], dispatcher=lambda name, args: {"name": name, "args": args})
    r = live.call("quiz_for_moodring", '{"quizid": "1", "n": 2}')
    assert r.ok and json.loads(r.text) == {"args": {"n": 2, "quizid": "1"}, "name": "quiz_for_moodring"}
    assert live.call("quiz_for_moodring", '{"n": "two"}').error == "bad_arguments"
    with pytest.raises(ToolError, match="ToolBench doc"):
        Tool.from_toolbench({"Name": 3})


def test_serialization_is_deterministic():
    assert serialize({"b": 1, "a": ["é", 2]}) == '{"a": ["é", 2], "b": 1}'
    assert serialize("plain text") == "plain text"
    assert serialize(None) == "null" and serialize(1.5) == "1.5" and serialize((1, 2)) == "[1, 2]"
    for bad in (object(), float("nan"), {1: 2, "a": 3}):
        with pytest.raises(TypeError):
            serialize(bad)


@pytest.mark.parametrize("arguments,problem", [
    ("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"), ('{"a": "x"}', "a: 'x' is not of type"),
    ("{}", "'a' is a required property"), ('{"a": 1, "zz": 0}', "Additional properties"),
    ('{"a": 1e999, "b": 1}', "out of range"), ('{"a": NaN, "b": 1}', "NaN is not JSON"),
])
def test_argument_validation(arguments, problem):
    args, why = parse_arguments(arguments, add.parameters)
    assert args == {} and problem in why


def test_argument_parsing_accepts_blank_and_control_characters():
    assert parse_arguments("", {"type": "object"}) == ({}, None)
    assert parse_arguments('{"s": "a\tb"}', {"type": "object"}) == ({"s": "a\tb"}, None)


def test_execution_faults_become_observations():
    def boom() -> str:
        raise RuntimeError("kaput")

    def hang() -> str:
        time.sleep(30)
        return "never"

    def opaque() -> object:
        return object()

    ts = ToolSet([add, boom, hang, opaque, Tool.from_function(hang, name="quick", timeout=0.05)])
    r = ts.call("add", '{"a": 1}')
    assert (r.ok, r.text, r.tool) == (True, "3", "add")
    r = ts.call("boom", "{}")
    assert r.error == "raised" and json.loads(r.text) == {"error": "boom raised RuntimeError: kaput", "response": ""}
    t0 = time.monotonic()
    r = ts.call("hang", "{}", timeout=0.2)
    assert r.error == "timeout" and "timed out after 0.2 s" in r.text and time.monotonic() - t0 < 5
    assert ts.call("quick", "{}", timeout=60).error == "timeout"  # the tool's own timeout wins
    assert ts.call("opaque", "{}").error == "not_json"
    r = ts.call("missing", "{}")
    assert r.error == "unknown_tool" and json.loads(r.text)["error"] == "No such function name: missing"
    assert ts.call("none", "{}").error == "unknown_tool"
    assert ts.call("", "{}").error == "unknown_tool"   # the reference would match "" to the first tool


def test_cancel_stops_waiting_for_a_tool():
    import threading

    def hang() -> str:
        time.sleep(30)
        return "never"

    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    assert Tool.from_function(hang).run("{}", timeout=60, cancel=cancel).error == "cancelled"


def test_suffix_resolution_is_a_flagged_fallback():
    ts = ToolSet([Tool.from_function(lambda: 1, name="get_weather_for_weatherapi")])
    assert ts.resolve("get_weather_for_weatherapi") == (ts["get_weather_for_weatherapi"], False)
    assert ts.resolve("weatherapi") == (ts["get_weather_for_weatherapi"], True)
    r = ts.call("weatherapi", "{}")
    assert r.ok and r.suffix_match and r.tool == "get_weather_for_weatherapi"


def test_as_toolset_accepts_many_shapes():
    assert as_toolset(add).names == ("add",)
    assert as_toolset([add, sphinx]).names == ("add", "sphinx")
    ts = as_toolset([add])
    assert as_toolset(ts) is ts
    assert (ts + [sphinx]).names == ("add", "sphinx")
    with pytest.raises(ToolError):
        as_toolset(42)


def test_load_tools(tmp_path, monkeypatch):
    (tmp_path / "my_tools.py").write_text(textwrap.dedent('''
        from umi_edge.tools import tool

        @tool
        def hello(name: str) -> str:
            """Greet someone.

            Args:
                name: Who to greet.
            """
            return "hello " + name

        def shout(text: str) -> str:
            return text.upper()

        TOOLS = [hello, shout]
        ONE = hello
    '''))
    (tmp_path / "broken_tools.py").write_text("import definitely_not_a_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_tools("my_tools:TOOLS").names == ("hello", "shout")
    assert load_tools("my_tools").names == ("hello", "shout")           # ATTR defaults to TOOLS
    assert load_tools("my_tools:ONE").call("hello", '{"name": "x"}').text == "hello x"
    assert load_tools(f"{tmp_path / 'my_tools.py'}:ONE").names == ("hello",)
    assert load_tools("umi_edge.tools.demo:TOOLS").names[0] == "calculator"
    with pytest.raises(ToolError, match=r"cannot import 'broken_tools' \(ModuleNotFoundError"):
        load_tools("broken_tools:TOOLS")
    with pytest.raises(ToolError, match="cannot import 'no_such_mod_abc'"):
        load_tools("no_such_mod_abc:TOOLS")
    with pytest.raises(ToolError, match="has no attribute 'NOPE' .*TOOLS"):
        load_tools("my_tools:NOPE")
    with pytest.raises(ToolError, match="not found"):
        load_tools(str(tmp_path / "missing.py"))
    sys.modules.pop("my_tools", None)
