"""Property-based tests: argument parsing, tool dispatch and the calculator never fail on any input."""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from umi_edge.tools import parse_arguments
from umi_edge.tools.calc import CalcError, evaluate
from umi_edge.tools.demo import TOOLS

FAST = settings(max_examples=150, deadline=None)
_JSONISH = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(
    ['{', '}', '[', ']', '"', ':', ',', '1', '-1e999', 'null', 'true', '"expression"', '"value"', '\\u00', '\n'])),
    max_size=25).map("".join)


@FAST
@given(_JSONISH, st.sampled_from([t.parameters for t in TOOLS]))
def test_parse_arguments_never_raises(text, schema):
    import jsonschema

    args, problem = parse_arguments(text, schema)
    if problem is None:
        jsonschema.validate(args, schema)
    else:
        assert args == {} and isinstance(problem, str) and "\n" not in problem[:200]


@FAST
@given(st.one_of(st.sampled_from(TOOLS.names), st.text(max_size=12)), _JSONISH)
def test_demo_tool_calls_never_raise(action, arguments):
    r = TOOLS.call(action, arguments, timeout=5)
    assert isinstance(r.text, str)
    assert r.error in (None, "unknown_tool", "bad_arguments", "raised"), r   # never a timeout or not_json


_EXPR = st.lists(st.sampled_from(
    ["1", "0", "9", "2.5", "1e308", "999", "+", "-", "*", "/", "//", "%", "**", "(", ")", "(", ")", ",", " ",
     "sqrt(", "abs(", "log(", "factorial(", "max(", "round(", "pi", "e", "x", "%", "^", "of", "__", ".", "'"]),
    max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(_EXPR)
def test_calculator_returns_a_finite_number_or_a_calc_error(expr):
    try:
        value = evaluate(expr)
    except CalcError:
        return
    assert type(value) in (int, float) and (isinstance(value, int) or math.isfinite(value))
