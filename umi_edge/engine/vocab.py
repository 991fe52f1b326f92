"""A model's vocabulary without its weights (llama.cpp `vocab_only`): tokenizing for roles decoded elsewhere.

A remote role encodes its prompt here, with the same llama.cpp tokenizer code a local role uses, so the ids a
server receives are the ids a local context would evaluate. `Vocab.load` reads only the GGUF's metadata
(milliseconds, no weights mapped); `Vocab.of_model` borrows the vocab of a model a local role already loaded.
"""
from __future__ import annotations

import ctypes
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

from ..errors import ModelError
from . import _native


class Vocab:
    """tokenize / detokenize over one llama_vocab, plain or with special tokens (read-only: any thread)."""

    def __init__(self, ptr, path: Path, owner=None):
        L = _native.lib()
        self.path = path
        self._vocab = ptr
        self._owner = owner          # keeps a borrowed model alive while this vocab is used
        self.n_vocab = L.llama_vocab_n_tokens(ptr)
        self.bos_id = L.llama_vocab_bos(ptr)
        self.eos_id = L.llama_vocab_eos(ptr)
        self.add_bos = bool(L.llama_vocab_get_add_bos(ptr))   # whether a text prompt gets BOS from the server
        # whether tokenizing text puts a space before it (SentencePiece's dummy prefix), seen rather than read
        self.space_prefix = self.pieces(self.tokenize("a")).startswith(b" ")

    @classmethod
    def load(cls, path, stack: ExitStack) -> "Vocab":
        """The vocab of the GGUF at `path`, its model freed when `stack` closes (weights are never read)."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise ModelError(f"model file not found: {p} (a remote role reads its vocab from it)")
        head = _native.gguf_header(p)
        if head.get("general.type") == "adapter":
            raise ModelError(f"{p} is a LoRA adapter GGUF; a remote role needs the served model's GGUF (or a "
                             f"vocab-only GGUF of it) for its vocab")
        L = _native.lib()
        mp = L.llama_model_default_params()
        mp.vocab_only = True
        _native.clear_errors()
        ptr = L.llama_model_load_from_file(str(p).encode("utf-8"), mp)
        if not ptr:
            raise ModelError(f"llama.cpp could not read the vocab of {p}: {_native.last_error()}")
        stack.callback(L.llama_model_free, ptr)
        return cls(L.llama_model_get_vocab(ptr), p.resolve())

    @classmethod
    def of_model(cls, model) -> "Vocab":
        """The vocab of a loaded engine.llama.SharedModel (no second load)."""
        return cls(model.vocab, model.path, owner=model)

    def _check_open(self) -> None:
        if self._owner is not None and getattr(self._owner, "vocab", 1) is None:
            raise ModelError(f"the vocab of {self.path} was freed with its model")

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """Text → ids, no BOS. `special=False` (the RoleEngine contract): every byte is text, so a `</s>` in a
        tool output stays characters. `special=True`: special-token spellings become those tokens, as a server
        reads a text prompt."""
        self._check_open()
        L = _native.lib()
        data = text.encode("utf-8")
        n = len(data) + 8
        for _ in range(2):
            buf = (L.llama_token * n)()
            got = L.llama_tokenize(self._vocab, data, len(data), buf, n, False, special)
            if got >= 0:
                return buf[:got]
            n = -got
        raise RuntimeError("llama_tokenize kept asking for a larger buffer")

    def continuation(self, text: str) -> list[int]:
        """`text` tokenized as the continuation of a sequence: ids whose raw pieces spell exactly `text` (a
        SentencePiece vocab would otherwise open it with its dummy-prefix space), for output a server streamed
        as text only."""
        ids = self.tokenize(text)
        raw = text.encode("utf-8")
        if self.pieces(ids) == raw:
            return ids
        after_newline = self.tokenize("\n" + text)
        for k in range(1, min(3, len(after_newline))):
            if self.pieces(after_newline[:k]).strip(b" ") == b"\n" and self.pieces(after_newline[k:]) == raw:
                return after_newline[k:]
        return ids

    def pieces(self, ids: Sequence[int]) -> bytes:
        """The exact bytes of `ids` (raw token pieces; no first-token space stripping or clean-up of spaces
        as llama_detokenize does; special tokens as nothing)."""
        L = _native.lib()
        buf = ctypes.create_string_buffer(256)
        out = bytearray()
        for t in ids:
            n = L.llama_token_to_piece(self._vocab, t, buf, 256, 0, False)
            if n < 0:
                return b""
            out += buf.raw[:n]
        return bytes(out)

    def detokenize(self, ids: Sequence[int], *, special: bool = False) -> str:
        """Ids → text. `special=False` renders special tokens as nothing (as a local role does);
        `special=True` spells them out (`</s>`), for servers that take the prompt as text."""
        self._check_open()
        return _native.detokenize(self._vocab, ids, special=special)

    def is_eog(self, token: int) -> bool:
        """An end-of-generation token (EOS, EOT): a server may report it among the output ids; a role's
        `Generation.tokens` never holds it."""
        self._check_open()
        return bool(_native.lib().llama_vocab_is_eog(self._vocab, token))

    def is_special(self, token: int) -> bool:
        """A control (BOS, EOS, chat markers) or unknown token: the tokens only special-token parsing of text
        produces, so what untrusted text must never become."""
        self._check_open()
        L = _native.lib()
        return bool(L.llama_vocab_get_attr(self._vocab, token) & (L.LLAMA_TOKEN_ATTR_CONTROL | L.LLAMA_TOKEN_ATTR_UNKNOWN))
