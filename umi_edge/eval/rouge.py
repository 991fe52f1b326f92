"""Rouge-L F exactly as `rouge==1.0.1` computes `Rouge().get_scores(hyps, refs, avg=True)["rouge-l"]["f"]`.

Behaviour reproduced from the package (default `exclusive=True`):
- a text is split on "." into sentences; pieces of length 0 are dropped (whitespace-only pieces are kept
  and become the empty sentence ""); whitespace inside a sentence is collapsed;
- tokens are `sentence.split(" ")` (so the empty sentence contributes the token ""), no lower-casing,
  stemming or punctuation removal;
- summary-level union LCS: for every (reference sentence, hypothesis sentence) pair one LCS is
  reconstructed with the package's tie-break (move up only when strictly better, else left) and its
  *distinct words* join one set shared across all pairs; hits = size of that set;
- m, n = numbers of distinct tokens of reference and hypothesis; R = hits/m, P = hits/n,
  F = 2·(P·R)/(P + R + 1e-8); the average is a plain left-to-right sum divided by the count.

Deliberate divergences (the package raises, we score):
- a text with no sentence (empty, or only dots) raises ValueError in the package; here the pair scores
  0.0 and is counted in `RougeResult.n_empty` so callers can flag it;
- the package reconstructs the LCS recursively and hits RecursionError when a reference sentence and a
  hypothesis sentence together exceed about 1000 words; this implementation is iterative.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def sentences(text: str) -> list[str]:
    """The package's sentence split: on ".", drop zero-length pieces, collapse whitespace in each."""
    return [" ".join(piece.split()) for piece in text.split(".") if len(piece) > 0]


def _words(sents: Sequence[str]) -> list[str]:
    return [w for s in sents for w in s.split(" ")]


def _lcs_words(x: Sequence[str], y: Sequence[str]) -> set[str]:
    """Words of the LCS of x and y, reconstructed with the package's tie-break (x = reference side)."""
    n, m = len(x), len(y)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        xi, row, prev = x[i - 1], table[i], table[i - 1]
        for j in range(1, m + 1):
            if xi == y[j - 1]:
                row[j] = prev[j - 1] + 1
            else:
                row[j] = prev[j] if prev[j] > row[j - 1] else row[j - 1]
    out: set[str] = set()
    i, j = n, m
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            out.add(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return out


def rouge_l_f(hypothesis: str, reference: str) -> float | None:
    """Summary-level Rouge-L F of one pair; None where the package would raise (a text without sentences)."""
    hyp, ref = sentences(hypothesis), sentences(reference)
    if not hyp or not ref:
        return None
    m = len(set(_words(ref)))
    n = len(set(_words(hyp)))
    union: set[str] = set()
    hyp_words = [s.split(" ") for s in hyp]
    for r in ref:
        r_words = r.split(" ")
        for h in hyp_words:
            union |= _lcs_words(r_words, h)
    llcs = len(union)
    r_lcs = llcs / m
    p_lcs = llcs / n
    return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8))


@dataclass(frozen=True)
class RougeResult:
    f: float          # the average Rouge-L F over all pairs
    n_pairs: int
    n_empty: int      # pairs scored 0.0 because a text had no sentence (the package raises there)


def rouge_l(hyps: Sequence[str], refs: Sequence[str]) -> RougeResult:
    """Average Rouge-L F over aligned pairs; 0.0 for no pairs (the reference evaluator's guard)."""
    if len(hyps) != len(refs):
        raise ValueError(f"rouge_l: {len(hyps)} hypotheses but {len(refs)} references")
    if not refs:
        return RougeResult(0, 0, 0)
    total = 0
    n_empty = 0
    for h, r in zip(hyps, refs):
        f = rouge_l_f(h, r)
        if f is None:
            n_empty += 1
            f = 0.0
        total = total + f
    return RougeResult(total / len(refs), len(refs), n_empty)
