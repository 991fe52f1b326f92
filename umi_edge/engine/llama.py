"""llama.cpp engine: each GGUF loaded once and shared; per role its own context (KV cache), sampler chain and LoRA.

Built on llama-cpp-python's low-level ctypes layer, not `llama_cpp.Llama` (which owns its model, so three
roles would load the weights three times). One `LlamaBackend` ExitStack owns every native object.

Behaviour worth knowing (details at each place):
- Prefix reuse: a role remembers the token ids its KV cache holds and evaluates only past the longest
  common prefix with the new prompt (at least the last prompt token, to get fresh logits).
- Overflow: prompts longer than `n_ctx - max_tokens - 8` keep their last tokens (the α-UMi real-time
  reference); `Generation.n_truncated` says how many were dropped. `max_tokens` is capped at n_ctx // 2.
- Stop: on an end-of-generation token only. An EOS sampled as the very first token (no grammar) is kept,
  fed back and generation goes on (the reference's `force_generate`); it is in `tokens`, not in `text`.
- Grammar: GBNF text, compiled once per role and text. Text the grammar forces is appended and decoded
  in one batch instead of being sampled token by token (see `forced.py`).
- Threads: one generation per role at a time (a per-role lock); different roles may run in different
  threads. `n_gpu_layers` passes through to llama.cpp for Metal/CUDA builds; on CPU builds it is a no-op.
"""
from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

from ..errors import ModelError
from . import _native

_native.preload()   # before numpy (via .forced / .sampling): see _native.preload

from .base import Generation, Sampling, TokenCallback  # noqa: E402
from .forced import ForcedText  # noqa: E402
from .gguf_header import model_header  # noqa: E402
from .context import MIN_N_CTX, left_cut, output_limit  # noqa: E402
from .kv import check_context, model_shape  # noqa: E402
from .sampling import RoleSampler  # noqa: E402

log = logging.getLogger(__name__)

_KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}    # ggml_type ids


def _default_threads() -> tuple[int, int]:
    # decode is memory-bound: half the logical cores (llama-cpp-python's default). Prompt batches use the
    # same count, as llama.cpp's own CLI does: on an oversubscribed machine ggml's spinning thread pool
    # made 2-thread batches up to 3x slower than 1 thread (measured on the shared 2-core test box).
    n = max((os.cpu_count() or 1) // 2, 1)
    return n, n


def _extra_bufts_default() -> bool:
    # On CPUs reporting AMX, llama.cpp's AMX repack path crashed (SIGSEGV in llama_decode) for Q4_1 on
    # our test VM; plain CPU buffers are safe everywhere. UMI_EDGE_EXTRA_BUFTS=1/0 overrides.
    env = os.environ.get("UMI_EDGE_EXTRA_BUFTS")
    if env is not None:
        return env == "1"
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_tile" not in f.read()
    except OSError:
        return True


# ggml types the CPU backend repacks into buffers of its own (ggml-cpu/repack.cpp) when extra buffer types are
# on: Q4_0 Q8_0 Q2_K Q4_K Q5_K Q6_K IQ4_NL MXFP4 Q1_0
_REPACKED_TYPES = frozenset((2, 8, 10, 12, 13, 14, 20, 39, 41))


def _repacked(path: Path) -> bool:
    """Whether llama.cpp may repack some of the model's weights. It reads them from the file into a copy of
    their own; mmapped, the file pages it read stay resident beside that copy (a q4_0 7B: 7.2 GB instead of
    3.7), so such a model is read into memory instead of mapped (same load time and speed, measured)."""
    from .gguf_header import read_header

    try:
        tensors = read_header(path, (), tensors=True).tensors or ()
    except ModelError:
        return False    # llama.cpp reports a bad file itself
    # the token embeddings are looked up by row, never multiplied: llama.cpp keeps them in the mapped file
    return any(t.type in _REPACKED_TYPES and not t.name.startswith("token_embd.") for t in tensors)


class SharedModel:
    """One loaded llama_model (weights mmapped once) and its vocab; shared by every role on it."""

    def __init__(self, path: Path, ptr, *, n_gpu_layers: int):
        L = _native.lib()
        self.path = path
        self.ptr = ptr
        self.n_gpu_layers = n_gpu_layers
        self.vocab = L.llama_model_get_vocab(ptr)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.bos_id = L.llama_vocab_bos(self.vocab)
        self.eos_id = L.llama_vocab_eos(self.vocab)
        self.size_bytes = L.llama_model_size(ptr)
        self.head_dim_k = self._meta_int(f"{self._meta('general.architecture')}.attention.key_length") or (
            L.llama_model_n_embd(ptr) // max(L.llama_model_n_head(ptr), 1))
        self._tok_buf = (L.llama_token * 4096)()
        self._forced: ForcedText | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SharedModel({str(self.path)!r}, n_vocab={self.n_vocab})"

    def _freed(self) -> None:
        self.ptr = self.vocab = None

    def _check_open(self) -> None:
        if self.vocab is None:
            raise ModelError(f"model {self.path} was freed: its LlamaBackend is closed")

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = _native.lib().llama_model_meta_val_str(self.ptr, key.encode(), buf, 256)
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def _meta_int(self, key: str) -> int:
        v = self._meta(key)
        return int(v) if v and v.isdigit() else 0

    def tokenize(self, text: str) -> list[int]:
        """Plain text → ids: no BOS, no special-token parsing (the vocab's own space-prefix rule applies)."""
        self._check_open()
        L = _native.lib()
        data = text.encode("utf-8")
        with self._lock:
            n = L.llama_tokenize(self.vocab, data, len(data), self._tok_buf, len(self._tok_buf), False, False)
            if n >= 0:
                return self._tok_buf[:n]
        buf = (L.llama_token * -n)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, len(buf), False, False)
        return buf[:n]

    def detokenize(self, ids: Sequence[int]) -> str:
        """Ids → text; special tokens (BOS/EOS) render as nothing, and (like HF's decode) a SentencePiece
        vocab's first piece loses its dummy-prefix space."""
        self._check_open()
        return _native.detokenize(self.vocab, ids)

    def is_eog(self, token: int) -> bool:
        return bool(_native.lib().llama_vocab_is_eog(self.vocab, token))

    def forced(self) -> ForcedText:
        """The forced-text finder for this vocab (built on first grammar use: one pass over the vocab)."""
        with self._lock:
            if self._forced is None:
                self._forced = ForcedText(self)
            return self._forced


class LoraAdapter:
    """A GGUF LoRA adapter initialised once on its base model; set on the contexts of the roles that use it."""

    def __init__(self, path: Path, ptr, model: SharedModel):
        self.path, self.ptr, self.model = path, ptr, model

    def __repr__(self) -> str:
        return f"LoraAdapter({str(self.path)!r})"


def _as_tuple(adapter) -> tuple:
    return () if adapter is None else (adapter,) if isinstance(adapter, LoraAdapter) else tuple(adapter)


class _ModelText:
    """tokenize / detokenize through the role's SharedModel (RoleEngine contract)."""

    model: SharedModel
    enforces_grammar = True

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.model.detokenize(ids)


class LlamaRole(_ModelText):
    """One role's llama_context: own KV cache and sampler chain over a shared model (RoleEngine contract)."""

    def __init__(self, model: SharedModel, *, name: str, adapter: LoraAdapter | Sequence[LoraAdapter] | None,
                 lora_scale: float,
                 n_ctx: int, n_threads: int | None, n_batch: int, n_ubatch: int, sampling: Sampling,
                 flash_attn: bool, type_k: str, type_v: str, prefix_reuse: bool,
                 trunk_adapter: LoraAdapter | Sequence[LoraAdapter] | None = None, n_seq: int = 1):
        self.name = name
        self.model = model
        # one adapter or a stack (e.g. a shared stage-1 LoRA + this role's stage-2 LoRA), summed by llama.cpp
        self.adapters: tuple[LoraAdapter, ...] = (() if adapter is None else (adapter,)
                                                  if isinstance(adapter, LoraAdapter) else tuple(adapter))
        # what a prompt's trunk (generate(trunk=n)) is evaluated under; None: the role's own adapters
        self.trunk_adapters: tuple[LoraAdapter, ...] | None = (
            None if trunk_adapter is None else (trunk_adapter,) if isinstance(trunk_adapter, LoraAdapter)
            else tuple(trunk_adapter))
        self.sampling = sampling
        self.prefix_reuse = prefix_reuse
        self.bos_id, self.eos_id = model.bos_id, model.eos_id
        self._stack = ExitStack()
        self._lock = threading.Lock()
        self._kv: list[int] = []           # token ids the KV cache holds, in positions 0..len-1
        self._kv_adapters: list[tuple] = []   # per position, the adapters its keys and values were computed under
        self._disk = None                  # (PrefixCache, prefix ids): see use_prefix_cache
        # a pool (n_seq > 1) holds one sequence per role in one unified KV: _kv / _kv_adapters / _user describe
        # the active sequence `_seq`; the others wait in `_seqs` (see sequence())
        self.n_seq = n_seq
        self._seq = 0
        self._seqs: dict[int, tuple[list, list, object]] = {}
        self._seq_names: dict[int, str] = {0: name}
        self.ctx = None
        try:
            self._init_native(model, adapter, lora_scale, n_ctx, n_threads, n_batch, n_ubatch, flash_attn,
                              type_k, type_v)
        except BaseException:
            self._stack.close()
            raise

    def _init_native(self, model, adapter, lora_scale, n_ctx, n_threads, n_batch, n_ubatch, flash_attn,
                     type_k, type_v):
        L = _native.lib()
        name = self.name

        threads, threads_batch = _default_threads()
        p = L.llama_context_default_params()
        p.n_ctx = n_ctx
        p.n_batch = n_batch
        p.n_ubatch = min(n_batch, n_ubatch)
        p.n_seq_max = self.n_seq
        # one pool of n_ctx cells for every sequence (not n_ctx / n_seq each), so a long planner prompt can use
        # what the summarizer does not
        p.kv_unified = self.n_seq > 1
        # we only ever read the last position's logits; the default (n_batch outputs) reserves a
        # n_ubatch x n_vocab float buffer (~100 MB for a 49k vocab) in every context
        p.n_outputs_max = self.n_seq     # llama.cpp reserves at least one output row per sequence
        p.n_threads = n_threads or threads
        p.n_threads_batch = n_threads or threads_batch
        p.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if type_k == "auto":
            # q8_0 keys where 32-value blocks divide the head size (llama.cpp refuses others, and a refused
            # context left later contexts on the same model computing wrong logits in our tests)
            type_k = "q8_0" if model.head_dim_k % 32 == 0 else "f16"
        self.type_k, self.type_v = type_k, type_v
        # what a saved KV depends on besides weights and tokens (prefix_cache.py keys on it)
        self.layout = {"n_ctx": n_ctx, "type_k": type_k, "type_v": type_v, "flash_attn": bool(flash_attn),
                       "n_seq_max": p.n_seq_max, "kv_unified": bool(p.kv_unified), "chunk": min(n_ubatch, n_batch)}
        p.type_k = _KV_TYPES[type_k]
        p.type_v = _KV_TYPES[type_v]
        p.no_perf = True
        _native.clear_errors()
        ctx = L.llama_init_from_model(model.ptr, p)
        if not ctx:
            raise ModelError(f"llama.cpp could not create a context for role {name!r} on {model.path} "
                             f"(n_ctx={n_ctx}): {_native.last_error()}")
        self.ctx = ctx
        self._stack.callback(L.llama_free, ctx)
        self.n_ctx = L.llama_n_ctx(ctx)
        self.n_batch = min(n_batch, self.n_ctx)    # llama.cpp clamps it the same way
        # the prompt goes in micro-batch chunks: same compute, and a cancel is seen between them
        self._prompt_chunk = min(n_ubatch, self.n_batch)
        self._mem = L.llama_get_memory(ctx)

        self._lora_scale = lora_scale
        self._sampler = RoleSampler(model, self.sampling)
        self._stack.callback(self._sampler.close)
        self._user = None        # the RoleView (or None: this role) that used the context last
        self._active: tuple | None = None   # the adapters set on the context now
        self._set_adapters(self.adapters, name)
        self._tok = (L.llama_token * max(n_batch, 1))()
        self._batch_one = L.llama_batch_get_one(self._tok, 1)   # reused for every single-token decode
        self._seq_batch = None
        if self.n_seq > 1:     # batches that name their sequence and positions
            self._seq_batch = L.llama_batch_init(max(n_batch, 1), 0, 1)
            self._stack.callback(L.llama_batch_free, self._seq_batch)

    # -- RoleEngine ------------------------------------------------------------------------------------
    @property
    def has_trunk(self) -> bool:
        """Whether generate(trunk=n) evaluates a prompt's first n tokens under a trunk adapter of its own."""
        return self.trunk_adapters is not None

    @property
    def cached_tokens(self) -> tuple[int, ...]:
        """The token ids this role's KV cache holds (for tests and diagnostics; empty while a view holds it)."""
        return self.held(0, None)

    def last_logits(self):
        """A numpy copy of the logits at the last evaluated position (e.g. after generate(..., max_tokens=0))."""
        import numpy as np

        ptr = _native.lib().llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,)).copy()

    def reset(self) -> None:
        """Forget the KV cache (the next prompt is evaluated in full)."""
        with self._lock:
            self._forget_all()

    def generate(self, prompt: Sequence[int], *, max_tokens: int, grammar: str | None = None,
                 cancel: threading.Event | None = None, trunk: int = 0,
                 on_token: TokenCallback | None = None) -> Generation:
        """Evaluate `prompt` past the cached common prefix, then decode until EOS / max_tokens / cancel.
        With a trunk adapter, the first `trunk` prompt tokens are evaluated under it (see `has_trunk`).
        `on_token` gets each output token id as it is produced (forced ones included)."""
        return self.generate_for(None, prompt, max_tokens, grammar, cancel, trunk, on_token)

    # -- what a RoleView on this context uses ---------------------------------------------------------------
    def owns(self, close) -> None:
        """Run `close` when this context is freed (a view's native resources go with its host)."""
        self._stack.callback(close)

    def generate_for(self, user, prompt, max_tokens, grammar, cancel, trunk=0, on_token=None) -> Generation:
        """generate() for this role (user None) or for a RoleView on this context."""
        name, sampler = (self.name, self._sampler) if user is None else (user.name, user._sampler)
        if self.ctx is None:
            raise ModelError(f"role {name!r} is closed" + ("" if user is None else
                                                           f" (its context, role {self.name!r}, was freed)"))
        prompt = list(prompt)
        if not prompt:
            raise ValueError("generate() needs a non-empty prompt (start it with bos_id)")
        with self._lock:
            self._switch(0 if user is None else user.seq)
            self._user = user
            own = self.adapters if user is None else user.adapters
            return self._generate(prompt, max_tokens, grammar, cancel, sampler, name, own, trunk, on_token)

    def _generate(self, prompt, max_tokens, grammar, cancel, sampler, name, own, trunk, on_token) -> Generation:
        L = _native.lib()
        max_tokens = output_limit(self.n_ctx, max_tokens)
        prompt, n_truncated = left_cut(prompt, self.n_ctx, max_tokens)
        if n_truncated:
            log.info("role %s: prompt truncated, kept the last %d tokens (%d dropped)", name, len(prompt), n_truncated)

        # positions [0, trunk) are computed under the trunk adapters, the rest (and the output) under `own`;
        # the last prompt token is never trunk: its logits start the output
        head = own if self.trunk_adapters is None else self.trunk_adapters
        trunk = max(0, min(trunk - n_truncated, len(prompt) - 1)) if head != own else 0
        t0 = time.perf_counter()
        n_reused = self._trim_to_prefix(prompt, trunk, head, own)
        if self.n_seq > 1:
            self._make_room(len(prompt) - n_reused + max_tokens, name)
        n_reused, save_at = self._from_disk(prompt, n_reused, trunk, head, own)
        n_eval = 0

        def done(stop, tokens=(), n_forced=0, t1=None):
            t2 = time.perf_counter()
            t1 = t2 if t1 is None else t1
            return Generation(
                text=self.model.detokenize(tokens), tokens=tuple(tokens), stop_reason=stop,
                n_prompt=len(prompt), n_reused=n_reused, n_evaluated=n_eval, n_generated=len(tokens),
                n_forced=n_forced, n_truncated=n_truncated, prompt_seconds=t1 - t0, decode_seconds=t2 - t1,
            )

        step = self._prompt_chunk
        spans = ((n_reused, max(n_reused, trunk), head), (max(n_reused, trunk), len(prompt), own))
        if save_at:     # a span ends where the saved prefix does, so its KV is written at that point
            spans = tuple(s for lo, hi, a in spans for s in (((lo, save_at, a), (save_at, hi, a))
                                                             if lo < save_at < hi else ((lo, hi, a),)))
        for lo, hi, adapters in spans:
            for i in range(lo, hi, step):
                if cancel is not None and cancel.is_set():
                    return done("cancelled")
                chunk = prompt[i:min(i + step, hi)]
                self._decode(chunk, adapters)
                n_eval += len(chunk)
            if hi == save_at and hi > lo:
                self._disk[0].save(self, prompt[:hi], adapters, seq=self._seq)
        t1 = time.perf_counter()

        g = sampler.grammar(grammar, name) if grammar is not None else None
        forced = self.model.forced() if g is not None else None
        out: list[int] = []
        pending: list[int] = []
        n_forced = 0
        stop = "length"
        while True:
            if g is not None:
                ids, ends = forced.after(g, max_tokens - len(out))
                for t in ids:
                    L.llama_sampler_accept(g, t)
                    if on_token is not None:
                        on_token(t)
                out += ids
                pending += ids
                n_forced += len(ids)
                if ends:
                    stop = "eos"
                    break
            if len(out) >= max_tokens:
                break
            if pending:
                if cancel is not None and cancel.is_set():
                    stop = "cancelled"
                    break
                if self._used() + len(pending) > self.n_ctx:
                    break
                if len(pending) == 1:
                    self._decode_one(pending[0], own)
                else:
                    self._decode(pending, own)
                pending = []
            t = sampler.sample(self.ctx, g)
            if t is None:       # the grammar admits nothing: cannot happen with a well-formed grammar
                log.warning("role %s: grammar dead end after %d tokens", name, len(out))
                stop = "stop"
                break
            if self.model.is_eog(t):
                if not out and g is None:
                    out.append(t)   # force_generate: keep a first EOS and go on
                    pending = [t]
                    if on_token is not None:
                        on_token(t)
                    continue
                stop = "eos"
                break
            out.append(t)
            pending = [t]
            if g is not None:
                L.llama_sampler_accept(g, t)
            if on_token is not None:
                on_token(t)
        return done(stop, out, n_forced, t1)

    # -- context sharing -------------------------------------------------------------------------------------
    def view(self, *, name: str, adapter: LoraAdapter | Sequence[LoraAdapter] | None = None,
             sampling: Sampling = Sampling()) -> "RoleView":
        """Another role on this context (its own adapters and sampler, the same KV memory). Roles that take
        turns, like the planner and the caller, then hold one KV cache instead of two. Each cached position
        remembers the adapters it was computed under, and a prompt reuses only positions computed under the
        adapters it wants there: roles with the same adapters (or none) reuse each other's prompt prefixes;
        roles with different ones share the trunk (tool docs and history) when the context has a trunk
        adapter, and nothing otherwise."""
        return RoleView(self, name=name, adapter=adapter, sampling=sampling)

    def _set_adapters(self, adapters: tuple, name: str) -> None:
        L = _native.lib()
        n = len(adapters)
        arr = (L.llama_adapter_lora_p_ctypes * max(n, 1))(*(a.ptr for a in adapters))
        scales = (ctypes.c_float * max(n, 1))(*([self._lora_scale] * n))
        if L.llama_set_adapters_lora(self.ctx, arr if n else None, n, scales if n else None) != 0:
            raise ModelError(f"llama.cpp could not set adapter(s) {', '.join(str(a.path) for a in adapters)} "
                             f"on role {name!r}: {_native.last_error()}")
        self._active = adapters

    # -- internals -------------------------------------------------------------------------------------
    def _trim_to_prefix(self, prompt: list[int], trunk: int, head: tuple, own: tuple) -> int:
        """Drop KV entries past the longest common prefix, a position counting as common when its token and its
        adapters (`head` before `trunk`, `own` after) match; returns how many prompt tokens are reused."""
        L = _native.lib()
        kv, tags = self._kv, self._kv_adapters
        n = 0
        if self.prefix_reuse:
            limit = min(len(kv), len(prompt))
            while n < limit and kv[n] == prompt[n] and tags[n] == (head if n < trunk else own):
                n += 1
            n = min(n, len(prompt) - 1)     # the last prompt token is always evaluated, for its logits
        if n < len(kv):
            if n == 0 or not L.llama_memory_seq_rm(self._mem, self._seq, n, -1):
                if self.n_seq > 1:
                    L.llama_memory_seq_rm(self._mem, self._seq, -1, -1)
                else:
                    L.llama_memory_clear(self._mem, True)
                n = 0
            del kv[n:], tags[n:]
        return n

    def use_prefix_cache(self, cache, prefix: Sequence[int]) -> None:
        """Warm start from disk (prefix_cache.PrefixCache): when a prompt starts with `prefix` (the head every
        task's first prompt shares: system prompt and tool docs) and no KV is cached in memory, its KV is loaded
        from `cache` if a matching file is there, else evaluated and saved to it. None turns it off."""
        self._disk = None if cache is None or not prefix else (cache, tuple(prefix))

    def _from_disk(self, prompt: list[int], n_reused: int, trunk: int, head: tuple, own: tuple) -> tuple[int, int]:
        """(prompt tokens now in the KV, position after which to save the prefix's KV or 0), trying the disk
        cache when the prompt starts with its prefix past what memory already holds."""
        if self._disk is None:
            return n_reused, 0
        cache, prefix = self._disk
        n = len(prefix)
        if n_reused >= n or n >= len(prompt) or tuple(prompt[:n]) != prefix:
            return n_reused, 0
        if head == own or n <= trunk:
            adapters = head if n <= trunk else own
        else:
            return n_reused, 0      # the prefix would mix trunk and role adapters: not a fixed head
        if n_reused == 0 and cache.load(self, prefix, adapters, seq=self._seq):
            self._kv[:] = prefix
            self._kv_adapters[:] = [adapters] * n
            return n, 0
        return n_reused, (0 if n_reused and cache.contains(self, prefix, adapters, seq=self._seq) else n)

    # -- sequences (the pool layout) ---------------------------------------------------------------------
    def sequence(self, *, name: str, adapter: LoraAdapter | Sequence[LoraAdapter] | None = None,
                 sampling: Sampling = Sampling()) -> "RoleView":
        """Another role on this context with a sequence of its own (the context was made with n_seq > 1): the
        roles share one pool of n_ctx KV cells, each keeps its own tokens, and a role that needs cells takes
        them from the others, the most recently added sequence first (see _make_room)."""
        seq = len(self._seq_names)
        if seq >= self.n_seq:
            raise ModelError(f"role {name!r}: context of role {self.name!r} has {self.n_seq} sequence(s), all "
                             f"taken ({', '.join(self._seq_names.values())}); create it with n_seq={seq + 1}")
        self._seq_names[seq] = name
        return RoleView(self, name=name, adapter=adapter, sampling=sampling, seq=seq)

    def _switch(self, seq: int) -> None:
        if seq != self._seq:
            self._seqs[self._seq] = (self._kv, self._kv_adapters, self._user)
            self._kv, self._kv_adapters, self._user = self._seqs.pop(seq, ([], [], None))
            self._seq = seq

    def held(self, seq: int, user) -> tuple[int, ...]:
        """The ids sequence `seq` holds if `user` used it last, else ()."""
        kv, _, last = (self._kv, None, self._user) if seq == self._seq else self._seqs.get(seq, ((), None, None))
        return tuple(kv) if last is user else ()

    def _used(self) -> int:
        """KV cells in use, every sequence counted."""
        return len(self._kv) + sum(len(kv) for kv, _, _ in self._seqs.values())

    def _make_room(self, need: int, name: str) -> None:
        """Free cells for `need` more tokens of the active sequence by dropping other sequences whole, the
        highest-numbered first: the summarizer's (added last) before the planner's trunk (sequence 0)."""
        L = _native.lib()
        for seq in sorted(self._seqs, reverse=True):
            if self._used() + need <= self.n_ctx:
                return
            kv, tags, _ = self._seqs[seq]
            if kv:
                log.info("role %s: %d KV cells of sequence %d (%s) dropped for room", name, len(kv), seq,
                         self._seq_names.get(seq, "?"))
                L.llama_memory_seq_rm(self._mem, seq, -1, -1)
                kv.clear()
                tags.clear()

    def drop_sequence(self, seq: int) -> None:
        """Forget one sequence of the pool (a sequence view's reset)."""
        with self._lock:
            if seq == self._seq:
                kv, tags = self._kv, self._kv_adapters
            else:
                kv, tags, _ = self._seqs.get(seq, ([], [], None))
            _native.lib().llama_memory_seq_rm(self._mem, seq, -1, -1)
            kv.clear()
            tags.clear()

    def _forget_all(self) -> None:
        _native.lib().llama_memory_clear(self._mem, True)
        for kv, tags in [(self._kv, self._kv_adapters)] + [(k, t) for k, t, _ in self._seqs.values()]:
            kv.clear()
            tags.clear()

    def _batch(self, ids: Sequence[int]):
        """The pool's batch for `ids` on the active sequence, at the positions after what it holds; only the
        last token's logits are computed."""
        b = self._seq_batch
        pos0 = len(self._kv)
        for j, t in enumerate(ids):
            b.token[j] = t
            b.pos[j] = pos0 + j
            b.n_seq_id[j] = 1
            b.seq_id[j][0] = self._seq
            b.logits[j] = 0
        b.logits[len(ids) - 1] = 1
        b.n_tokens = len(ids)
        return b

    def _use(self, adapters: tuple) -> None:
        if self._active != adapters:
            self._set_adapters(adapters, self.name)

    def _decode(self, ids: Sequence[int], adapters: tuple) -> None:
        L = _native.lib()
        self._use(adapters)
        for i in range(0, len(ids), self.n_batch):
            chunk = ids[i:i + self.n_batch]
            for j, t in enumerate(chunk):
                self._tok[j] = t
            batch = self._batch(chunk) if self._seq_batch is not None else L.llama_batch_get_one(self._tok, len(chunk))
            self._check(L.llama_decode(self.ctx, batch), len(chunk))
            self._kv.extend(chunk)
            self._kv_adapters.extend([adapters] * len(chunk))

    def _decode_one(self, t: int, adapters: tuple) -> None:
        self._use(adapters)
        self._tok[0] = t
        batch = self._batch((t,)) if self._seq_batch is not None else self._batch_one
        self._check(_native.lib().llama_decode(self.ctx, batch), 1)
        self._kv.append(t)
        self._kv_adapters.append(adapters)

    def _check(self, rc: int, n: int) -> None:
        if rc != 0:
            # the KV state is unknown after a failed decode: start clean next time
            self._forget_all()
            raise ModelError(f"llama_decode failed (code {rc}) in role {self.name!r} for {n} tokens: "
                             f"{_native.last_error()}")

    def close(self) -> None:
        if self.ctx is not None:
            self._stack.close()
            self.ctx = None


class RoleView(_ModelText):
    """A role that borrows another role's llama_context (RoleEngine contract): own name, adapters and sampler
    chain; KV memory (and trunk adapter) shared with the host and every other view (see LlamaRole.view)."""

    def __init__(self, host: LlamaRole, *, name: str, adapter, sampling: Sampling, seq: int = 0):
        for a in (() if adapter is None else (adapter,) if isinstance(adapter, LoraAdapter) else adapter):
            if a.model is not host.model:
                raise ModelError(f"adapter {a.path} was loaded for {a.model.path}, not {host.model.path}")
        self.host, self.name, self.model = host, name, host.model
        self.seq = seq      # 0: the host's sequence (view()); else a sequence of its own (sequence())
        self.adapters: tuple[LoraAdapter, ...] = (() if adapter is None else (adapter,)
                                                  if isinstance(adapter, LoraAdapter) else tuple(adapter))
        self.sampling = sampling
        self.bos_id, self.eos_id, self.n_ctx = host.bos_id, host.eos_id, host.n_ctx
        self._sampler = RoleSampler(host.model, sampling)
        host.owns(self._sampler.close)

    @property
    def cached_tokens(self) -> tuple[int, ...]:
        return self.host.held(self.seq, self)

    def last_logits(self):
        return self.host.last_logits()

    def reset(self) -> None:
        """Forget the KV cache (the next prompt is evaluated in full): a sequence of its own (sequence()) only that,
        else the host's whole context, whoever holds it."""
        if self.seq:
            self.host.drop_sequence(self.seq)
        else:
            self.host.reset()

    @property
    def has_trunk(self) -> bool:
        return self.host.has_trunk

    def use_prefix_cache(self, cache, prefix: Sequence[int]) -> None:
        """The host context's warm start from disk (LlamaRole.use_prefix_cache)."""
        self.host.use_prefix_cache(cache, prefix)

    def generate(self, prompt: Sequence[int], *, max_tokens: int, grammar: str | None = None,
                 cancel: threading.Event | None = None, trunk: int = 0,
                 on_token: TokenCallback | None = None) -> Generation:
        return self.host.generate_for(self, prompt, max_tokens, grammar, cancel, trunk, on_token)


class LlamaBackend:
    """Owns every native resource (models, adapters, contexts) through one ExitStack; use as a context manager.
    Set it up from one thread; after that, each role may generate in its own thread."""

    def __init__(self, *, verbose: bool = False):
        _native.set_verbose(verbose)
        _native.lib()    # llama_backend_init once per process, logger installed
        self._stack = ExitStack()
        self._models: dict[str, SharedModel] = {}
        self._adapters: dict[tuple[int, str], LoraAdapter] = {}
        self.roles: dict[str, LlamaRole] = {}

    def __enter__(self) -> "LlamaBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def models(self) -> tuple[SharedModel, ...]:
        return tuple(self._models.values())

    def load_model(self, path, *, n_gpu_layers: int = 0) -> SharedModel:
        """Load a GGUF model once per distinct real path (mmap); later calls return the same SharedModel."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise ModelError(f"model file not found: {p} (check the path, or fetch it with `umi-edge pull`)")
        key = os.path.realpath(p)
        if key in self._models:
            model = self._models[key]
            if model.n_gpu_layers != n_gpu_layers:
                log.warning("%s is already loaded with n_gpu_layers=%d; keeping that (asked for %d)",
                            p, model.n_gpu_layers, n_gpu_layers)
            return model
        head = model_header(p)
        if head.get("general.type") == "adapter":
            raise ModelError(f"{p} is a LoRA adapter GGUF, not a model: give it as the role's adapter and "
                             f"its base model as the model")
        L = _native.lib()
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = n_gpu_layers
        mp.use_extra_bufts = _extra_bufts_default()
        mp.load_mode = (L.LLAMA_LOAD_MODE_NONE if mp.use_extra_bufts and n_gpu_layers == 0 and _repacked(p)
                        else L.LLAMA_LOAD_MODE_MMAP)
        _native.clear_errors()
        ptr = L.llama_model_load_from_file(str(p).encode("utf-8"), mp)
        if not ptr:
            raise ModelError(f"llama.cpp could not load {p}: {_native.last_error()}")
        self._stack.callback(L.llama_model_free, ptr)
        model = SharedModel(Path(key), ptr, n_gpu_layers=n_gpu_layers)
        self._stack.callback(model._freed)     # runs first (LIFO): the model refuses use once freed
        self._models[key] = model
        return model

    def load_adapter(self, model: SharedModel, path) -> LoraAdapter:
        """Initialise a GGUF LoRA adapter on `model` once per file; it is applied only where a role sets it."""
        self._own(model)
        p = Path(path).expanduser()
        if not p.is_file():
            raise ModelError(f"adapter file not found: {p} (check the path or convert it with `umi-edge convert`)")
        key = (id(model), os.path.realpath(p))
        if key in self._adapters:
            return self._adapters[key]
        head = _native.gguf_header(p, ("general.type", "general.architecture", "adapter.type"))
        if head.get("general.type") != "adapter" or head.get("adapter.type", "lora") != "lora":
            raise ModelError(f"{p} is not a LoRA adapter GGUF (general.type={head.get('general.type', '?')}); "
                             f"convert the PEFT adapter with `umi-edge convert`")
        L = _native.lib()
        _native.clear_errors()
        ptr = L.llama_adapter_lora_init(model.ptr, str(p).encode("utf-8"))
        if not ptr:
            raise ModelError(f"llama.cpp refused adapter {p} for model {model.path} "
                             f"(is it for this base model?): {_native.last_error()}")
        self._stack.callback(L.llama_adapter_lora_free, ptr)
        adapter = LoraAdapter(Path(key[1]), ptr, model)
        self._adapters[key] = adapter
        return adapter

    def new_role(self, model: SharedModel, *, name: str, adapter: LoraAdapter | Sequence[LoraAdapter] | None = None,
                 n_ctx: int = 2048, n_threads: int | None = None, n_batch: int = 512, sampling: Sampling = Sampling(),
                 n_ubatch: int = 64, lora_scale: float = 1.0, flash_attn: bool = False,
                 type_k: str = "f16", type_v: str = "f16", prefix_reuse: bool = True,
                 trunk_adapter: LoraAdapter | Sequence[LoraAdapter] | None = None, n_seq: int = 1) -> LlamaRole:
        """A new context on `model` with its own KV cache and sampler chain (and `adapter`, if given).

        Defaults measured on SmolLM2-135M Q4_1, n_ctx 2048, 1 thread (engine/measure.py): three roles peak at
        1.36x the RSS of one llama_cpp.Llama and decode ~1.0-1.08x its speed. Only the last position's logits
        are kept (n_outputs_max=1); a 64-token micro-batch bounds the compute buffer (~6 MB; prompt speed
        within 2% of 128 or 512). The KV cache is f16 (the reference numerics). type_k="auto" (q8_0 keys
        where the head size allows) cuts RSS to 1.22x and decodes as fast, but turned SmolLM2's first
        planner turn of the demo task into a repetition loop, so it is opt-in. Flash attention stays off:
        on CPU it decoded 5-10% slower; a q8_0 V cache needs it.
        """
        self._own(model)
        for a in (*_as_tuple(adapter), *_as_tuple(trunk_adapter)):
            if a.model is not model:
                raise ModelError(f"adapter {a.path} was loaded for {a.model.path}, not {model.path}")
        if name in self.roles:
            raise ModelError(f"role {name!r} already exists in this backend")
        if type_k not in (*_KV_TYPES, "auto") or type_v not in _KV_TYPES:
            raise ModelError(f"role {name!r}: type_k/type_v must be one of {', '.join(_KV_TYPES)} (type_k also "
                             f"'auto'); got {type_k!r}/{type_v!r}")
        if type_v == "q8_0" and not flash_attn:
            raise ModelError(f"role {name!r}: a q8_0 V cache needs flash_attn=True")
        if not 1 <= n_seq <= 64:
            raise ModelError(f"role {name!r}: n_seq must be 1-64 (got {n_seq})")
        if n_ctx < MIN_N_CTX or n_batch < 1:
            raise ModelError(f"role {name!r}: n_ctx must be >= {MIN_N_CTX} and n_batch >= 1 (got {n_ctx}, {n_batch})")
        # before llama.cpp allocates: a too-large n_ctx failed only after minutes and gigabytes
        check_context(name, model.path, model_shape(model), n_ctx, type_k="f16" if type_k == "auto" else type_k,
                      type_v=type_v, memory=model.n_gpu_layers == 0)
        n_batch = min(n_batch, n_ctx)    # as llama.cpp clamps it; a huge n_batch would size our token buffer
        role = LlamaRole(model, name=name, adapter=adapter, lora_scale=lora_scale, n_ctx=n_ctx,
                         n_threads=n_threads, n_batch=n_batch, n_ubatch=n_ubatch, sampling=sampling,
                         flash_attn=flash_attn, type_k=type_k, type_v=type_v, prefix_reuse=prefix_reuse,
                         trunk_adapter=trunk_adapter, n_seq=n_seq)
        self._stack.callback(role.close)
        self.roles[name] = role
        return role

    def _own(self, model: SharedModel) -> None:
        if self._models.get(str(model.path)) is not model:
            raise ModelError(f"{model.path} was not loaded by this backend")

    def close(self) -> None:
        """Free contexts, then adapters, then models (reverse order of creation)."""
        self._stack.close()
        self.roles.clear()
        self._adapters.clear()
        self._models.clear()
