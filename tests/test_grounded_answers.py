"""Grounded answers: under the answer grammar every number a summarizer writes is one the query, the calls or
the observations hold (as `eval.tasks.fabricated_numbers` checks after the fact) — for random sampling over a
byte-level vocabulary and for a random-weight team run by the loop, which without the grammar does write
numbers from nowhere."""
from __future__ import annotations

import pytest

L = pytest.importorskip("llama_cpp")
from test_grammar import GrammarSampler, admits, vocab, write_byte_vocab  # noqa: E402,F401  (vocab: a fixture)

from umi_edge.engine.base import Sampling  # noqa: E402
from umi_edge.engine.fake import FakeEngine  # noqa: E402
from umi_edge.eval.tasks import fabricated_numbers, numbers_in  # noqa: E402
from umi_edge.events import Answer, Outcome  # noqa: E402
from umi_edge.loop import Limits, run_team  # noqa: E402
from umi_edge.protocol.grammar import MAX_GROUNDED, answer_grammar, grounded_numbers  # noqa: E402
from umi_edge.tools import ToolSet, tool  # noqa: E402

GROUNDS = ["What is the water temperature in tank TK-07, and how many fish live there?",
           '{"tank_id": "TK-07", "water_temp_c": 14.2, "fish": 1340, "ratio": 34.2857142857, "ids": [3,5]}']


def test_spellings_of_grounded_numbers():
    got = set(grounded_numbers(GROUNDS))
    assert {"07", "14.2", "14", "1340", "1,340", "34.2857142857", "34.29", "34.3", "34", "3", "5"} <= got
    assert not {"3,5", "2857142857", "8"} & got                      # a JSON list is two numbers; no fragments
    assert grounded_numbers(["1,234,567.5 and v1.2.3"]) == sorted(
        {"1234567.5", "1,234,567.5", "1234567", "1,234,567", "1", "2", "3"}, key=lambda s: (len(s), s))


def test_grammar_admits_grounded_and_rejects_invented_numbers(vocab):
    g = answer_grammar(GROUNDS)
    ok = ["The water in TK-07 is 14.2 °C and 1,340 fish live there.", "About 34.29, i.e. 34.3 or 34.",
          "No numbers at all.", "Tanks 3, 5 and 1340.", "It is 14.", ""]
    bad = ["The water is 14.3 °C.", "1341 fish", "TK-7", "14.25", "13400", "3,5", "1340.5", "2857142857"]
    for text in ok:
        assert admits(vocab, g, text), text
    for text in bad:
        assert not admits(vocab, g, text), text
    assert admits(vocab, answer_grammar([]), "Nothing to report.")
    assert not admits(vocab, answer_grammar([]), "It is 4.")
    assert answer_grammar([" ".join(str(i) for i in range(MAX_GROUNDED + 1))]) is None   # too many: left free


def test_random_sampling_never_fabricates(vocab):
    g = answer_grammar(GROUNDS)
    written = 0
    for seed in range(40):
        s = GrammarSampler(vocab, g, seed)
        try:
            text, _ = s.sample(80)
        finally:
            s.close()
        answer = text.decode("utf-8", "replace")
        written += len(numbers_in(answer))
        assert fabricated_numbers(answer, GROUNDS) == [], answer
    assert written > 20          # the sampler did write numbers: all of them grounded


@tool
def tank_reading(tank_id: str) -> dict:
    """Water temperature of a tank.

    Args:
        tank_id: Tank code, e.g. "TK-99".
    """
    return {"tank_id": tank_id, "water_temp_c": 14.2}


def _random_role(tmp_path_factory, name: str, *, seed: int, n_ctx: int, sampling: Sampling):
    """A role on a random-weight one-layer model with the byte-level vocabulary (yields it, then frees it)."""
    from umi_edge.engine.llama import LlamaBackend

    path = tmp_path_factory.mktemp("tiny") / "random.gguf"
    write_byte_vocab(path, n_embd=32, seed=seed)
    with LlamaBackend() as backend:
        yield backend.new_role(backend.load_model(path), name=name, n_ctx=n_ctx, n_threads=1, sampling=sampling)


@pytest.fixture(scope="module")
def summarizer(tmp_path_factory):
    yield from _random_role(tmp_path_factory, "summarizer", seed=3, n_ctx=2048,
                            sampling=Sampling(temperature=1.5, seed=7))


@pytest.mark.parametrize("grounded", [True, False])
def test_random_team_answers_only_grounded_numbers(summarizer, grounded):
    query = "What is the water temperature in tank TK-07?"
    fabricated = []
    for k in range(8):
        team = {"planner": FakeEngine(["I look it up.\n Next: caller.", "Done.\n Next: conclusion."], name="planner"),
                "caller": FakeEngine(['Action: tank_reading\nAction Input: {"tank_id": "TK-07"}'], name="caller"),
                "summarizer": summarizer}
        events = list(run_team(query, team, ToolSet([tank_reading]),
                               limits=Limits(max_steps=3, summarizer_tokens=96, grounded_answers=grounded)))
        assert isinstance(events[-1], Outcome) and events[-1].status == "answered", events[-1]
        (answer,) = [e.text for e in events if isinstance(e, Answer)]
        fabricated += fabricated_numbers(answer, [query, '{"tank_id": "TK-07"}',
                                                  '{"tank_id": "TK-07", "water_temp_c": 14.2}'])
    if grounded:
        assert fabricated == []
    else:                        # the same random model, free: it does write numbers found nowhere
        assert fabricated


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    yield from _random_role(tmp_path_factory, "backbone", seed=5, n_ctx=4096,
                            sampling=Sampling(temperature=1.0, seed=11))


def test_single_model_conclusions_are_grounded_too(backbone):
    query = "What is the water temperature in tank TK-07?"
    answers = []
    for k in range(40):
        events = list(run_team(f"{query} ({k})", {"backbone": backbone}, ToolSet([tank_reading]),
                               protocol="alpha-umi/toolbench-backbone-v1",
                               limits=Limits(max_steps=2, backbone_tokens=400)))
        grounds = [e.text for e in events if type(e).__name__ in ("Observation", "Call")] + [f"{query} ({k})"]
        answers += [(e.text, grounds) for e in events if isinstance(e, Answer)]
        if len(answers) >= 6:
            break
    assert answers, "the random backbone never concluded"
    for answer, grounds in answers:
        assert fabricated_numbers(answer, grounds) == [], answer
