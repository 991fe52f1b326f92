"""Fitting a prompt into the context: the one rule (engine/context.py) and the loop's overflow policies."""
from __future__ import annotations

from test_loop import HEAD, PLAN_TAIL, run

from umi_edge.engine.context import CONTEXT_MARGIN, MIN_N_CTX, left_cut, output_limit, prompt_budget
from umi_edge.engine.fake import fake_roles
from umi_edge.errors import ConfigError
from umi_edge.events import Notice
from umi_edge.loop import Limits


def test_the_rule():
    assert (MIN_N_CTX, CONTEXT_MARGIN) == (64, 8)
    assert output_limit(600, 512) == 300 and output_limit(600, 100) == 100
    assert prompt_budget(600, 100) == 492 and prompt_budget(600, 512) == 292
    assert left_cut(list(range(10)), 64, 50) == (list(range(10)), 0)
    ids, dropped = left_cut(list(range(100)), 64, 32)     # budget 64 - 32 - 8 = 24
    assert (ids, dropped) == (list(range(76, 100)), 76)


def _script():
    return dict(planner=["add. Next: caller.", "add again. Next: caller.", "Done. Next: conclusion."],
                caller=['Action: add\nAction Input: {"a": 1, "b": 2}', 'Action: add\nAction Input: {"a": 3, "b": 4}'],
                summarizer=["7"])


LIMITS = dict(planner_tokens=100, caller_tokens=100, summarizer_tokens=100)


def _tight_n_ctx() -> int:
    """A context one token short of the third planner prompt."""
    roles = fake_roles(**_script())
    run("q", roles, limits=Limits(**LIMITS))
    return len(roles["planner"].prompt_ids[2]) - 1 + 100 + CONTEXT_MARGIN


def test_overflow_drops_the_oldest_whole_step_and_keeps_instructions_docs_and_query():
    n_ctx = _tight_n_ctx()
    roles = fake_roles(**_script(), n_ctx=n_ctx)
    events, out = run("q", roles, limits=Limits(**LIMITS))
    assert out.status == "answered" and out.answer == "7"
    third = roles["planner"].prompts[2]
    assert third.startswith(HEAD + "user: q</s>assistant: add again. Next: caller.</s>caller: Action: add")
    assert third.endswith(PLAN_TAIL) and "add. Next" not in third
    assert len(roles["planner"].prompt_ids[2]) <= n_ctx - 100 - CONTEXT_MARGIN
    notices = [e for e in events if isinstance(e, Notice) and e.code == "context_truncated"]
    assert any(n.role == "planner" and n.step == 3 and "dropped the 3 oldest history turn(s)" in n.text
               for n in notices)
    assert out.usage.truncated == 0      # the engines never had to cut


def test_left_cut_is_kept_as_an_option():
    n_ctx = _tight_n_ctx() - 20
    roles = fake_roles(**_script(), n_ctx=n_ctx)
    events, out = run("q", roles, limits=Limits(**LIMITS, truncation="left"))
    third = roles["planner"].prompts[2]
    assert not third.startswith(HEAD) and third.endswith(PLAN_TAIL)     # the reference's cut: the head goes first
    assert len(roles["planner"].prompt_ids[2]) == n_ctx - 100 - CONTEXT_MARGIN
    assert any(isinstance(e, Notice) and e.code == "context_truncated" and "cut to its last" in e.text
               for e in events)


def test_a_head_that_alone_overflows_falls_back_to_the_left_cut():
    roles = fake_roles(planner=["x Next: give up."], n_ctx=600)
    events, _ = run("q", roles, limits=Limits(planner_tokens=100))
    assert [e.code for e in events if isinstance(e, Notice)] == ["context_truncated"]
    assert "last 492" in events[0].text


def test_truncation_setting_is_checked():
    try:
        Limits(truncation="middle")
    except ConfigError as e:
        assert "truncation must be one of head, left" in str(e)
    else:
        raise AssertionError("Limits accepted truncation='middle'")


def test_truncation_is_a_set_key(tmp_path):
    from umi_edge.registry import load_registry, resolve_set

    models = tmp_path / "models.toml"
    models.write_text('[models.m]\npath = "m.gguf"\n[sets.ref]\nmodel = "m"\ntruncation = "left"\n'
                      '[sets.bad]\nmodel = "m"\ntruncation = "middle"\n')
    registry = load_registry(models)
    assert resolve_set("ref", registry=registry).truncation == "left"
    assert resolve_set("default", registry=registry).truncation == "head"
    try:
        resolve_set("bad", registry=registry)
    except ConfigError as e:
        assert "[sets.bad]: truncation must be one of head, left, not 'middle'" in str(e)
    else:
        raise AssertionError("a bad truncation was accepted")
