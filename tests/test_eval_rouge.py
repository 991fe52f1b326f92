"""Rouge-L re-implementation against the real `rouge==1.0.1` package on generated texts."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rouge as rouge_pkg  # rouge==1.0.1, from the [test] extra
from umi_edge.eval.rouge import rouge_l, rouge_l_f, sentences


# few distinct words so LCS ties (where the reconstruction order matters) are frequent
_pieces = st.sampled_from(["a", "b", "c", "The", "the", "x", ".", ". ", "..", " ", "  ", "\n", "\t", "é", "a.b", ",", "\xa0"])
_text = st.lists(_pieces, max_size=24).map("".join)


def _package(hyps, refs):
    try:
        return rouge_pkg.Rouge().get_scores(hyps, refs, avg=True)["rouge-l"]["f"]
    except ValueError:
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_text, _text), min_size=1, max_size=4))
def test_matches_package_bit_for_bit(pairs):
    hyps = [h for h, _ in pairs]
    refs = [r for _, r in pairs]
    expected = _package(hyps, refs)
    got = rouge_l(hyps, refs)
    if expected is None:
        # the package raises on a text without sentences; we score that pair 0.0 and count it
        assert got.n_empty >= 1
        assert any(not sentences(t) for t in hyps + refs)
    else:
        assert got.n_empty == 0
        assert got.f == expected


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=30), st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=30))
def test_lcs_tie_break_matches_package(x, y):
    h, r = " ".join(x), " ".join(y)
    assert rouge_l_f(h, r) == _package([h], [r])


def test_known_values():
    assert rouge_l([], []).f == 0
    same = "The answer is 42. It was computed"
    assert rouge_l([same], [same]).f == pytest.approx(1.0, abs=1e-7)
    assert rouge_l(["totally different words"], [same]).f == 0.0
    # distinct tokens: a repeated word counts once in m and n
    assert rouge_l_f("a a a", "a") == pytest.approx(1.0, abs=1e-7)
    # whitespace-only piece between dots becomes the empty token ""
    assert sentences("a. .b") == ["a", "", "b"]
    assert rouge_l_f("...", "a") is None and rouge_l_f("", "a") is None
    r = rouge_l(["...", same], [same, same])
    assert r.n_empty == 1 and r.f == pytest.approx(0.5, abs=1e-7)


def test_long_sentences_do_not_recurse():
    words = " ".join(f"w{i}" for i in range(3000))
    assert rouge_l_f(words, words) == pytest.approx(1.0, abs=1e-7)


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        rouge_l(["a"], [])
