"""Token streaming: the engine's on_token callback (fake and llama.cpp) and the loop's Token events."""
from __future__ import annotations

import threading
import time

import pytest

from umi_edge import Team
from umi_edge.engine.fake import Scripted, fake_roles
from umi_edge.events import Token
from umi_edge.loop import Limits, run_team


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


def scripts(answer="The sum is 42.", delay=0.0):
    return fake_roles(
        planner=["I need the sum.\n Next: caller.", "I know it now.\n Next: conclusion."],
        caller=['Action: add\nAction Input: {"a": 2, "b": 40}'],
        summarizer=[Scripted(answer, token_delay=delay)],
    )


def _plain(events):
    """Event dicts without their timings."""
    out = []
    for e in events:
        d = {k: v for k, v in e.to_dict().items() if k not in ("seconds", "usage_by_role")}
        d["usage"] = {k: v for k, v in d["usage"].items() if not k.endswith("seconds")}
        out.append(d)
    return out


def test_tokens_join_to_each_generation_and_leave_the_event_stream_alone():
    log: list = []
    with_tokens = list(run_team("What is 2 + 40?", scripts(), [add], on_token=lambda t: log.append(t)))
    without = list(run_team("What is 2 + 40?", scripts(), [add]))
    assert _plain(with_tokens) == _plain(without)          # Token events never enter the stream
    assert all(isinstance(t, Token) and t.kind == "token" for t in log)
    by = {}
    for t in log:
        by.setdefault((t.step, t.role), []).append(t.text)
    assert "".join(by[(1, "planner")]) == "I need the sum.\n Next: caller."
    assert "".join(by[(1, "caller")]) == 'Action: add\nAction Input: {"a": 2, "b": 40}'
    assert "".join(by[(2, "summarizer")]) == with_tokens[-1].answer == "The sum is 42."
    assert len(by[(2, "summarizer")]) == len("The sum is 42.")   # one piece per (character) token


def test_tokens_arrive_while_the_role_decodes():
    seen: list = []
    events = []
    roles = scripts(delay=0.02)
    for e in run_team("q", roles, [add], on_token=lambda t: seen.append((time.monotonic(), t.role))):
        events.append((time.monotonic(), e))
    answer_at = next(t for t, e in events if e.kind == "answer")
    summ = [t for t, role in seen if role == "summarizer"]
    assert len(summ) == len("The sum is 42.")
    # the first answer token is out well before the Answer event (13 more tokens, 20 ms apart)
    assert answer_at - summ[0] > 0.15


def test_cancel_stops_a_streaming_generation():
    roles = scripts(answer="x" * 400, delay=0.01)
    cancel = threading.Event()
    got: list = []

    def on_token(t):
        got.append(t)
        if t.role == "summarizer" and len([x for x in got if x.role == "summarizer"]) == 5:
            cancel.set()

    with Team(roles, [add]) as team:
        t0 = time.monotonic()
        events = list(team.run("q", cancel=cancel, on_token=on_token))
    assert events[-1].status == "cancelled"
    assert time.monotonic() - t0 < 2
    assert 5 <= len([x for x in got if x.role == "summarizer"]) < 20


def test_a_callback_that_raises_is_our_fault_and_ends_the_run():
    def boom(t):
        raise RuntimeError("sink closed")

    events = list(run_team("q", scripts(), [add], on_token=boom))
    assert events[-1].status == "error" and "sink closed" in events[-1].reason


# --- llama.cpp -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_roles(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from test_grammar import write_byte_vocab

    from umi_edge.engine.base import Sampling
    from umi_edge.engine.llama import LlamaBackend

    path = tmp_path_factory.mktemp("tiny") / "random.gguf"
    write_byte_vocab(path, n_embd=32, seed=3)
    with LlamaBackend() as backend:
        model = backend.load_model(path)
        yield {r: backend.new_role(model, name=r, n_ctx=2048, n_threads=1,
                                   sampling=Sampling(temperature=1.0, seed=i + 7))
               for i, r in enumerate(("planner", "caller", "summarizer"))}


def test_llama_on_token_sees_every_output_token_forced_ones_included(random_roles):
    from umi_edge.protocol.grammar import caller_grammar
    from umi_edge.tools.demo import TOOLS

    role = random_roles["caller"]
    prompt = [role.bos_id] + role.tokenize("call a tool: ")
    ids: list[int] = []
    g = role.generate(prompt, max_tokens=120, grammar=caller_grammar(TOOLS, max_tokens=120), on_token=ids.append)
    assert g.n_forced > 0 and tuple(ids) == g.tokens
    ids.clear()
    free = role.generate(prompt, max_tokens=40, on_token=ids.append)
    assert tuple(ids) == free.tokens and len(ids) == free.n_generated


def test_llama_token_events_join_to_each_output(random_roles):
    """Random bytes include partial UTF-8 sequences: the stream waits for whole characters."""
    from umi_edge.tools.demo import TOOLS

    log: list[Token] = []
    limits = Limits(max_steps=2, planner_tokens=24, caller_tokens=128, summarizer_tokens=24)
    for k in range(4):
        log.clear()
        events = list(run_team(f"task {k}", random_roles, TOOLS, limits=limits, on_token=log.append))
        assert events[-1].status in ("answered", "gave_up", "max_steps"), events[-1].reason
        for e in events:
            if e.kind == "call":
                streamed = "".join(t.text for t in log if t.step == e.step and t.role == "caller")
                assert streamed.strip() == e.text
            if e.kind == "answer":
                streamed = "".join(t.text for t in log if t.step == e.step and t.role == "summarizer")
                assert streamed.strip() == e.text
