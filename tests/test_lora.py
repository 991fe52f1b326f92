"""PEFT LoRA -> GGUF adapter (umi_convert.lora): llama.cpp with the adapter applied reproduces PEFT's merged
model, the file matches llama.cpp's own convert_lora_to_gguf.py, and bad adapters are refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tiny_models import load_hf
from umi_edge.errors import ConvertError

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_peft_adapter(base: Path, folder: Path, *, r: int = 8, alpha: int = 16, seed: int = 0,
                      targets=TARGETS, safe: bool = True, **lora_kw) -> Path:
    """A PEFT LoRA on the tiny base with random non-zero A and B (PEFT's default B is zero), saved the
    way PEFT saves it; base_model_name_or_path points at the base folder."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = load_hf(base)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False, **lora_kw)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.2)
    peft_model.save_pretrained(folder, safe_serialization=safe)
    return Path(folder)


def peft_merged_logits(base: Path, adapter: Path, ids: list[int]) -> np.ndarray:
    import torch
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_hf(base), str(adapter)).merge_and_unload().eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def llama_logits(model: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    import llama_cpp

    # f32 KV cache: the default f16 cache alone costs ~1e-2 on these logits
    llm = llama_cpp.Llama(model_path=str(model), lora_path=str(lora) if lora else None, n_ctx=64, n_batch=64,
                          logits_all=True, verbose=False, seed=0, type_k=0, type_v=0)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def _ids(base: Path, n: int = 32) -> list[int]:
    vocab = json.loads((base / "config.json").read_text())["vocab_size"]
    return np.random.default_rng(0).integers(3, vocab, size=n).tolist()


@pytest.fixture
def base_f32(tiny_model, tmp_path):
    """(base folder, its f32 GGUF) for a factory-chosen architecture."""
    from umi_convert import convert

    def make(arch: str = "LlamaForCausalLM") -> tuple[Path, Path]:
        src = tiny_model(arch, name=f"base-{arch}", dtype="float32", seed=1)
        out = tmp_path / f"base-{arch}.gguf"
        convert(src, out, outtype="f32", progress=False)
        return src, out

    return make


@pytest.mark.parametrize("arch, lora_kw", [
    ("LlamaForCausalLM", {}),
    # rsLoRA and per-module alpha/rank: PEFT's scale is not alpha/rank, folded into lora_b
    ("LlamaForCausalLM", dict(use_rslora=True, rank_pattern={"v_proj": 4}, alpha_pattern={"o_proj": 5})),
    ("LlamaForCausalLM", dict(r=1, alpha=4)),   # rank 1 stays 2-D (llama.cpp's converter squeezes it)
    # embeddings (lora_embedding_A/B, written transposed) and the output head
    ("LlamaForCausalLM", dict(targets=TARGETS + ["embed_tokens", "lm_head"])),
    pytest.param("Qwen2ForCausalLM", {}, marks=pytest.mark.slow),
    pytest.param("Qwen3ForCausalLM", {}, marks=pytest.mark.slow),
    pytest.param("MistralForCausalLM", {}, marks=pytest.mark.slow),
])
def test_adapter_logits_match_peft_merged(arch, lora_kw, base_f32, tmp_path):
    from umi_convert.lora import convert_lora

    base, base_gguf = base_f32(arch)
    adapter = make_peft_adapter(base, tmp_path / "adapter", **lora_kw)
    out = tmp_path / "adapter.gguf"
    summary = convert_lora(adapter, out, outtype="f32")
    n_layers = json.loads((base / "config.json").read_text())["num_hidden_layers"]
    assert summary["pairs"] == n_layers * len(TARGETS) + 2 * ("targets" in lora_kw)

    ids = _ids(base)
    want = peft_merged_logits(base, adapter, ids)
    got = llama_logits(base_gguf, ids, lora=out)
    plain = llama_logits(base_gguf, ids)
    assert np.abs(got - want).max() <= 1e-3, np.abs(got - want).max()
    assert np.abs(plain - want).max() > 0.1     # the adapter changes the model


def test_adapter_metadata_and_bin(base_f32, tmp_path):
    """A .bin adapter (read by the restricted unpickler) converts like the safetensors one."""
    import gguf

    from umi_convert.lora import convert_lora

    base, _ = base_f32()
    st = make_peft_adapter(base, tmp_path / "st", seed=3)
    pt = make_peft_adapter(base, tmp_path / "pt", seed=3, safe=False)
    assert (pt / "adapter_model.bin").is_file() and not (pt / "adapter_model.safetensors").exists()
    a, b = tmp_path / "st.gguf", tmp_path / "pt.gguf"
    old_umask = os.umask(0o022)
    try:
        convert_lora(st, a, outtype="f16")
        convert_lora(pt, b, outtype="f16")
    finally:
        os.umask(old_umask)
    assert (a.stat().st_mode & 0o777) == 0o644   # as a plain open() would create it, not mkstemp's 0600
    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    # tensor order follows the source file, as in llama.cpp (sorted safetensors, pickle insertion order)
    tb = {t.name: t for t in rb.tensors}
    assert sorted(tb) == sorted(t.name for t in ra.tensors) and len(tb) == 28
    for ta in ra.tensors:
        assert ta.tensor_type == tb[ta.name].tensor_type == gguf.GGMLQuantizationType.F16
        assert ta.data.tobytes() == tb[ta.name].data.tobytes(), ta.name
    f = {k: v.contents() for k, v in ra.fields.items()}
    assert f["general.type"] == "adapter" and f["adapter.type"] == "lora"
    assert f["adapter.lora.alpha"] == 16.0 and f["general.architecture"] == "llama"
    assert all(t.name.startswith("blk.") and t.name.endswith((".lora_a", ".lora_b")) for t in ra.tensors)


# --- parity with llama.cpp's convert_lora_to_gguf.py ------------------------------------------------------

_DESCRIPTIVE = ("general.name", "general.basename", "general.size_label", "general.finetune", "general.version")


@pytest.fixture(scope="session")
def llama_cpp_lora_converter(llama_cpp_converter) -> Path:
    """convert_lora_to_gguf.py beside the llama_cpp_converter fixture's copy (same sdist)."""
    from importlib import metadata

    script = llama_cpp_converter.parent / "convert_lora_to_gguf.py"
    if not script.is_file():
        version = metadata.version("llama_cpp_python")
        sdist = next((llama_cpp_converter.parents[1] / "pypi").glob(f"llama_cpp_python-{version}.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/vendor/llama.cpp/convert_lora_to_gguf.py"))
            tmp = script.with_suffix(".part")
            tmp.write_bytes(tar.extractfile(member).read())
            tmp.replace(script)
    return script


@pytest.mark.parametrize("outtype", ["f16", pytest.param("q8_0", marks=pytest.mark.slow)])
def test_byte_identical_to_llama_cpp(outtype, tiny_model, tmp_path, llama_cpp_lora_converter):
    import gguf

    from umi_convert.lora import convert_lora

    base = tiny_model("LlamaForCausalLM", name="base", dtype="bfloat16")
    adapter = make_peft_adapter(base, tmp_path / "adapter", targets=TARGETS + ["embed_tokens", "lm_head"])
    # norms trained alongside (mergekit-extract-lora): both converters write them, llama.cpp ignores them
    norms = {"base_model.model.model.norm.weight": np.full(64, 1.25, np.float32),
             "base_model.model.model.layers.1.input_layernorm.weight": np.full(64, 0.75, np.float32)}
    _resave(adapter, lambda t: t.update(norms))
    ours, ref = tmp_path / "ours.gguf", tmp_path / "ref.gguf"
    summary = convert_lora(adapter, ours, base=base, outtype=outtype)
    assert summary["norms_ignored_by_llama_cpp"] == ["blk.1.attn_norm.weight", "output_norm.weight"]
    env = {**os.environ, "PYTHONPATH": str(llama_cpp_lora_converter.parent / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(llama_cpp_lora_converter), str(adapter), "--base", str(base),
                        "--outfile", str(ref), "--outtype", outtype], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]

    ro, rr = gguf.GGUFReader(ours), gguf.GGUFReader(ref)
    assert [t.name for t in ro.tensors] == [t.name for t in rr.tensors]
    for to, tr in zip(ro.tensors, rr.tensors):
        assert (to.tensor_type, list(to.shape)) == (tr.tensor_type, list(tr.shape)), to.name
        assert to.data.tobytes() == tr.data.tobytes(), to.name
    fo = {k: v.contents() for k, v in ro.fields.items() if not k.startswith("GGUF.")}
    for key, f in rr.fields.items():
        if key.startswith("GGUF.") or key in _DESCRIPTIVE:
            continue
        assert key in fo and fo[key] == f.contents(), key


# --- bad input ------------------------------------------------------------------------------------------


@pytest.fixture
def adapter_and_base(base_f32, tmp_path) -> tuple[Path, Path]:
    base, _ = base_f32()
    return make_peft_adapter(base, tmp_path / "adapter", targets=["q_proj", "v_proj"]), base


def _edit_config(adapter: Path, **changes) -> None:
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _resave(adapter: Path, edit) -> None:
    from safetensors.numpy import load_file, save_file

    path = adapter / "adapter_model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def test_refuses_existing_output_and_missing_base(adapter_and_base, tmp_path):
    from umi_convert.lora import convert_lora

    adapter, base = adapter_and_base
    out = tmp_path / "a.gguf"
    out.write_bytes(b"keep")
    with pytest.raises(ConvertError, match="already exists; pass --force"):
        convert_lora(adapter, out)
    assert out.read_bytes() == b"keep"
    convert_lora(adapter, out, force=True)
    assert out.read_bytes()[:4] == b"GGUF"

    _edit_config(adapter, base_model_name_or_path="../not-here")
    with pytest.raises(ConvertError, match="is not a local model folder; pass --base FOLDER"):
        convert_lora(adapter, tmp_path / "b.gguf")
    convert_lora(adapter, tmp_path / "b.gguf", base=base)


def test_base_from_hub_config(adapter_and_base, tmp_path, monkeypatch):
    """A repo-id base_model_name_or_path fetches only the base's config.json (huggingface_hub); a failed
    fetch asks for --base."""
    import huggingface_hub

    from umi_convert.lora import convert_lora

    adapter, base = adapter_and_base
    _edit_config(adapter, base_model_name_or_path="someone/base-model", revision="v1")
    asked = []

    def fake_download(repo_id, filename, revision=None, **kw):
        asked.append((repo_id, filename, revision))
        return str(base / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert convert_lora(adapter, tmp_path / "a.gguf")["base"] == str(base)
    assert asked == [("someone/base-model", "config.json", "v1")]

    def offline(*a, **kw):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(ConvertError, match=r"cannot fetch config.json of base model someone/base-model .*--base"):
        convert_lora(adapter, tmp_path / "b.gguf")


def test_refuses_wrong_base(adapter_and_base, tiny_model, tmp_path):
    from umi_convert.lora import convert_lora

    adapter, _ = adapter_and_base
    outs = tmp_path / "outs"
    outs.mkdir()
    other = tiny_model("LlamaForCausalLM", name="wide", hidden_size=96, intermediate_size=192)
    with pytest.raises(ConvertError, match="do not fit the base weight"):
        convert_lora(adapter, outs / "a.gguf", base=other)
    shallow = tiny_model("LlamaForCausalLM", name="shallow", num_hidden_layers=1)
    with pytest.raises(ConvertError, match="does not have; is --base"):
        convert_lora(adapter, outs / "b.gguf", base=shallow)
    assert not list(outs.iterdir())


@pytest.mark.parametrize("case, match", [
    ("half", "has no lora_B tensor"),
    ("embed", "embeddings or lm_head saved in full"),
    ("dora", "use_dora is set"),
    ("prefix", "peft_type PREFIX_TUNING is not LoRA"),
    ("truncated", "truncated"),
])
def test_refuses_bad_adapters(case, match, adapter_and_base, tmp_path):
    from umi_convert.lora import convert_lora

    adapter, _ = adapter_and_base
    if case == "half":
        _resave(adapter, lambda t: t.pop(next(k for k in t if k.endswith("q_proj.lora_B.weight"))))
    elif case == "embed":
        _resave(adapter, lambda t: t.update({"base_model.model.model.embed_tokens.weight":
                                             np.zeros((600, 64), np.float32)}))
    elif case == "dora":
        _edit_config(adapter, use_dora=True)
    elif case == "prefix":
        _edit_config(adapter, peft_type="PREFIX_TUNING")
    elif case == "truncated":
        path = adapter / "adapter_model.safetensors"
        path.write_bytes(path.read_bytes()[:-100])
    out = tmp_path / "a.gguf"
    with pytest.raises(ConvertError, match=match):
        convert_lora(adapter, out)
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


def test_refuses_quantized_outtype(adapter_and_base, tmp_path):
    from umi_convert.lora import convert_lora

    adapter, _ = adapter_and_base
    with pytest.raises(ConvertError, match="cannot quantize adapters"):
        convert_lora(adapter, tmp_path / "a.gguf", outtype="q4_k_m")


def test_cli_dispatches_adapters(adapter_and_base, tmp_path):
    """`umi-edge convert ADAPTER_DIR` converts the adapter (the base from --base), role keys included."""
    import gguf
    from click.testing import CliRunner

    from umi_edge.cli import cli

    adapter, base = adapter_and_base
    _edit_config(adapter, base_model_name_or_path="../elsewhere")
    out = tmp_path / "caller-lora.gguf"
    r = CliRunner().invoke(cli, ["convert", str(adapter), "-o", str(out), "--base", str(base), "--role", "caller",
                                 "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    # auto: a 16-bit type, as llama.cpp picks it
    assert summary["kind"] == "lora" and summary["outtype"] == "f16" and summary["pairs"] == 4
    fields = {k: v.contents() for k, v in gguf.GGUFReader(out).fields.items()}
    assert fields["umi.role"] == "caller" and fields["umi.protocol"] == "alpha-umi/toolbench-v1"
    assert fields["general.type"] == "adapter"
    r = CliRunner().invoke(cli, ["convert", str(adapter), "-o", str(out)])
    assert r.exit_code != 0 and "already exists" in r.output
