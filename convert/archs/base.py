"""The per-family converter contract: tensor names, tensor transforms, expected shapes, hyperparameters.

A family subclasses ArchConverter, sets `gguf_arch` and `defaults`, and overrides the
hooks it needs. Names come from gguf's TensorNameMap table and hparams from typed GGUFWriter setters, the
way llama.cpp's convert_hf_to_gguf.py does it, so the values match what llama.cpp writes and reads.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from umi_edge.errors import ConvertError

from ..tensor_ref import short_repr

# bounds for config.json's integers: far above any released model, far below what exhausts memory when
# they size the tensor tables (a layer count of 1e6 would build millions of expected tensor names)
INT_LIMITS: dict[str, tuple[int, int]] = {
    "num_hidden_layers": (1, 1024),
    "hidden_size": (1, 1 << 20),
    "num_attention_heads": (1, 1 << 14),
    "num_key_value_heads": (1, 1 << 14),
    "intermediate_size": (1, 1 << 22),
    "vocab_size": (1, 1 << 24),
    "head_dim": (1, 1 << 14),
}


def _finite(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _positive_finite(v) -> bool:
    return _finite(v) and v > 0


class ArchConverter:
    """One HF model family. Construct with the checkpoint's config.json dict."""

    gguf_arch: Any                      # gguf.MODEL_ARCH
    # transformers' config defaults for the keys we read: a minimal config.json then gives the values
    # llama.cpp writes (it reads configs through transformers.AutoConfig)
    defaults: dict[str, Any] = {}
    # checkpoint tensors llama.cpp drops (rotary caches saved by old transformers versions)
    skip_suffixes: tuple[str, ...] = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")

    def __init__(self, config: dict) -> None:
        import gguf

        self.config = {**self.defaults, **{k: v for k, v in config.items() if v is not None}}
        self.hf_arch = (config.get("architectures") or [""])[0]
        # every number is checked before it sizes anything (tensor tables, expected shapes, permutations)
        self.n_layer = self._int("num_hidden_layers", required=True)
        self.n_embd = self._int("hidden_size", required=True)
        self.n_head = self._int("num_attention_heads", required=True)
        self.n_head_kv = self._int("num_key_value_heads") or self.n_head
        self.n_ff = self._int("intermediate_size", required=True)
        self.n_vocab = self._int("vocab_size", required=True)
        if self._int("head_dim") is None and self.n_embd % self.n_head:
            raise ConvertError(f"config.json: hidden_size {self.n_embd} is not a multiple of num_attention_heads "
                               f"{self.n_head}; is this config.json from this checkpoint?")
        self.head_dim = self._int("head_dim") or self.n_embd // self.n_head
        if self.n_head % self.n_head_kv:
            raise ConvertError(f"config.json: num_attention_heads {self.n_head} is not a multiple of "
                               f"num_key_value_heads {self.n_head_kv}")
        if self.head_dim % 2:
            raise ConvertError(f"config.json: the head size is {self.head_dim}; rotary embeddings need an even one")
        self._check_floats()
        self.tied = bool(self.config.get("tie_word_embeddings", False))
        self.tensor_map = gguf.get_tensor_name_map(self.gguf_arch, self.n_layer)
        self._gguf = gguf

    def hp(self, key: str) -> Any:
        """A required config value; a missing one is the config's fault."""
        if key not in self.config:
            raise ConvertError(f"config.json: missing {key!r} (needed for {self.hf_arch})")
        return self.config[key]

    def _int(self, key: str, required: bool = False) -> int | None:
        """An integer hyperparameter within INT_LIMITS (None when absent and optional); JSON floats such as
        1e6, booleans and strings are refused rather than rounded."""
        if not required and self.config.get(key) is None:
            return None
        v = self.hp(key)
        lo, hi = INT_LIMITS[key]
        if type(v) is not int:
            raise ConvertError(f"config.json: {key} must be a whole number, not {short_repr(v, 40)}")
        if not lo <= v <= hi:
            raise ConvertError(f"config.json: {key} is {v}; expected {lo} to {hi}")
        return v

    def _check_floats(self) -> None:
        """Float hyperparameters written to the GGUF must be finite numbers, and rope scaling a mapping."""
        for key in ("rms_norm_eps", "rope_theta"):
            if (v := self.config.get(key)) is not None and not _positive_finite(v):
                raise ConvertError(f"config.json: {key} must be a positive finite number, not {short_repr(v, 40)}")
        for key in ("rope_parameters", "rope_scaling"):
            if (v := self.config.get(key)) is not None and not isinstance(v, dict):
                raise ConvertError(f"config.json: {key} must be an object, not {short_repr(v, 40)}")
        rp = self.rope_parameters()
        for key in ("factor", "rope_theta", "low_freq_factor", "high_freq_factor"):
            if (v := rp.get(key)) is not None and not _positive_finite(v):
                raise ConvertError(f"config.json: rope scaling {key} must be a positive finite number, "
                                   f"not {short_repr(v, 40)}")
        for key in ("extrapolation_factor", "beta_fast", "beta_slow", "attention_factor", "attn_factor"):
            if (v := rp.get(key)) is not None and not _finite(v):
                raise ConvertError(f"config.json: rope scaling {key} must be a finite number, not {short_repr(v, 40)}")
        omp = rp.get("original_max_position_embeddings")
        if rp.get("rope_type") == "yarn" and rp.get("factor") is not None and omp is None:
            raise ConvertError("config.json: yarn rope scaling needs original_max_position_embeddings")
        if omp is not None and not (type(omp) is int and 1 <= omp < 1 << 32):
            raise ConvertError(f"config.json: rope scaling original_max_position_embeddings must be a whole number, "
                               f"not {short_repr(omp, 40)}")
        n_ctx = self.config.get("max_position_embeddings")
        if n_ctx is not None and not (type(n_ctx) is int and 1 <= n_ctx < 1 << 32):
            raise ConvertError(f"config.json: max_position_embeddings must be a whole number from 1 to 2^32-1, "
                               f"not {short_repr(n_ctx, 40)}")

    # --- tensors ---------------------------------------------------------------------------------------

    def tensor_name(self, hf_name: str) -> str:
        """HF tensor name -> GGUF tensor name, from gguf's TensorNameMap."""
        new = self.tensor_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ConvertError(f"tensor {hf_name!r} has no GGUF name for {self.hf_arch}")
        return new

    def skip(self, hf_name: str) -> bool:
        """True for checkpoint tensors that are deliberately not written (reported in the summary)."""
        return hf_name.endswith(self.skip_suffixes)

    def row_permutation(self, hf_name: str, n_rows: int) -> np.ndarray | None:
        """Order in which source rows (dim 0) are written, or None to keep them. The streaming writer
        uses it to permute chunk by chunk."""
        return None

    def transform(self, hf_name: str, data: np.ndarray) -> np.ndarray:
        """The tensor as llama.cpp wants it (rows permuted where the family needs it; dim 0 only)."""
        perm = self.row_permutation(hf_name, data.shape[0]) if data.ndim else None
        return data if perm is None else data[perm]

    def layer_tensors(self, i: int) -> dict[str, tuple[int, ...]]:
        """Per-layer HF tensors and shapes (Llama layout); families add or remove entries."""
        p = f"model.layers.{i}."
        h, q, kv, ff = self.n_embd, self.n_head * self.head_dim, self.n_head_kv * self.head_dim, self.n_ff
        t = {
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "mlp.gate_proj.weight": (ff, h),
            p + "mlp.up_proj.weight": (ff, h),
            p + "mlp.down_proj.weight": (h, ff),
        }
        return t

    def expected_tensors(self) -> dict[str, tuple[int, ...]]:
        """Every HF tensor the checkpoint must hold, with its shape (lm_head only when not tied)."""
        t = {"model.embed_tokens.weight": (self.n_vocab, self.n_embd), "model.norm.weight": (self.n_embd,)}
        for i in range(self.n_layer):
            t.update(self.layer_tensors(i))
        if not self.tied:
            t["lm_head.weight"] = (self.n_vocab, self.n_embd)
        return t

    def optional_tensors(self) -> dict[str, tuple[int, ...]]:
        """Tensors that may be present: a tied checkpoint that still stores lm_head gets it written, as
        llama.cpp does."""
        return {"lm_head.weight": (self.n_vocab, self.n_embd)} if self.tied else {}

    def extra_tensors(self) -> dict[str, np.ndarray]:
        """Tensors computed from the config rather than read (GGUF name -> float32 data)."""
        return {}

    # --- hyperparameters -------------------------------------------------------------------------------

    def rope_parameters(self) -> dict[str, Any]:
        rp = dict(self.config.get("rope_parameters") or self.config.get("rope_scaling") or {})
        if "rope_theta" not in rp and self.config.get("rope_theta") is not None:
            rp["rope_theta"] = self.config["rope_theta"]
        if "rope_type" not in rp and rp.get("type") is not None:
            rp["rope_type"] = rp["type"]
        return rp

    def write_hparams(self, writer) -> None:
        """The hparams llama.cpp's TextModel writes for a dense decoder (same setters, same order)."""
        gguf = self._gguf
        w = writer
        w.add_block_count(self.n_layer)
        if (n_ctx := self.config.get("max_position_embeddings")) is not None:
            w.add_context_length(int(n_ctx))
        w.add_embedding_length(self.n_embd)
        w.add_feed_forward_length(self.n_ff)
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_head_kv)
        rp = self.rope_parameters()
        rope_type, factor = rp.get("rope_type"), rp.get("factor")
        if rope_type == "linear" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(factor)
        elif rope_type == "yarn" and factor is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(factor)
            w.add_rope_scaling_orig_ctx_len(rp["original_max_position_embeddings"])
            for key, setter in (("extrapolation_factor", w.add_rope_scaling_yarn_ext_factor),
                                ("beta_fast", w.add_rope_scaling_yarn_beta_fast),
                                ("beta_slow", w.add_rope_scaling_yarn_beta_slow)):
                if rp.get(key) is not None:
                    setter(rp[key])
            if (attn := rp.get("attention_factor", rp.get("attn_factor"))) is not None:
                w.add_rope_scaling_yarn_attn_factor(attn)
        elif rope_type in ("su", "longrope"):
            w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
        elif rope_type not in (None, "default", "llama3"):
            raise ConvertError(f"config.json: rope type {rope_type!r} is not supported for {self.hf_arch}")
        if rp.get("rope_theta") is not None:
            w.add_rope_freq_base(rp["rope_theta"])
        if (eps := self.config.get("rms_norm_eps")) is not None:
            w.add_layer_norm_rms_eps(eps)
        if self.config.get("head_dim") is not None:
            w.add_key_length(self.head_dim)
            w.add_value_length(self.head_dim)
