"""Qwen2 / Qwen2.5: llama.cpp's `qwen2` architecture (q/k/v biases, neox rope so no q/k permutation)."""
from __future__ import annotations

from .base import ArchConverter


class Qwen2Converter(ArchConverter):
    defaults = {"rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 32768,
                "num_key_value_heads": 32}

    def __init__(self, config: dict) -> None:
        import gguf

        self.gguf_arch = gguf.MODEL_ARCH.QWEN2
        super().__init__(config)

    def layer_tensors(self, i: int) -> dict[str, tuple[int, ...]]:
        t = super().layer_tensors(i)
        p = f"model.layers.{i}.self_attn."
        for n in ("q", "k", "v"):
            t[f"{p}{n}_proj.bias"] = (t[f"{p}{n}_proj.weight"][0],)
        return t
