"""umi_convert end to end on tiny checkpoints: formats, outtypes, metadata, sources, and every bad input
(one-line error naming the culprit, exit code != 0, nothing left behind)."""
from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from umi_edge.cli import cli
from umi_edge.errors import ConvertError, ModelError


def _tensors(path: Path) -> dict[str, tuple[str, tuple, bytes]]:
    import gguf

    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape), bytes(t.data.tobytes())) for t in r.tensors}


def _fields(path: Path) -> dict:
    import gguf

    r = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".part")


def _run_cli(*args: str):
    result = CliRunner().invoke(cli, ["convert", *args])
    return result


def _assert_cli_error(args: list[str], *needles: str) -> str:
    result = _run_cli(*args)
    assert result.exit_code != 0, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.output            # one line, no traceback
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# --- happy paths ------------------------------------------------------------------------------------------

def test_convert_f32_summary_metadata_and_inspect(tiny_model, tmp_path):
    from umi_convert import convert, inspect_gguf
    from umi_edge.protocol.alpha_umi import NAME as PROTOCOL

    src = tiny_model("LlamaForCausalLM")
    out = tmp_path / "out" / "planner.gguf"
    out.parent.mkdir()
    s = convert(src, out, outtype="f32", role="planner", progress=False)
    assert s["architecture"] == "llama" and s["outtype"] == "f32" and s["role"] == "planner"
    assert s["protocol"] == PROTOCOL                   # the name the runtime registers the protocol under
    assert s["source"].startswith("sha256:") and s["tensors"] == 2 * 9 + 3
    assert out.is_file() and _leftovers(out.parent) == []

    info = inspect_gguf(out)
    assert info["architecture"] == "llama" and info["tensors"] == s["tensors"]
    assert info["tensor_types"] == {"F32": s["tensors"]} and info["parameters"] == s["parameters"]
    assert info["umi"]["umi.role"] == "planner" and info["umi"]["umi.protocol"] == PROTOCOL
    assert info["umi"]["umi.source"] == s["source"]

    f = _fields(out)
    assert f["llama.block_count"] == 2 and f["llama.embedding_length"] == 64
    assert f["llama.attention.head_count_kv"] == 2 and f["general.file_type"] == 0
    assert f["tokenizer.ggml.model"] == "llama"

    result = CliRunner().invoke(cli, ["inspect", str(out), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["tensors"] == s["tensors"]


def test_precision_policy_and_auto(tiny_model, tmp_path):
    from umi_convert import convert

    src = tiny_model("Qwen2ForCausalLM", dtype="bfloat16")
    s = convert(src, tmp_path / "a.gguf", progress=False)      # auto: bf16 source -> bf16
    assert s["outtype"] == "bf16"
    t = _tensors(tmp_path / "a.gguf")
    assert t["blk.0.attn_norm.weight"][0] == "F32"             # norms stay F32
    assert t["blk.0.attn_q.bias"][0] == "F32"                  # 1-D stays F32
    assert t["blk.0.attn_q.weight"][0] == "BF16" and t["token_embd.weight"][0] == "BF16"

    convert(src, tmp_path / "q.gguf", outtype="q8_0", progress=False)
    t = _tensors(tmp_path / "q.gguf")
    assert t["blk.1.ffn_down.weight"][0] == "Q8_0" and t["output_norm.weight"][0] == "F32"


def test_formats_give_identical_files(tiny_model, tmp_path):
    """single / sharded safetensors and single / sharded .bin of one model convert to the same tensors."""
    from umi_convert import convert

    outs = []
    for i, kw in enumerate([dict(), dict(max_shard_size="60KB"), dict(safe=False), dict(safe=False, max_shard_size="60KB")]):
        src = tiny_model("LlamaForCausalLM", name=f"m{i}", dtype="bfloat16", **kw)
        files = sorted(p.name for p in src.iterdir())
        if "max_shard_size" in kw:
            assert any(n.endswith(".index.json") for n in files), files
        out = tmp_path / f"o{i}.gguf"
        convert(src, out, outtype="f16", progress=False)
        outs.append(_tensors(out))
    assert all(o == outs[0] for o in outs[1:])


def test_tied_embeddings_write_no_output_tensor(tiny_model, tmp_path):
    from umi_convert import convert

    src = tiny_model("LlamaForCausalLM", tie_word_embeddings=True)
    convert(src, tmp_path / "t.gguf", outtype="f16", progress=False)
    names = set(_tensors(tmp_path / "t.gguf"))
    assert "token_embd.weight" in names and "output.weight" not in names


def test_model_card_gives_name_and_a_bad_one_is_ignored(tiny_model, tmp_path):
    from umi_convert import convert

    src = tiny_model("LlamaForCausalLM")
    (src / "README.md").write_text("---\nlicense: apache-2.0\nbase_model: acme/base\n---\n# Tiny Planner\n")
    convert(src, tmp_path / "a.gguf", outtype="f16", progress=False)
    assert _fields(tmp_path / "a.gguf")["general.license"] == "apache-2.0"
    (src / "README.md").write_text("---\n: [unclosed\n---\n")
    convert(src, tmp_path / "b.gguf", outtype="f16", progress=False)
    assert _fields(tmp_path / "b.gguf")["general.name"]


def test_llama_cpp_quant_type_removes_intermediate(tiny_model, tmp_path):
    from umi_convert import convert, inspect_gguf

    src = tiny_model("LlamaForCausalLM", dtype="float16")
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    s = convert(src, out_dir / "q.gguf", outtype="q4_k_m", role="caller", progress=False)
    assert s["outtype"] == "q4_k_m"
    assert sorted(p.name for p in out_dir.iterdir()) == ["q.gguf"]
    info = inspect_gguf(out_dir / "q.gguf")
    assert info["file_type"] == "MOSTLY_Q4_K_M" and info["umi"]["umi.role"] == "caller"
    assert set(info["tensor_types"]) - {"F32"}                  # weights quantized (K or fallback types)


def test_skipped_rotary_cache_is_reported(tiny_model, tmp_path):
    """Old transformers saved rotary_emb.inv_freq buffers (α-UMi's 4.28 checkpoints); llama.cpp drops them."""
    import torch

    from umi_convert import convert

    src = tiny_model("LlamaForCausalLM", safe=False)
    sd = torch.load(src / "pytorch_model.bin", weights_only=True)
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    torch.save(sd, src / "pytorch_model.bin")
    s = convert(src, tmp_path / "o.gguf", outtype="f16", progress=False)
    assert s["skipped"] == ["model.layers.0.self_attn.rotary_emb.inv_freq"]


def test_source_labels(tiny_model, tmp_path, monkeypatch):
    from umi_convert.source import folder_digest, resolve

    src = tiny_model("LlamaForCausalLM")
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    assert folder_digest(src) == folder_digest(copy)            # names, sizes, content; not mtimes
    (copy / "generation_config.json").write_text("{}")
    assert folder_digest(src) != folder_digest(copy)

    # a repo id resolves through the huggingface_hub cache (offline here) and is labelled repo@commit
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-planner"
    shutil.copytree(src, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    folder, label = resolve("acme/tiny-planner", progress=False)
    assert label == f"acme/tiny-planner@{commit}" and (folder / "config.json").is_file()
    # the cache folder itself is labelled the same way (umi_edge.fetch passes it)
    assert resolve(folder)[1] == label
    # a repo that is neither cached nor reachable: one line naming it
    from umi_edge.errors import FetchError

    with pytest.raises(FetchError, match="acme/absent.*no such local folder"):
        resolve("acme/absent", progress=False)


def test_cli_convert_json(tiny_model, tmp_path):
    src = tiny_model("MistralForCausalLM")
    out = tmp_path / "m.gguf"
    result = _run_cli(str(src), "-o", str(out), "--outtype", "q8_0", "--role", "summarizer", "--json")
    assert result.exit_code == 0, result.output
    s = json.loads(result.output.strip().splitlines()[-1])
    assert s["outtype"] == "q8_0" and s["role"] == "summarizer" and s["output"] == str(out)


@pytest.mark.parametrize("qtype_name", ["F32", "F16", "BF16", "Q8_0"])
@pytest.mark.parametrize("src_dtype", ["F32", "F16", "BF16"])
def test_encode_slabs_do_not_change_bytes(monkeypatch, qtype_name, src_dtype):
    """Streaming in row slabs (and permuting rows per slab) gives the bytes of one whole-tensor encode."""
    import gguf

    from umi_convert import encode
    from umi_convert.archs.llama import rope_permutation
    from umi_convert.tensor_ref import DTYPES

    rng = np.random.default_rng(0)
    f32 = rng.normal(size=(64, 96)).astype(np.float32)
    src = {"F32": f32, "F16": f32.astype(np.float16),
           "BF16": (f32.view(np.uint32) >> 16).astype(np.uint16)}[src_dtype].astype(DTYPES[src_dtype])
    qtype = gguf.GGMLQuantizationType[qtype_name]
    perm = rope_permutation(64, 4)
    whole = encode.encode(src, src_dtype, qtype, perm)
    released = []
    monkeypatch.setattr(encode, "SLAB_BYTES", 96 * 4 * 5)          # 5 rows per slab
    slabbed = encode.encode(src, src_dtype, qtype, perm)
    assert whole.tobytes() == slabbed.tobytes()
    plain = encode.encode(src, src_dtype, qtype, None, release=lambda a, b: released.append((a, b)))
    if src_dtype == qtype_name and src_dtype != "BF16":
        assert released == []                  # same type in and out: the mapped bytes are written as they are
    else:
        assert released[0] == (0, 5) and released[-1] == (60, 64)
    ref = gguf.quants.quantize(src[perm] if src_dtype == "F16" else _widen(src[perm], src_dtype), qtype)
    assert whole.tobytes() == np.ascontiguousarray(ref).tobytes()
    assert plain.tobytes() == np.ascontiguousarray(
        gguf.quants.quantize(src if src_dtype == "F16" else _widen(src, src_dtype), qtype)).tobytes()


def _widen(a: np.ndarray, dtype: str) -> np.ndarray:
    from umi_convert.tensor_ref import to_float32

    return to_float32(a, dtype)


# --- bad input: one line naming the culprit, exit code != 0, no output left behind -------------------------

def _out(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "out"
    d.mkdir(exist_ok=True)
    return d, d / "m.gguf"


def _no_output(d: Path) -> None:
    assert list(d.iterdir()) == [], list(d.iterdir())


def test_bad_truncated_safetensors(tiny_model, tmp_path):
    src = tiny_model()
    st = src / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-1000])
    d, out = _out(tmp_path)
    _assert_cli_error([str(src), "-o", str(out)], "model.safetensors", "truncated")
    _no_output(d)


def test_bad_index_points_at_missing_shard(tiny_model, tmp_path):
    src = tiny_model(max_shard_size="60KB")
    shards = sorted(src.glob("model-*.safetensors"))
    assert len(shards) >= 2
    shards[-1].unlink()
    d, out = _out(tmp_path)
    _assert_cli_error([str(src), "-o", str(out)], "model.safetensors.index.json", shards[-1].name, "missing")
    _no_output(d)


def _rewrite_safetensors(src: Path, edit) -> None:
    from safetensors.numpy import load_file, save_file

    sd = load_file(src / "model.safetensors")
    edit(sd)
    save_file(sd, src / "model.safetensors", metadata={"format": "pt"})


def test_bad_missing_tensor(tiny_model, tmp_path):
    src = tiny_model()
    _rewrite_safetensors(src, lambda sd: sd.pop("model.layers.1.mlp.up_proj.weight"))
    d, out = _out(tmp_path)
    _assert_cli_error([str(src), "-o", str(out)], "missing", "model.layers.1.mlp.up_proj.weight")
    _no_output(d)


def test_bad_unexpected_tensor(tiny_model, tmp_path):
    src = tiny_model()
    _rewrite_safetensors(src, lambda sd: sd.__setitem__("model.layers.0.mlp.extra.weight", np.ones((2, 2), np.float32)))
    d, out = _out(tmp_path)
    _assert_cli_error([str(src), "-o", str(out)], "unexpected", "model.layers.0.mlp.extra.weight")
    _no_output(d)


def test_bad_wrong_shape(tiny_model, tmp_path):
    src = tiny_model()
    cfg = json.loads((src / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (src / "config.json").write_text(json.dumps(cfg))
    d, out = _out(tmp_path)
    _assert_cli_error([str(src), "-o", str(out)], "shape", "model.layers.0.mlp.", "[64, 96]")
    _no_output(d)


def test_bad_unknown_architecture(tiny_model, tmp_path):
    src = tiny_model()
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (src / "config.json").write_text(json.dumps(cfg))
    d, out = _out(tmp_path)
    line = _assert_cli_error([str(src), "-o", str(out)], "GPT2LMHeadModel")
    for supported in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"):
        assert supported in line
    _no_output(d)


def test_bad_unreadable_tokenizer(tiny_model, tmp_path):
    src = tiny_model()
    (src / "tokenizer.model").write_bytes(b"this is not a sentencepiece model")
    d, out = _out(tmp_path)
    _assert_cli_error([str(src), "-o", str(out)], "tokenizer.model")
    _no_output(d)


def test_bad_existing_output_without_force(tiny_model, tmp_path):
    src = tiny_model()
    d, out = _out(tmp_path)
    out.write_bytes(b"keep me")
    _assert_cli_error([str(src), "-o", str(out)], str(out), "--force")
    assert out.read_bytes() == b"keep me"
    assert _run_cli(str(src), "-o", str(out), "--force").exit_code == 0
    assert out.read_bytes()[:4] == b"GGUF" and _leftovers(d) == []


def test_bad_unwritable_output_dir(tiny_model, tmp_path, monkeypatch):
    import tempfile

    src = tiny_model()
    d, out = _out(tmp_path)
    if os.geteuid() != 0:
        d.chmod(0o500)
    else:  # root writes anywhere; make the directory refuse like a read-only one would
        real = tempfile.mkstemp

        def refuse(*a, dir=None, **kw):
            if dir is not None and Path(dir) == d:
                raise PermissionError(13, "Permission denied")
            return real(*a, dir=dir, **kw)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        _assert_cli_error([str(src), "-o", str(out)], str(d), "cannot write")
    finally:
        d.chmod(0o700)
    _no_output(d)
    # the output folder must exist
    _assert_cli_error([str(src), "-o", str(tmp_path / "nope" / "m.gguf")], "nope", "does not exist")


def test_failure_mid_write_leaves_nothing(tiny_model, tmp_path, monkeypatch):
    from umi_convert import convert, encode

    src = tiny_model()
    d, out = _out(tmp_path)
    calls = []
    real = encode.encode

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(*a, **kw)

    monkeypatch.setattr(encode, "encode", flaky)
    with pytest.raises(ConvertError, match="No space left"):
        convert(src, out, outtype="f16", progress=False)
    _no_output(d)


def test_bad_outtypes(tiny_model, tmp_path):
    src = tiny_model()
    d, out = _out(tmp_path)
    _assert_cli_error([str(src), "-o", str(out), "--outtype", "iq2_xs"], "iq2_xs", "importance matrix")
    _assert_cli_error([str(src), "-o", str(out), "--outtype", "q9_9"], "q9_9", "q4_k_m")
    _no_output(d)


def test_bad_source(tmp_path):
    _assert_cli_error([str(tmp_path / "missing-folder"), "-o", str(tmp_path / "x.gguf")], "missing-folder")
    (tmp_path / "empty").mkdir()
    _assert_cli_error([str(tmp_path / "empty"), "-o", str(tmp_path / "x.gguf")], "config.json")


def test_inspect_not_a_gguf(tmp_path):
    from umi_convert import inspect_gguf

    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelError, match="not a GGUF"):
        inspect_gguf(p)
    result = CliRunner().invoke(cli, ["inspect", str(p)])
    assert result.exit_code != 0 and "not a GGUF" in result.output


# --- restricted unpickler ----------------------------------------------------------------------------------

def _zip_checkpoint(path: Path, pkl: bytes) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")


@pytest.mark.parametrize("pkl", [
    # protocol 0: os.system("touch <marker>") through GLOBAL + REDUCE
    lambda marker: b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR.",
    # protocol 2 via a regular pickle of an object whose __reduce__ calls subprocess
    lambda marker: __import__("pickle").dumps(_Evil(marker), protocol=2),
])
def test_malicious_pickle_is_refused_and_nothing_runs(tiny_model, tmp_path, pkl):
    src = tiny_model(safe=False)
    marker = tmp_path / "pwned"
    _zip_checkpoint(src / "pytorch_model.bin", pkl(marker))
    d, out = _out(tmp_path)
    line = _assert_cli_error([str(src), "-o", str(out)], "pytorch_model.bin", "refused")
    assert "system" in line or "subprocess" in line or "check_call" in line
    assert not marker.exists()
    _no_output(d)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import subprocess

        return subprocess.check_call, (["touch", str(self.marker)],)


def test_pickle_reader_matches_torch(tmp_path):
    """Views, offsets and dtypes come out as torch.load sees them (without torch in the reader)."""
    import torch

    from umi_convert.readers import index_tensors
    from umi_convert.tensor_ref import Mmaps, to_float32

    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    sd = {
        "a": base.to(torch.bfloat16),
        "b": base[2:4].clone().to(torch.float16),
        "c": base.t(),                     # non-contiguous view
        "d": base[1],                      # shares storage with c, offset 8
    }
    (tmp_path / "config.json").write_text("{}")
    torch.save(sd, tmp_path / "pytorch_model.bin")
    fmt, refs, _ = index_tensors(tmp_path)
    assert fmt == "bin" and list(refs) == ["a", "b", "c", "d"]
    with Mmaps() as maps:
        for name, t in sd.items():
            got = to_float32(maps.array(refs[name]), refs[name].dtype)
            assert np.array_equal(got, t.float().numpy()), name


def test_pickle_reader_rejects_legacy_and_truncated(tmp_path):
    from umi_convert.pickle_reader import read_torch_zip

    p = tmp_path / "pytorch_model.bin"
    p.write_bytes(b"\x80\x02legacy torch format")
    with pytest.raises(ConvertError, match="not a zip-format"):
        read_torch_zip(p)


def test_safetensors_header_checks(tmp_path):
    from umi_convert.readers import read_safetensors_header

    p = tmp_path / "model.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    (ref,) = read_safetensors_header(p)
    assert ref.shape == (4,) and ref.offset == 8 + len(header)
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(ConvertError, match="truncated"):
        read_safetensors_header(p)
    p.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(ConvertError, match="truncated or corrupt"):
        read_safetensors_header(p)
