"""Property-based tests: the protocol's output parsers never raise and keep their invariants on any text."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from umi_edge.protocol import alpha_umi as au

# Text biased towards the protocol's own markers so the interesting branches are reached.
_PIECES = st.sampled_from(["Action:", "Action Input:", "Next: caller.", "Next: conclusion.", "Next: give up.",
                           "</s>", "caller: ", ": ", "\n", " ", ".", ",", "{", "}", '"', "none", "Next:"])
TEXT = st.lists(st.one_of(st.text(max_size=12), _PIECES), max_size=20).map("".join)
FAST = settings(max_examples=200, deadline=None)


@FAST
@given(TEXT)
def test_route_never_raises_and_cuts_at_a_marker(text):
    r = au.route(text)
    assert r.kind in ("caller", "conclusion", "give_up")
    assert r.plan.endswith(("Next: caller.", "Next: conclusion.", "Next: give up."))
    if r.marker:
        assert text.startswith(r.plan)
        marker = {"caller": "Next: caller.", "conclusion": "Next: conclusion.", "give_up": "Next: give up."}[r.kind]
        assert r.plan.count(marker) == 1   # cut right after the first occurrence
    else:
        assert r.plan == text + " Next: caller."


@FAST
@given(TEXT)
def test_postprocess_never_raises(text):
    out = au.postprocess_planner(text)
    assert out == "none" or out.strip() not in ("", ".", ",")
    assert au.is_empty(text) == (out == "none" and text.strip() not in ("none", ": none"))
    assert au.postprocess(text) == text.strip()


@FAST
@given(TEXT)
def test_parse_call_never_raises(text):
    c = au.parse_call(text)
    assert isinstance(c.action, str) and isinstance(c.arguments, str)
    assert "Action Input:" not in c.action
    assert c.has_action or c.action == "none"
    assert c.has_input or c.arguments == "{}"


_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True)
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=8)


@FAST
@given(_NAME, st.dictionaries(st.text(max_size=8), _JSON, max_size=4), st.booleans())
def test_parse_call_round_trips_well_formed_calls(name, args, pretty):
    arguments = json.dumps(args, indent=2 if pretty else None)
    c = au.parse_call(f"Action: {name}\nAction Input: {arguments}")
    if not any(m in arguments for m in ("Action:", "Action Input:", "</s>")):   # the reference cuts at these
        assert (c.action, json.loads(c.arguments)) == (name, args)


@FAST
@given(TEXT)
def test_encode_round_trips(text):
    ids = au.encode(text, lambda s: [ord(c) + 3 for c in s], 1, 2)
    assert ids[0] == 1 and ids.count(2) == text.count("</s>")
    assert "".join("</s>" if i == 2 else chr(i - 3) for i in ids[1:]) == text


@FAST
@given(TEXT)
def test_truncate_observation(text):
    out = au.truncate_observation(text, 16)
    assert out == text if len(text) <= 16 else out == text[:16] + "..."


@FAST
@given(_NAME, st.dictionaries(st.text(max_size=8), st.one_of(_JSON, TEXT), max_size=4), TEXT)
def test_structured_parse_round_trips_any_arguments(name, args, noise):
    arguments = json.dumps(args)
    c = au.parse_call(f"Action: {name}\nAction Input: {arguments}", [name, noise])
    assert (c.action, json.loads(c.arguments)) == (name, args)
