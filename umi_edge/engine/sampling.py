"""A role's token choice: its llama.cpp sampler chain, its compiled grammars, and sampling under a grammar."""
from __future__ import annotations

import ctypes
import math
from collections import OrderedDict

import numpy as np

from ..errors import ToolError
from . import _native
from .base import Sampling

_GRAMMAR_CACHE = 16     # compiled grammars kept per role (a tool set rarely needs more than two)
_GREEDY_TOP = 128       # greedy under a grammar: best-first over the top logits before the whole vocab
_REDRAWS = 8            # sampling under a grammar: fresh draws tried before masking the whole vocab

_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class _Candidates:
    """A reusable llama_token_data_array over a numpy buffer."""

    def __init__(self, size: int):
        L = _native.lib()
        self.data = np.zeros(size, dtype=_TOKEN_DATA)
        self.arr = L.llama_token_data_array(data=self.data.ctypes.data_as(L.llama_token_data_p), size=size,
                                            selected=-1, sorted=False)

    def load(self, ids, logits) -> None:
        n = len(ids)
        self.data["id"][:n] = ids
        self.data["logit"][:n] = logits
        self.data["p"][:n] = 0.0
        self.arr.size, self.arr.selected, self.arr.sorted = n, -1, False

    def apply(self, smpl) -> None:
        _native.lib().llama_sampler_apply(smpl, ctypes.byref(self.arr))

    def finite(self) -> np.ndarray:
        return np.flatnonzero(np.isfinite(self.data["logit"][:self.arr.size]))


class RoleSampler:
    """The chain (all samplers set explicitly, protocol.md §4.5) plus grammar handling for one role."""

    def __init__(self, model, sampling: Sampling):
        self.model = model
        self.sampling = sampling
        self.greedy = sampling.temperature <= 0
        self.chain = self._build_chain(sampling)
        self._grammars: OrderedDict[str, object] = OrderedDict()
        L = _native.lib()
        self._one = L.llama_token_data()
        self._one_arr = L.llama_token_data_array(data=ctypes.pointer(self._one), size=1, selected=-1, sorted=False)
        self._top: _Candidates | None = None
        self._full: _Candidates | None = None

    @staticmethod
    def _build_chain(s: Sampling):
        L = _native.lib()
        cp = L.llama_sampler_chain_default_params()
        cp.no_perf = True
        chain = L.llama_sampler_chain_init(cp)
        if s.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        # llama.cpp's usual order; top_k <= 0, typical 1, top_p >= 1 and min_p <= 0 leave the logits as they are.
        # No repetition penalties (neutral in the reference).
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(s.top_k))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_typical(1.0, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(s.top_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(s.min_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(s.temperature))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(s.seed & 0xFFFFFFFF))
        return chain

    def grammar(self, text: str, role: str):
        """The compiled grammar for `text`, reset to its start (compiled once, then cached)."""
        L = _native.lib()
        g = self._grammars.get(text)
        if g is not None:
            self._grammars.move_to_end(text)
            L.llama_sampler_reset(g)
            return g
        _native.clear_errors()
        g = L.llama_sampler_init_grammar(self.model.vocab, text.encode("utf-8"), b"root")
        if not g:
            raise ToolError(f"llama.cpp rejected the grammar for role {role!r}: {_native.last_error()}")
        self._grammars[text] = g
        if len(self._grammars) > _GRAMMAR_CACHE:
            _, old = self._grammars.popitem(last=False)
            L.llama_sampler_free(old)
        return g

    def _allowed(self, g, t: int) -> bool:
        self._one.id, self._one.logit = t, 0.0
        self._one_arr.size, self._one_arr.selected = 1, -1
        _native.lib().llama_sampler_apply(g, ctypes.byref(self._one_arr))
        return self._one.logit != -math.inf

    def sample(self, ctx, g) -> int | None:
        """The next token. Under a grammar, the chain's choice is kept when the grammar allows it (the usual
        case); otherwise greedy takes the best allowed token and sampling draws again (a rejection sampler:
        exactly the grammar-masked distribution), masking the whole vocab only as the last resort.
        None when the grammar admits nothing."""
        L = _native.lib()
        t = L.llama_sampler_sample(self.chain, ctx, -1)
        if g is None or self._allowed(g, t):
            return t
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(self.model.n_vocab,))
        if self.greedy:
            k = min(_GREEDY_TOP, len(logits))   # a vocab smaller than that: all of it
            top = np.argpartition(logits, -k)[-k:]
            top = top[np.argsort(-logits[top], kind="stable")]
            if self._top is None:
                self._top = _Candidates(_GREEDY_TOP)
            self._top.load(top, logits[top])
            self._top.apply(g)
            ok = self._top.finite()
            if len(ok):
                return int(self._top.data["id"][ok[0]])
        else:
            for _ in range(_REDRAWS):
                t = L.llama_sampler_sample(self.chain, ctx, -1)
                if self._allowed(g, t):
                    return t
        if self._full is None:
            self._full = _Candidates(self.model.n_vocab)
        self._full.load(np.arange(self.model.n_vocab, dtype=np.intc), logits)
        self._full.apply(g)
        if not len(self._full.finite()):
            return None
        self._full.apply(self.chain)
        sel = self._full.arr.selected
        return int(self._full.data["id"][sel]) if sel >= 0 else None

    def close(self) -> None:
        L = _native.lib()
        for g in self._grammars.values():
            L.llama_sampler_free(g)
        self._grammars.clear()
        if self.chain is not None:
            L.llama_sampler_free(self.chain)
            self.chain = None
