"""Architecture registry: HF `architectures` name -> converter class. Adding a family = one module here,
one line in ARCHS and one row in the tests' architecture table."""
from __future__ import annotations

from umi_edge.errors import ConvertError

from ..tensor_ref import short_repr
from .base import ArchConverter
from .llama import LlamaConverter, MistralConverter
from .qwen2 import Qwen2Converter
from .qwen3 import Qwen3Converter

ARCHS: dict[str, type[ArchConverter]] = {
    "LlamaForCausalLM": LlamaConverter,
    "MistralForCausalLM": MistralConverter,
    "Qwen2ForCausalLM": Qwen2Converter,
    "Qwen3ForCausalLM": Qwen3Converter,
}

__all__ = ["ARCHS", "ArchConverter", "get_arch"]


def get_arch(config: dict) -> ArchConverter:
    """The converter for a config.json dict; unknown architectures list the supported ones."""
    names = config.get("architectures") or []
    if not isinstance(names, list) or not names:
        raise ConvertError(f"config.json: no 'architectures' entry; supported: {', '.join(ARCHS)}")
    cls = ARCHS.get(names[0]) if isinstance(names[0], str) else None
    if cls is None:
        raise ConvertError(f"config.json: architecture {short_repr(names[0])} is not supported; supported: "
                           f"{', '.join(ARCHS)}")
    return cls(config)
