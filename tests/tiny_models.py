"""Tiny random HF checkpoints built at test time with transformers (torch is a test-only dependency).

Every architecture umi_convert supports has a row in ARCHS (hidden 64, 2 layers, GQA where the family
has it). Weights are re-drawn with a wide spread, norms and biases included, so a wrong name, permutation
or precision shows up in the logits. The vocabulary comes from a tokenizer folder (tiny_tokenizers).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

# one row per architecture: adding a family to umi_convert adds a row here
ARCHS: dict[str, dict] = {
    "LlamaForCausalLM": dict(model_type="llama", num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
                             pretraining_tp=2),   # as in α-UMi's config: same maths, llama.cpp ignores it
    "MistralForCausalLM": dict(model_type="mistral", num_key_value_heads=2, rms_norm_eps=1e-5,
                               rope_theta=1000000.0, sliding_window=None),
    "Qwen2ForCausalLM": dict(model_type="qwen2", num_key_value_heads=2, rms_norm_eps=1e-6,
                             rope_theta=1000000.0, use_sliding_window=False),
    "Qwen3ForCausalLM": dict(model_type="qwen3", num_key_value_heads=2, rms_norm_eps=1e-6,
                             rope_theta=1000000.0, head_dim=32, use_sliding_window=False),
}
_COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=256, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


def spm_vocab_size(tokenizer_dir: Path) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(Path(tokenizer_dir) / "tokenizer.model")).vocab_size()


def make_tiny_model(folder: Path, arch: str = "LlamaForCausalLM", *, tokenizer_dir: Path, dtype: str = "float32",
                    safe: bool = True, max_shard_size: str | None = None, seed: int = 0, **overrides) -> Path:
    """Write a random `arch` checkpoint (config.json + weights) plus the tokenizer files to `folder`.

    dtype: float32 / float16 / bfloat16. safe=False writes pytorch_model.bin (torch's zip pickle).
    max_shard_size (e.g. "40KB") shards the weights and writes the index."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for f in Path(tokenizer_dir).iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    kw = {**_COMMON, **ARCHS[arch], **overrides}
    model_type = kw.pop("model_type")
    kw.setdefault("vocab_size", spm_vocab_size(tokenizer_dir))
    config = AutoConfig.for_model(model_type, **kw)
    config.architectures = [arch]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.15)
    model = model.to(getattr(torch, dtype))
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    if not safe:
        _safetensors_to_bin(folder)
    return folder


def _safetensors_to_bin(folder: Path) -> None:
    """Re-save as pytorch_model.bin (torch's zip pickle), sharded with an index when the safetensors were:
    transformers 5 no longer writes .bin, but fine-tuned checkpoints in the wild (α-UMi) are .bin."""
    import torch
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    shards = sorted(folder.glob("model*.safetensors"))
    if index.is_file():
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
            sd = load_file(shard)
            torch.save(sd, folder / name)
            weight_map.update({k: name for k in sd})
        meta = json.loads(index.read_text()).get("metadata", {})
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": meta, "weight_map": weight_map}))
        index.unlink()
    else:
        torch.save(load_file(shards[0]), folder / "pytorch_model.bin")
    for shard in shards:
        shard.unlink()


def load_hf(folder: Path):
    """The checkpoint back in transformers, float32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def read_config(folder: Path) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())


def llama_logits(gguf_path: Path, ids: list[int], n_ctx: int = 512) -> "np.ndarray":
    """llama.cpp's logits for every position of `ids` (f32 KV cache, no weight repacking)."""
    import numpy as np
    from unittest import mock

    import llama_cpp
    from llama_cpp import llama_cpp as L

    real = L.llama_model_default_params

    def params():
        p = real()
        # llama.cpp's AMX repack path segfaults in llama_decode on our AMX test VMs (see umi_edge.engine.llama)
        p.use_extra_bufts = False
        return p

    with mock.patch.object(L, "llama_model_default_params", params):
        # f32 KV cache: the default f16 cache alone moves tiny models' logits by ~1e-2
        llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True,
                              verbose=False, type_k=0, type_v=0)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()
