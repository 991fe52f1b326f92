"""Forced text under a grammar: find what the grammar admits as the only continuation, without the model.

The grammar sampler is opaque, so we ask it about single-byte tokens: if exactly one byte survives, the
next character is forced; walk on a clone until a choice appears. The forced text is then tokenized the
model's own way and appended in one decode batch instead of being sampled token by token. The last token
of a forced run is left to the model (it may merge with what follows: `Action: ` + ` calculator`), unless
the grammar ends there.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from . import _native

_MAX_FORCED_CHARS = 512
_NEEDED = bytes([9, 10, 13]) + bytes(range(0x20, 0x7F))   # ASCII the probe must see to be trustworthy


class ForcedText:
    """Per-vocab probe: one token per single byte (plus EOS) and a reusable candidate array."""

    def __init__(self, model):
        L = _native.lib()
        self.model = model
        by_byte: dict[int, int] = {}
        buf = ctypes.create_string_buffer(16)
        for tid in range(model.n_vocab):
            if L.llama_token_to_piece(model.vocab, tid, buf, 16, 0, False) == 1:
                by_byte.setdefault(buf.raw[0], tid)
        # without every ASCII byte a lone survivor proves nothing, so the fast path stays off
        self.enabled = all(b in by_byte for b in _NEEDED)
        ids = list(by_byte.values()) + [model.eos_id]
        self._byte = np.array(list(by_byte.keys()) + [-1], dtype=np.int32)   # -1 marks EOS
        self._ids = np.array(ids, dtype=np.intc)
        self._data = np.zeros(len(ids), dtype=np.dtype(
            [("id", np.intc), ("logit", np.single), ("p", np.single)], align=True))
        self._arr = L.llama_token_data_array(
            data=self._data.ctypes.data_as(L.llama_token_data_p), size=len(ids), selected=-1, sorted=False)
        self._lock = threading.Lock()    # roles on one model may decode in parallel threads

    def _survivors(self, g) -> np.ndarray:
        L = _native.lib()
        self._data["id"] = self._ids
        self._data["logit"] = 0.0
        self._arr.size, self._arr.selected, self._arr.sorted = len(self._ids), -1, False
        L.llama_sampler_apply(g, ctypes.byref(self._arr))
        return np.flatnonzero(np.isfinite(self._data["logit"]))

    def after(self, g, budget: int) -> tuple[list[int], bool]:
        """Token ids the grammar forces from its current state (at most `budget`), and whether the grammar
        then admits only end-of-generation. The grammar `g` itself is not advanced."""
        if not self.enabled or budget <= 0:
            return [], False
        with self._lock:
            return self._after(g, budget)

    def _after(self, g, budget: int) -> tuple[list[int], bool]:
        s = self._survivors(g)
        if len(s) != 1:
            return [], False
        if self._byte[s[0]] < 0:
            return [], True
        L = _native.lib()
        walk = L.llama_sampler_clone(g)
        text = bytearray()
        ends = False
        try:
            while len(text) < _MAX_FORCED_CHARS:
                s = self._survivors(walk)
                if len(s) != 1:
                    break
                b = int(self._byte[s[0]])
                if b < 0:
                    ends = True
                    break
                if b >= 0x80:   # a multi-byte character: leave it to the model
                    break
                text.append(b)
                L.llama_sampler_accept(walk, int(self._ids[s[0]]))
        finally:
            L.llama_sampler_free(walk)
        if not text:
            return [], False
        ids = self._tokens_for(bytes(text))
        if not ids:
            return [], False
        if not ends:
            ids = ids[:-1]
        if len(ids) > budget:
            return ids[:budget], False
        return ids, ends

    def _pieces(self, ids) -> bytes:
        # what the grammar sees: raw token pieces, no first-token space stripping (unlike llama_detokenize)
        L = _native.lib()
        buf = ctypes.create_string_buffer(256)
        out = bytearray()
        for t in ids:
            n = L.llama_token_to_piece(self.model.vocab, t, buf, 256, 0, False)
            if n < 0:
                return b""
            out += buf.raw[:n]
        return bytes(out)

    def _tokens_for(self, text: bytes) -> list[int] | None:
        """`text` tokenized the model's way, as a continuation: its pieces must spell exactly `text`."""
        ids = self.model.tokenize(text.decode("ascii"))
        if self._pieces(ids) == text:
            return ids
        # SentencePiece prefixes a fresh string with a space: tokenize after a newline and cut it off
        ids = self.model.tokenize("\n" + text.decode("ascii"))
        for k in range(1, min(3, len(ids))):
            if self._pieces(ids[:k]).strip(b" ") == b"\n" and self._pieces(ids[k:]) == text:
                return ids[k:]
        return None
