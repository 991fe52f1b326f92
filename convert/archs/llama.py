"""Llama family (LLaMA-2 incl. α-UMi, Llama-3.x, SmolLM2) and Mistral: llama.cpp's `llama` architecture.

HF stores q/k rows in the rotate-half order; llama.cpp's rope wants interleaved pairs, so q/k rows are
permuted per head exactly as llama.cpp's converter does. `pretraining_tp` only changes how HF slices the
matmuls and is ignored.
"""
from __future__ import annotations

import math

import numpy as np

from .base import ArchConverter


def rope_permutation(n_rows: int, n_head: int) -> np.ndarray:
    """Row order of llama.cpp's `permute`: per head, rows (2, d/2) -> (d/2, 2)."""
    idx = np.arange(n_rows).reshape(n_head, 2, n_rows // n_head // 2)
    return idx.swapaxes(1, 2).reshape(n_rows)


class LlamaConverter(ArchConverter):
    defaults = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 2048}

    def __init__(self, config: dict) -> None:
        import gguf

        self.gguf_arch = gguf.MODEL_ARCH.LLAMA
        super().__init__(config)

    def layer_tensors(self, i: int) -> dict[str, tuple[int, ...]]:
        t = super().layer_tensors(i)
        p = f"model.layers.{i}."
        if self.config.get("attention_bias"):
            for n in ("q", "k", "v", "o"):
                t[f"{p}self_attn.{n}_proj.bias"] = (t[f"{p}self_attn.{n}_proj.weight"][0],)
        if self.config.get("mlp_bias"):
            for n in ("gate", "up", "down"):
                t[f"{p}mlp.{n}_proj.bias"] = (t[f"{p}mlp.{n}_proj.weight"][0],)
        return t

    def row_permutation(self, hf_name: str, n_rows: int) -> np.ndarray | None:
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return rope_permutation(n_rows, self.n_head)
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return rope_permutation(n_rows, self.n_head_kv)
        return None

    def write_hparams(self, writer) -> None:
        super().write_hparams(writer)
        writer.add_vocab_size(self.n_vocab)
        writer.add_rope_dimension_count(self.head_dim)

    def extra_tensors(self) -> dict[str, np.ndarray]:
        """Llama-3.1+ frequency scaling is baked into a `rope_freqs` tensor, as llama.cpp does."""
        rp = self.rope_parameters()
        if str(rp.get("rope_type", "")).lower() != "llama3":
            return {}
        # float32 throughout, with python-scalar / tensor written as reciprocal * scalar like torch does it
        f32 = np.float32
        base, dim = float(rp.get("rope_theta", 10000.0)), self.head_dim
        freqs = (f32(base) ** (np.arange(0, dim, 2, dtype=f32) / f32(dim))).astype(f32)
        freqs = (f32(1.0) / freqs).astype(f32)
        factor = float(rp.get("factor", 8.0))
        low, high = float(rp.get("low_freq_factor", 1.0)), float(rp.get("high_freq_factor", 4.0))
        old_ctx = float(rp.get("original_max_position_embeddings", 8192))
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        out = []
        for freq in freqs:
            wavelen = (f32(1.0) / freq) * f32(2 * math.pi)
            if wavelen < high_wavelen:
                out.append(1.0)
            elif wavelen > low_wavelen:
                out.append(factor)
            else:
                smooth = ((f32(1.0) / wavelen) * f32(old_ctx) - f32(low)) / f32(high - low)
                out.append(f32(1.0) / ((f32(1.0) - smooth) / f32(factor) + smooth))
        import gguf

        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        return {name: np.array(out, dtype=np.float32)}


class MistralConverter(LlamaConverter):
    """Mistral is a Llama with GQA and a sliding window llama.cpp's `llama` arch does not use."""

    defaults = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 4096 * 32,
                "num_key_value_heads": 8}
