"""Parity bars: byte-identical tensors and equal metadata vs llama.cpp's own convert_hf_to_gguf.py (f16,
q8_0), and logits vs transformers (f32 GGUF in llama.cpp), for every architecture's tiny model."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tiny_models import ARCHS, llama_logits, load_hf

# Every row of tiny_models.ARCHS is converted (f32 safetensors by default); these rows vary the source so
# the table also covers bf16 / f16 / sharded / .bin and Llama-3 rope scaling.
CASES = {
    **{arch: (arch, {}) for arch in ARCHS},
    "LlamaForCausalLM": ("LlamaForCausalLM", dict(dtype="bfloat16", safe=False)),  # α-UMi: one bf16 .bin
    "Llama3": ("LlamaForCausalLM", dict(dtype="bfloat16", tie_word_embeddings=True, rope_scaling={
        "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64, "rope_theta": 500000.0})),             # Llama-3.2 style rope_freqs
    "MistralForCausalLM": ("MistralForCausalLM", dict(dtype="float16")),
    "Qwen2ForCausalLM": ("Qwen2ForCausalLM", dict(dtype="float32", max_shard_size="60KB")),
    "Qwen3ForCausalLM": ("Qwen3ForCausalLM", dict(dtype="bfloat16")),
}


def test_every_registered_architecture_has_a_test_row():
    from umi_convert.archs import ARCHS as REGISTERED

    assert set(REGISTERED) == set(ARCHS)


# keys whose values are descriptive, not read by llama.cpp to run the model
_DESCRIPTIVE = ("general.name", "general.basename", "general.size_label", "general.finetune", "general.version",
                "general.type", "general.license", "general.tags", "general.languages")


# one interpreter runs every reference conversion: torch + transformers import once, not once per file
_DRIVER = (
    "import json, runpy, sys\n"
    "script = sys.argv[1]\n"
    "for job in json.loads(sys.argv[2]):\n"
    "    sys.argv = [script, *job]\n"
    "    runpy.run_path(script, run_name='__main__')\n"
)


def _reference(converter: Path, jobs: list[tuple[Path, Path, str]]) -> None:
    import json

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(converter.parent), str(converter.parent / "gguf-py")]),
           "HF_HUB_OFFLINE": "1"}
    argv = [[str(src), "--outfile", str(out), "--outtype", outtype] for src, out, outtype in jobs]
    r = subprocess.run([sys.executable, "-c", _DRIVER, str(converter), json.dumps(argv)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


def _read(path: Path):
    import gguf

    r = gguf.GGUFReader(path)
    tensors = {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape), t.data.tobytes()) for t in r.tensors}
    fields = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    return tensors, fields


@pytest.fixture(scope="module")
def conversions(tmp_path_factory, spm_tokenizer_dir, llama_cpp_converter) -> dict:
    """arch -> outtype -> (ours, llama.cpp's) GGUF paths, for every row of CASES and f16 / q8_0."""
    from tiny_models import make_tiny_model
    from umi_convert import convert

    root = tmp_path_factory.mktemp("parity")
    result, jobs = {}, []
    for case, (arch, kw) in CASES.items():
        src = make_tiny_model(root / case, arch, tokenizer_dir=spm_tokenizer_dir, **kw)
        for outtype in ("f16", "q8_0"):
            ours, ref = root / f"{case}-ours-{outtype}.gguf", root / f"{case}-ref-{outtype}.gguf"
            convert(src, ours, outtype=outtype, progress=False)
            jobs.append((src, ref, outtype))
            result.setdefault(case, {})[outtype] = (ours, ref)
    _reference(llama_cpp_converter, jobs)
    return result


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
@pytest.mark.parametrize("case", list(CASES))
def test_byte_identical_to_llama_cpp(case, outtype, conversions):
    ours, ref = conversions[case][outtype]
    t_ours, f_ours = _read(ours)
    t_ref, f_ref = _read(ref)
    assert list(t_ours) == list(t_ref)                                      # same names, same order
    for name in t_ref:
        assert t_ours[name][:2] == t_ref[name][:2], name                    # type and shape
        assert t_ours[name][2] == t_ref[name][2], name                      # bytes
    for key, value in f_ref.items():
        if key in _DESCRIPTIVE:
            continue
        assert key in f_ours, key
        assert f_ours[key] == value, key


@pytest.mark.parametrize("case", list(CASES))
def test_f32_logits_match_transformers(case, tiny_model, tmp_path):
    import torch

    from umi_convert import convert

    arch, kw = CASES[case]
    kw = {k: v for k, v in kw.items() if k not in ("dtype", "safe", "max_shard_size")}
    src = tiny_model(arch, dtype="float32", seed=1, **kw)
    out = tmp_path / "f32.gguf"
    convert(src, out, outtype="f32", progress=False)
    model = load_hf(src)
    vocab = model.config.vocab_size
    ids = np.random.default_rng(0).integers(3, vocab, size=40).tolist()
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    got = llama_logits(out, ids, n_ctx=64)
    assert got.shape == want.shape
    assert np.abs(want).max() > 0.5                                         # logits are not trivially tiny
    assert np.abs(got - want).max() <= 1e-3, np.abs(got - want).max()
