"""umi_convert: Hugging Face / PyTorch checkpoints -> GGUF for llama.cpp (installed from the top-level
`convert/` folder). The runtime never imports this package; heavy modules load on first use."""
from __future__ import annotations

__all__ = ["convert", "inspect_gguf"]


def __getattr__(name: str):
    if name == "convert":
        from .pipeline import convert

        return convert
    if name == "inspect_gguf":
        from .gguf_info import inspect_gguf

        return inspect_gguf
    raise AttributeError(f"module 'umi_convert' has no attribute {name!r}")
