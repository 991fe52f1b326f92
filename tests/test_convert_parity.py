"""Parity bars: byte-identical tensors and equal metadata vs llama.cpp's own convert_hf_to_gguf.py (f16,
q8_0), and logits vs transformers (f32 GGUF in llama.cpp), for every architecture's tiny model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_models import ARCHS, load_hf

# source dtype / format per architecture, so the table also covers bf16 / f16 / f32 and .bin
CASES = {
    "LlamaForCausalLM": dict(dtype="bfloat16", safe=False),      # the α-UMi layout: one bf16 pytorch_model.bin
    "MistralForCausalLM": dict(dtype="float16"),
    "Qwen2ForCausalLM": dict(dtype="float32", max_shard_size="60KB"),
    "Qwen3ForCausalLM": dict(dtype="bfloat16"),
}
assert set(CASES) == set(ARCHS)

# keys whose values are descriptive, not read by llama.cpp to run the model
_DESCRIPTIVE = ("general.name", "general.basename", "general.size_label", "general.finetune", "general.version",
                "general.type", "general.license", "general.tags", "general.languages")


def _reference(converter: Path, src: Path, out: Path, outtype: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(converter.parent / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(converter), str(src), "--outfile", str(out), "--outtype", outtype],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


def _read(path: Path):
    import gguf

    r = gguf.GGUFReader(path)
    tensors = {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape), t.data.tobytes()) for t in r.tensors}
    fields = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return tensors, fields


@pytest.mark.parametrize("arch", list(CASES))
def test_byte_identical_to_llama_cpp(arch, tiny_model, tmp_path, llama_cpp_converter):
    from umi_convert import convert

    src = tiny_model(arch, **CASES[arch])
    for outtype in ("f16", "q8_0"):
        ours, ref = tmp_path / f"ours-{outtype}.gguf", tmp_path / f"ref-{outtype}.gguf"
        convert(src, ours, outtype=outtype, progress=False)
        _reference(llama_cpp_converter, src, ref, outtype)
        t_ours, f_ours = _read(ours)
        t_ref, f_ref = _read(ref)
        assert list(t_ours) == list(t_ref)                                  # same names, same order
        for name in t_ref:
            assert t_ours[name][:2] == t_ref[name][:2], (outtype, name)     # type and shape
            assert t_ours[name][2] == t_ref[name][2], (outtype, name)       # bytes
        for key, value in f_ref.items():
            if key in _DESCRIPTIVE:
                continue
            assert key in f_ours, (outtype, key)
            assert f_ours[key] == value, (outtype, key)


@pytest.mark.parametrize("arch", list(CASES))
def test_f32_logits_match_transformers(arch, tiny_model, tmp_path):
    import llama_cpp
    import torch

    from umi_convert import convert

    src = tiny_model(arch, dtype="float32", seed=1)
    out = tmp_path / "f32.gguf"
    convert(src, out, outtype="f32", progress=False)
    model = load_hf(src)
    vocab = model.config.vocab_size
    ids = np.random.default_rng(0).integers(3, vocab, size=40).tolist()
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, n_batch=64, logits_all=True, verbose=False, seed=0)
    try:
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()
    assert got.shape == want.shape
    assert np.abs(want).max() > 0.5                                         # logits are not trivially tiny
    assert np.abs(got - want).max() <= 1e-3, np.abs(got - want).max()
