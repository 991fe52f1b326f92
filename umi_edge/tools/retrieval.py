"""Tool retrieval for large tool sets: when a set holds more than `top_k` tools, the planner and the caller
see only the `top_k` ranked against the query and the run's history so far (recomputed every step).

Ranking is BM25 (the `bm25s` library) over each tool's name, description and argument names, split into
words (`stock_level`, `stockLevel` and `stock-level` all read "stock level"). `EmbeddingRanker` ranks by
cosine similarity of any embedding function (the base model's own, in `umi-edge eval retrieval`), for
comparison.

Order (`tool_order`): the shipped adapters call the last tool the docs list far more often than the others
when the tools are new to them, so with "relevance" (the default) the offered tools are ranked by how well
they match the query and listed backwards, the best last. The order depends on the query alone, so it holds
for the whole task and a step that offers the same tools as the last one renders the same docs (the
planner's KV prefix stays valid). A ToolSet with `keep_order` (the demo tools, the order the adapters were
trained on) and `tool_order = "given"` keep the set's own order.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Sequence

from ..errors import ConfigError
from .core import Tool, ToolSet

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# planner thoughts and calls say which tool they mean; observations are JSON whose keys match unrelated tools
RANKED_TURNS = ("user", "assistant", "caller")
# question and request words: frequent in queries and in descriptions ("How many ..."), never a tool's subject
_QUERY_WORDS = frozenset("what which who whom whose when where why how many much do does did i me my you your we "
                         "our us can could would should please tell".split())


def words(text: str) -> list[str]:
    """Lower-case word stems of `text`: identifiers split at case changes, '_', '-', '.', digits apart;
    English stop words and question words dropped; a plural 's' stripped (so "units" meets "unit")."""
    from bm25s.stopwords import STOPWORDS_EN

    out = []
    for w in _WORD.findall(text):
        w = w.lower()
        if w in STOPWORDS_EN or w in _QUERY_WORDS:
            continue
        if len(w) > 3 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.append(w)
    return out


def tool_text(t: Tool) -> str:
    """What a tool is ranked by: its name, description and argument names."""
    props = t.parameters.get("properties") or {}
    return " ".join([t.name, t.description, *props])


class Ranker(Protocol):
    """Scores every tool of the set it was built on against a text (higher = more relevant)."""

    def scores(self, text: str) -> list[float]: ...


class BM25Ranker:
    """BM25 (bm25s, Lucene variant) over `tool_text` of each tool."""

    name = "bm25"

    def __init__(self, tools: Iterable[Tool], *, k1: float = 1.5, b: float = 0.75):
        try:
            import bm25s
        except ImportError:  # a base dependency; only a broken install lacks it
            raise ConfigError("tool retrieval needs the bm25s package: pip install umi-edge") from None
        logging.getLogger("bm25s").setLevel(logging.WARNING)   # it logs every index build at DEBUG
        self.tools = list(tools)
        corpus = [words(tool_text(t)) or [""] for t in self.tools]
        self._bm25 = bm25s.BM25(k1=k1, b=b)
        self._bm25.index(corpus, show_progress=False)

    def scores(self, text: str) -> list[float]:
        # bm25s scores a repeated query word once per occurrence: the history's words weigh as often as said
        tokens = [w for w in words(text) if w in self._bm25.vocab_dict]
        if not tokens:
            return [0.0] * len(self.tools)
        return [float(s) for s in self._bm25.get_scores(tokens)]


class EmbeddingRanker:
    """Cosine similarity between `embed([text])` and `embed([tool_text(t) for t in tools])`.

    `embed` maps a list of strings to a list of equal-length float vectors."""

    name = "embedding"

    def __init__(self, tools: Iterable[Tool], embed: Callable[[list[str]], Sequence[Sequence[float]]]):
        import numpy as np

        self.tools = list(tools)
        self._embed = embed
        self._docs = _normalized(np.asarray(embed([tool_text(t) for t in self.tools]), dtype=np.float64))

    def scores(self, text: str) -> list[float]:
        import numpy as np

        q = _normalized(np.asarray(self._embed([text]), dtype=np.float64))[0]
        return [float(s) for s in self._docs @ q]


def _normalized(m):
    import numpy as np

    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms == 0, 1.0, norms)


def ranking_text(query: str, history: Iterable[Any] = ()) -> str:
    """The text tools are ranked against at a step: the query, then the planner's thoughts and the calls
    so far (history turns with a `role` and `text`; observations are left out)."""
    return "\n".join([query, *(t.text for t in history if t.role in RANKED_TURNS[1:])])


NAMED_BONUS = 1e6   # above any BM25 score or cosine similarity


def mentioned(names: Iterable[str], text: str) -> set[str]:
    """The tool names that occur in `text` as whole identifiers ("calculator." counts, "my_calculator" does not)."""
    return {n for n in names if re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", text)}


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the k best scores; ties go to the earlier tool. Returned in the set's order."""
    best = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
    return sorted(best)


ORDERS = ("relevance", "given")


@dataclass(frozen=True)
class Offer:
    """The tools offered at one step: `tools` (a ToolSet, in the order the docs list them), out of `total`."""

    tools: ToolSet
    total: int
    ranker: str | None          # None: every tool is offered (the set is not larger than top_k)
    scores: tuple[float, ...] = ()   # the offered tools' scores, in `tools` order

    @property
    def names(self) -> tuple[str, ...]:
        return self.tools.names

    @property
    def filtered(self) -> bool:
        return self.ranker is not None


class ToolRetriever:
    """Chooses the tools each step offers: all of them when the set has at most `top_k` (or `top_k` is 0),
    else the `top_k` best against `ranking_text(query, history)`; lists them in `order` (see the module
    docstring). Caches per offered set whatever the loop derives from it (docs, grammar) through `derive`."""

    def __init__(self, tools: ToolSet, top_k: int = 0, *, ranker: Ranker | None = None, order: str = "relevance"):
        check_top_k(top_k, "tool_top_k")
        check_order(order, "tool_order")
        self.tools = tools
        self.top_k = top_k
        self.active = bool(top_k) and len(tools) > top_k
        self.ordered = order == "relevance" and not getattr(tools, "keep_order", False) and len(tools) > 1
        self._ranker = ranker
        self._derived: dict[tuple, Any] = {}
        self._order_keys: tuple[str, dict[str, tuple]] | None = None   # (query, tool name -> sort key)

    @property
    def static(self) -> bool:
        """Whether every task is offered the same tools in the same order, so the docs are a fixed head."""
        return not self.active and not self.ordered

    @property
    def ranker(self) -> Ranker:
        if self._ranker is None:   # built on first use: a set that fits never imports bm25s
            self._ranker = BM25Ranker(self.tools)
        return self._ranker

    def offer(self, query: str, history: Iterable[Any] = ()) -> Offer:
        if not self.active and not self.ordered:
            return Offer(self.tools, len(self.tools), None)
        every = list(self.tools)
        if not self.active:
            return Offer(ToolSet(self._in_order(query, every)), len(every), None)
        text = ranking_text(query, history)
        scores = self.ranker.scores(text)
        chosen = top_k(self._boosted(text, scores), self.top_k)
        score = {every[i].name: round(scores[i], 4) for i in chosen}
        offered = [every[i] for i in chosen]
        if self.ordered:
            offered = self._in_order(query, offered)
        return Offer(ToolSet(offered), len(every), getattr(self.ranker, "name", "custom"),
                     tuple(score[t.name] for t in offered))

    def _boosted(self, text: str, scores: Sequence[float]) -> list[float]:
        # a tool named outright (a plan's "with the calculator", an earlier call) outranks every unnamed one
        named = mentioned(self.tools.names, text)
        return [s + NAMED_BONUS if n in named else s for n, s in zip(self.tools.names, scores)]

    def _in_order(self, query: str, tools: list[Tool]) -> list[Tool]:
        """`tools` ranked by their match with the query alone (ties in the set's order, as `top_k` ranks) and
        listed backwards, the best last."""
        if self._order_keys is None or self._order_keys[0] != query:
            text = ranking_text(query)
            boosted = self._boosted(text, self.ranker.scores(text))
            self._order_keys = (query, {n: (s, -i) for i, (n, s) in enumerate(zip(self.tools.names, boosted))})
        keys = self._order_keys[1]
        return sorted(tools, key=lambda t: keys[t.name])

    def derive(self, offer: Offer, what: str, make: Callable[[ToolSet], Any]) -> Any:
        """`make(offer.tools)`, computed once per (what, offered names) for this run."""
        key = (what, offer.names)
        if key not in self._derived:
            self._derived[key] = make(offer.tools)
        return self._derived[key]


def check_order(value: Any, where: str) -> str:
    """`value` must be one of ORDERS."""
    if value not in ORDERS:
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, ORDERS))}, not {value!r}")
    return value


def check_top_k(value: Any, where: str) -> int:
    """`value` must be a non-negative integer (0 = offer every tool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where} must be a non-negative integer (0 offers every tool), not {value!r}")
    return value
