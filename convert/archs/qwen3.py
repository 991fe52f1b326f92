"""Qwen3 (dense): llama.cpp's `qwen3` architecture (per-head q/k RMS norms, no biases by default)."""
from __future__ import annotations

from .base import ArchConverter


class Qwen3Converter(ArchConverter):
    defaults = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 32768,
                "num_key_value_heads": 32, "head_dim": 128}

    def __init__(self, config: dict) -> None:
        import gguf

        self.gguf_arch = gguf.MODEL_ARCH.QWEN3
        super().__init__(config)

    def layer_tensors(self, i: int) -> dict[str, tuple[int, ...]]:
        t = super().layer_tensors(i)
        p = f"model.layers.{i}.self_attn."
        t[p + "q_norm.weight"] = (self.head_dim,)
        t[p + "k_norm.weight"] = (self.head_dim,)
        if self.config.get("attention_bias"):
            for n in ("q", "k", "v", "o"):
                t[f"{p}{n}_proj.bias"] = (t[f"{p}{n}_proj.weight"][0],)
        return t
