"""Crafted checkpoints, configs, adapters and output paths that once crashed, hung, read outside a tensor's
storage or destroyed a file: each is now one typed ConvertError line (or, for an unparseable model card, a
clean conversion). The inputs are built here byte by byte (tests/crafted.py)."""
from __future__ import annotations

import json
import os
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from crafted import PickleAsm, f32, state_dict_pickle, write_safetensors, write_torch_zip
from umi_edge.cli import cli
from umi_edge.errors import ConvertError


def _one_line_error(args: list[str], *needles: str) -> str:
    result = CliRunner().invoke(cli, ["convert", *args])
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _refused(fn, *args, match: str) -> str:
    with pytest.raises(ConvertError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def _read_bin(path: Path):
    """What the converter does with a .bin: index it, check every view, make every array."""
    from umi_convert.readers import _read_bin
    from umi_convert.tensor_ref import Mmaps

    refs = _read_bin(path)
    with Mmaps() as maps:
        return {r.name: np.array(maps.array(r)) for r in refs}


def _read_st(path: Path):
    from umi_convert.readers import read_safetensors_header
    from umi_convert.tensor_ref import Mmaps

    refs = read_safetensors_header(path)
    with Mmaps() as maps:
        return {r.name: np.array(maps.array(r)) for r in refs}


def _isolated(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with at most 2 GiB of address space: a segfault, a hang or a memory
    blow-up fails the test instead of taking pytest or the machine down."""
    prelude = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
               f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n")
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


def _rewrite_pkl(bin_path: Path, edit) -> None:
    """Replace the data.pkl of a torch.save'd checkpoint (other members kept, all stored)."""
    with zipfile.ZipFile(bin_path) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(bin_path, "w", zipfile.ZIP_STORED) as z:
        for name, data in members:
            z.writestr(name, edit(data) if name.endswith("/data.pkl") else data)


STORAGE = {"0": f32([1, 2, 3, 4])}


# --- .bin: views outside their storage -------------------------------------------------------------------

@pytest.mark.parametrize("offset, size, stride", [
    (-4, (4,), (1,)),            # negative offset, contiguous: read the 16 bytes before the storage
    (-3, (2, 2), (1, 2)),        # negative offset with strides
    (-(1 << 40), (2, 2), (1, 2)),  # far before the mapping
    (3, (4,), (-1,)),            # negative stride
    (1, (4,), (1,)),             # runs one element past the end
    (0, (1, 2), (1 << 62, 1)),   # a stride whose byte size overflows 64 bits (size-1 dim)
    (0, (-1, -4), (4, 1)),       # negative sizes
    (0, (1 << 62, 0), (1, 1)),   # empty, but numpy cannot make the shape (its sizes overflow)
    (0, ((1 << 31) - 1,), (0,)),  # a 4-byte storage broadcast to 8 GiB (found by the fuzzer)
])
def test_bin_view_outside_storage_is_refused(tmp_path, offset, size, stride):
    p = write_torch_zip(tmp_path / "m.bin", state_dict_pickle({"w": ("FloatStorage", "0", 4, offset, size, stride)}),
                        STORAGE)
    _refused(_read_bin, p, match=r"m\.bin: tensor 'w' (has a negative or out-of-range|lies outside its storage|is too"
                                 r"|is an overlapping view)")


def test_bin_valid_views_still_read(tmp_path):
    p = write_torch_zip(tmp_path / "m.bin", state_dict_pickle({
        "a": ("FloatStorage", "0", 4, 0, (4,), (1,)),
        "t": ("FloatStorage", "0", 4, 0, (2, 2), (1, 2)),      # transposed view
        "tail": ("FloatStorage", "0", 4, 3, (1,), (1,)),       # last element
        "bcast": ("FloatStorage", "0", 4, 2, (2,), (0,)),      # zero stride, within the storage's size
        "empty": ("FloatStorage", "0", 4, 9, (1 << 40, 0), (1, 1)),  # empty: no element, so any offset
    }), STORAGE)
    got = _read_bin(p)
    assert got["a"].tolist() == [1, 2, 3, 4] and got["t"].tolist() == [[1, 3], [2, 4]]
    assert got["tail"].tolist() == [4] and got["bcast"].tolist() == [3, 3] and got["empty"].shape == (1 << 40, 0)


def test_cli_negative_storage_offset_in_real_checkpoint(tiny_model, tmp_path):
    """A torch.save'd model whose first tensor is shifted 16 bytes before its storage: once a GGUF with the zip
    header's bytes as weights (exit 0); now one line and no output."""
    src = tiny_model(safe=False)
    # torch writes every storage offset as BININT1 0 right after the storage's BINPERSID
    _rewrite_pkl(src / "pytorch_model.bin", lambda pkl: pkl.replace(b"QK\x00", b"QJ" + struct.pack("<i", -4), 1))
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    _one_line_error([str(src), "-o", str(out)], "pytorch_model.bin", "negative or out-of-range")
    assert list(out.parent.iterdir()) == []


# --- .bin: the restricted pickle machine -----------------------------------------------------------------

def test_deeply_nested_tuple_key_is_refused_not_a_segfault(tmp_path):
    """A dict key nested 200,000 tuples deep: once a segfault while hashing; now refused by the depth bound."""
    p = PickleAsm().raw(b"}").int(1).raw(b"\x85" * 200_000).str("x").raw(b"s")
    write_torch_zip(tmp_path / "deep.bin", p.stop(), {})
    r = _isolated(f"""
        from umi_convert.pickle_reader import read_torch_zip
        from umi_edge.errors import ConvertError
        from pathlib import Path
        try:
            read_torch_zip(Path({str(tmp_path / "deep.bin")!r}))
        except ConvertError as e:
            print("ConvertError:", e)
    """)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert "ConvertError:" in r.stdout and "nested deeper than 64 levels" in r.stdout, r.stdout


@pytest.mark.parametrize("build", [
    # 200,000 lists inside each other (MARK ... LIST)
    lambda: PickleAsm().raw(b"(" * 200_000).int(1).raw(b"l" * 200_000).stop(),
    # a deep tuple reached through the memo
    lambda: PickleAsm().int(1).raw(b"\x85q\x00" + b"h\x00\x85q\x00" * 100).stop(),
])
def test_deep_containers_are_refused(tmp_path, build):
    from umi_convert import safe_pickle

    _refused(safe_pickle.load, build(), "x.bin", match="x.bin: refused to load: objects nested deeper than 64")


def test_object_count_is_bounded(tmp_path, monkeypatch):
    from umi_convert import safe_pickle

    monkeypatch.setattr(safe_pickle, "MAX_OBJECTS", 1000)
    flat = PickleAsm().raw(b"]" + b"(" + b"N" * 2000 + b"e").stop()  # one list of 2000 Nones
    _refused(safe_pickle.load, flat, "x.bin", match="x.bin: refused to load: more than 1000 objects")
    marks = PickleAsm().raw(b"(" * 2000 + b"N").stop()
    _refused(safe_pickle.load, marks, "x.bin", match="more than 1000 objects")


def test_build_on_storage_type_is_refused_and_changes_nothing(tmp_path):
    """BUILD on the marker `torch.HalfStorage` unpickles to: once it rewrote the shared marker's dtype (a
    KeyError traceback, and every later load in the process poisoned); now refused."""
    from umi_convert import safe_pickle

    p = (PickleAsm().glob("torch", "HalfStorage").raw(b"}").str("dtype").str("Q4").raw(b"s").raw(b"b0")
         .raw(b"}").str("w").tensor("FloatStorage", "0", 4, 0, (4,), (1,)).raw(b"s"))
    write_torch_zip(tmp_path / "m.bin", p.stop(), STORAGE)
    _one_line_error([str(_with_config(tmp_path, "m.bin")), "-o", str(tmp_path / "o.gguf")],
                    "refused to load: BUILD on a StorageType")
    assert safe_pickle.ALLOWED[("torch", "HalfStorage")].dtype == "F16"
    with pytest.raises(AttributeError):
        safe_pickle.ALLOWED[("torch", "HalfStorage")].dtype = "Q4"


@pytest.mark.parametrize("pkl, match", [
    (PickleAsm().raw(b"h\x07").stop(), "memo entry 7 is read before it is written"),
    (PickleAsm().raw(b"q\x00").stop(), "stack underflow"),
    (PickleAsm().raw(b"}").raw(b"N").raw(b"b").stop(), "refused to load: BUILD on a dict"),
    (PickleAsm().raw(b"}}").int(1).raw(b"s").stop(), "unhashable dict key of type dict"),
    (PickleAsm().raw(b"s").stop(), "stack underflow"),
    (PickleAsm().raw(b"]").raw(b"]").raw(b"N").raw(b"s").stop(), "SETITEMS on a list"),
    (PickleAsm().raw(b"}").raw(b"]").raw(b"N").raw(b"s").stop(), "unhashable dict key of type list"),
    (PickleAsm().glob("torch", "FloatStorage").raw(b")R").stop(), "calls a StorageType"),
    (PickleAsm().raw(b"\x81").stop(), "refused to load: pickle opcode NEWOBJ"),
    (PickleAsm().raw(b"\xff").stop(), "opcode 0xff"),
    (PickleAsm().raw(b"\x8a\xff").stop(), "255-byte integer"),
    (PickleAsm().raw(b"X\xff\xff\xff\x7f").stop(), "truncated pickle"),
    (PickleAsm().str("a").str("b").stop(), "STOP with an unbalanced stack"),
    (PickleAsm().str("a").str("b\nc").raw(b"\x93").stop(), r"references a\.b\\nc"),
])
def test_memo_build_and_stack_misuse_is_one_line(pkl, match):
    from umi_convert import safe_pickle

    _refused(safe_pickle.load, pkl, "x.bin", match=match)


def test_deflated_pickle_bomb_is_refused(tmp_path):
    """A deflated data.pkl that expands ~1000x (100 MB from a 98 KB file): once read in full; now refused
    from its declared size, and a size that lies is caught by the read cap."""
    from umi_convert import pickle_reader

    pkl = state_dict_pickle({"w": ("FloatStorage", "0", 4, 0, (4,), (1,))})
    bomb = pkl[:-1] + b"N0" * 50_000_000 + b"."
    p = write_torch_zip(tmp_path / "m.bin", bomb, STORAGE, pkl_compression=zipfile.ZIP_DEFLATED)
    assert p.stat().st_size < 200_000
    _refused(_read_bin, p, match=r"'archive/data.pkl' would expand to 100000\d+ bytes \(limit 67108864\)")
    # the same file with data.pkl's declared size rewritten to 1 KiB in both headers
    data = bytearray(p.read_bytes())
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = data.index(sig)
        data[i + at:i + at + 4] = struct.pack("<I", 1024)
    p.write_bytes(bytes(data))
    _refused(_read_bin, p, match="corrupt zip member 'archive/data.pkl'|expands past")


def test_torch_layouts_still_load(tmp_path):
    """What torch.save writes for model.state_dict() (an OrderedDict with _metadata set by BUILD), parameters,
    views and protocol 4 all load through the restricted machine exactly as torch sees them."""
    import torch

    from umi_convert.readers import index_tensors
    from umi_convert.tensor_ref import Mmaps, to_float32

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).to(torch.bfloat16)
    sd = model.state_dict()
    sd["p"] = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    sd["v"] = sd["p"].data.t()
    assert hasattr(sd, "_metadata")
    for proto in (2, 4):
        folder = tmp_path / f"p{proto}"
        folder.mkdir()
        torch.save(sd, folder / "pytorch_model.bin", pickle_protocol=proto)
        _, refs, _ = index_tensors(folder)
        assert list(refs) == list(sd)
        with Mmaps() as maps:
            for name, t in sd.items():
                got = to_float32(maps.array(refs[name]), refs[name].dtype)
                assert np.array_equal(got, t.detach().float().numpy()), (proto, name)


def _with_config(folder: Path, bin_name: str) -> Path:
    """A checkpoint folder around a crafted .bin (config.json of a tiny llama)."""
    src = folder / "src"
    src.mkdir(exist_ok=True)
    (folder / bin_name).rename(src / "pytorch_model.bin")
    (src / "config.json").write_text(json.dumps(dict(
        architectures=["LlamaForCausalLM"], hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, vocab_size=10)))
    return src


# --- safetensors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry, match", [
    # a negative begin that lands inside the header: once the header's bytes were read as the weights
    ({"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}, "data_offsets \\[-16, 0\\]"),
    ({"dtype": "F32", "shape": [4], "data_offsets": [-20, -4]}, "data_offsets"),
    ({"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}, "begin <= end"),
    ({"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 70]}, "data_offsets"),
    ({"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}, "data_offsets"),
    ({"dtype": "F32", "shape": [float("inf")], "data_offsets": [0, 16]}, "shape \\[inf\\]"),
    ({"dtype": "F32", "shape": [float("nan")], "data_offsets": [0, 16]}, "shape \\[nan\\]"),
    ({"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}, "shape \\[-2, -2\\]"),
    ({"dtype": "F32", "shape": [4.7], "data_offsets": [0, 16]}, "shape \\[4.7\\]"),
    ({"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]}, "shape"),
    ({"dtype": "F32", "shape": [True] * 4, "data_offsets": [0, 4]}, "shape"),
    ({"dtype": "F32", "shape": [1] * 40, "data_offsets": [0, 4]}, "shape"),
    ({"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}, "dtype is not a string"),
    ({"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}, "dtype 'I64'; only F32/F16/BF16/F64"),
    ({"dtype": "F32", "shape": [4]}, "corrupt header entry"),
    ([1, 2], "corrupt header entry"),
])
def test_safetensors_bad_entries_are_refused(tmp_path, entry, match):
    p = write_safetensors(tmp_path / "m.safetensors", {"w": entry}, f32([1, 2, 3, 4]))
    msg = _refused(_read_st, p, match=match)
    assert "tensor 'w'" in msg


def test_safetensors_bad_json_is_one_line(tmp_path):
    p = write_safetensors(tmp_path / "m.safetensors", b"[" * 100_000 + b"]" * 100_000, b"")
    _refused(_read_st, p, match="corrupt safetensors header")
    p = write_safetensors(tmp_path / "m.safetensors", b'{"w": \xff}', b"")
    _refused(_read_st, p, match="corrupt safetensors header")


def test_cli_safetensors_offset_into_header(tiny_model, tmp_path):
    """The first tensor's data_offsets moved 64 bytes back, into the JSON header: once converted with the
    header text as weights (exit 0); now one line."""
    src = tiny_model()
    st = src / "model.safetensors"
    raw = st.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    first = min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    b, e = header[first]["data_offsets"]
    header[first]["data_offsets"] = [b - 64, e - 64]
    h = json.dumps(header).encode()   # offsets are relative to the data section, which stays as it was
    st.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n:])
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    _one_line_error([str(src), "-o", str(out)], "model.safetensors", "data_offsets [-64, ")
    assert list(out.parent.iterdir()) == []


# --- config.json numbers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change, needle", [
    (dict(num_attention_heads=0), "num_attention_heads is 0; expected 1 to"),
    (dict(hidden_size=float("inf")), "hidden_size must be a whole number, not inf"),
    (dict(num_hidden_layers=1e6), "num_hidden_layers must be a whole number, not 1000000.0"),
    (dict(num_hidden_layers=10 ** 6), "num_hidden_layers is 1000000; expected 1 to 1024"),
    (dict(vocab_size="600"), "vocab_size must be a whole number"),
    (dict(num_key_value_heads=3), "not a multiple of num_key_value_heads 3"),
    (dict(hidden_size=66, head_dim=None), "hidden_size 66 is not a multiple of num_attention_heads 4"),
    (dict(head_dim=15), "head size is 15"),
    (dict(rms_norm_eps=float("nan")), "rms_norm_eps must be a positive finite number"),
    (dict(rope_theta=-1), "rope_theta must be a positive finite number"),
    (dict(rope_scaling="linear"), "rope_scaling must be an object"),
    (dict(rope_parameters={"rope_type": "linear", "factor": float("inf")}), "rope scaling factor"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0}), "needs original_max_position_embeddings"),
    (dict(max_position_embeddings=1 << 40), "max_position_embeddings must be a whole number"),
    (dict(architectures=[["LlamaForCausalLM"]]), "architecture [\"LlamaForCausalLM\"]".replace('"', "'")),
])
def test_config_numbers_are_validated_up_front(tiny_model, tmp_path, change, needle):
    src = tiny_model()
    config = json.loads((src / "config.json").read_text())
    config.update(change)
    (src / "config.json").write_text(json.dumps(config))
    (src / "model.safetensors").write_bytes(b"")  # checks come before any weight is opened
    _one_line_error([str(src), "-o", str(tmp_path / "m.gguf")], "config.json", needle)
    assert not (tmp_path / "m.gguf").exists()


def test_config_huge_layer_count_fails_fast_in_bounded_memory(tmp_path):
    """num_hidden_layers 1e6 once ran for minutes and took gigabytes (4.9 GB after 120 s) building tensor
    tables; now refused at once. Run under a 2 GiB address-space limit."""
    r = _isolated("""
        from umi_convert.archs import get_arch
        from umi_edge.errors import ConvertError
        base = dict(architectures=["LlamaForCausalLM"], hidden_size=64, intermediate_size=128,
                    num_attention_heads=4, vocab_size=100)
        for layers in (1e6, 10 ** 6, 10 ** 9):
            try:
                get_arch({**base, "num_hidden_layers": layers})
            except ConvertError as e:
                print(e)
    """, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("config.json: num_hidden_layers") == 3, r.stdout


def test_config_json_nesting_and_size(tiny_model, tmp_path):
    src = tiny_model()
    (src / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    _one_line_error([str(src), "-o", str(tmp_path / "m.gguf")], "config.json: unreadable")


# --- PEFT adapters ---------------------------------------------------------------------------------------

BASE_CONFIG = dict(architectures=["LlamaForCausalLM"], hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=2, vocab_size=32)


@pytest.fixture
def adapter(tmp_path) -> Path:
    """A hand-made PEFT adapter (q_proj and v_proj of layer 0, rank 2) on a config-only tiny base."""
    from safetensors.numpy import save_file

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(BASE_CONFIG))
    folder = tmp_path / "adapter"
    folder.mkdir()
    rng = np.random.default_rng(0)
    tensors = {}
    for m in ("q_proj", "v_proj"):
        p = f"base_model.model.model.layers.0.self_attn.{m}"
        tensors[f"{p}.lora_A.weight"] = rng.normal(size=(2, 16)).astype(np.float32)
        tensors[f"{p}.lora_B.weight"] = rng.normal(size=(16, 2)).astype(np.float32)
    save_file(tensors, folder / "adapter_model.safetensors")
    (folder / "adapter_config.json").write_text(json.dumps(dict(
        peft_type="LORA", r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
        base_model_name_or_path=str(base))))
    return folder


def _edit(adapter: Path, **changes) -> None:
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("change, needle", [
    (dict(r=0), "'r' must be a whole number from 1 to 65536, not 0"),
    (dict(r=2.0), "'r' must be a whole number"),
    (dict(r=True), "'r' must be a whole number"),
    (dict(lora_alpha=0), "'lora_alpha' must be a finite number other than 0, not 0"),
    (dict(lora_alpha=float("inf")), "'lora_alpha' must be a finite number"),
    (dict(lora_alpha=1e39), "'lora_alpha' must be a finite number"),
    (dict(lora_alpha="16"), "'lora_alpha' must be a finite number"),
    (dict(rank_pattern="q_proj"), "'rank_pattern' must be an object"),
    (dict(rank_pattern={"q_proj": 0}), "'rank_pattern' entry 'q_proj' must be a whole number from 1 to 65536"),
    (dict(alpha_pattern=[4, 8]), "'alpha_pattern' must be an object"),
    (dict(alpha_pattern={"v_proj": float("nan")}), "'alpha_pattern' entry 'v_proj' must be a finite number"),
    (dict(base_model_name_or_path=5), "'base_model_name_or_path' must be a string"),
])
def test_peft_bad_numbers_are_one_line(adapter, tmp_path, change, needle):
    _edit(adapter, **change)
    _one_line_error([str(adapter), "-o", str(tmp_path / "a.gguf")], "adapter_config.json", needle)
    assert not (tmp_path / "a.gguf").exists()


@pytest.mark.parametrize("card", [
    "---\nlicense: [unclosed\n---\n",            # not YAML
    "---\nlicense: [1, 2]\n---\n",               # YAML that gguf cannot write
    "---\n- just\n- a list\n---\n",
])
def test_malformed_model_card_is_ignored(adapter, tmp_path, card):
    import gguf

    from umi_convert.lora import convert_lora

    (adapter / "README.md").write_text(card + "# card\n")
    out = tmp_path / "a.gguf"
    summary = convert_lora(adapter, out)
    assert summary["pairs"] == 2
    fields = gguf.GGUFReader(out).fields
    assert "general.license" not in fields and fields["general.type"].contents() == "adapter"


def test_model_card_gguf_cannot_write_is_ignored_for_models(tiny_model, tmp_path):
    from umi_convert import convert

    src = tiny_model()
    (src / "README.md").write_text("---\nlicense: [1, 2]\n---\n# card\n")
    convert(src, tmp_path / "m.gguf", outtype="f16", progress=False)
    assert (tmp_path / "m.gguf").read_bytes()[:4] == b"GGUF"


# --- output paths and modes ------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["model.safetensors", "config.json", "tokenizer.model"])
def test_force_never_overwrites_an_input(tiny_model, tmp_path, target):
    src = tiny_model()
    before = (src / target).read_bytes()
    _one_line_error([str(src), "-o", str(src / target), "--force"], f"is {target}, a file of the checkpoint")
    assert (src / target).read_bytes() == before
    assert not [p for p in src.iterdir() if p.name.endswith(".part")]
    # the same file reached through a symlink is refused too; a new GGUF beside the inputs is fine
    (tmp_path / "link").symlink_to(src / target)
    _one_line_error([str(src), "-o", str(tmp_path / "link"), "--force"], "a file of the checkpoint")
    assert CliRunner().invoke(cli, ["convert", str(src), "-o", str(src / "model.gguf")]).exit_code == 0


def test_force_never_overwrites_an_adapter_input(adapter, tmp_path):
    weights = adapter / "adapter_model.safetensors"
    before = weights.read_bytes()
    _one_line_error([str(adapter), "-o", str(weights), "--force"], "adapter_model.safetensors, a file of the")
    _one_line_error([str(adapter), "-o", str(tmp_path / "base" / "config.json"), "--force"], "config.json, a file")
    assert weights.read_bytes() == before


def test_force_onto_fifo_socket_or_device_is_refused(tiny_model, tmp_path):
    src = tiny_model()
    fifo = tmp_path / "fifo.gguf"
    os.mkfifo(fifo)
    _one_line_error([str(src), "-o", str(fifo), "--force"], "is a FIFO; --force only replaces regular files")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    sock_path = tmp_path / "s.gguf"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        _one_line_error([str(src), "-o", str(sock_path), "--force"], "is a socket")
    dev = tmp_path / "null.gguf"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        return  # no CAP_MKNOD here; the FIFO and socket cases cover the check
    _one_line_error([str(src), "-o", str(dev), "--force"], "is a character device")
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


@pytest.mark.parametrize("outtype", ["f16", "q4_0"])
def test_output_mode_follows_the_umask(tiny_model, tmp_path, umask_027, outtype):
    """Direct types (written here) and llama.cpp-quantized types (written by llama_model_quantize into a
    temp file) both come out 0666 & ~umask; the quantized ones were once 0600."""
    pytest.importorskip("llama_cpp")
    from umi_convert import convert

    src = tiny_model()
    out = tmp_path / f"{outtype}.gguf"
    convert(src, out, outtype=outtype, progress=False)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    # --force onto an existing file gives the same mode, whatever the old file had
    out.chmod(0o600)
    convert(src, out, outtype=outtype, progress=False, force=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_adapter_output_mode_follows_the_umask(adapter, tmp_path, umask_027):
    from umi_convert.lora import convert_lora

    convert_lora(adapter, tmp_path / "a.gguf")
    assert stat.S_IMODE((tmp_path / "a.gguf").stat().st_mode) == 0o640


def test_umask_is_read_without_changing_it():
    from umi_convert.output import umask

    old = os.umask(0o037)
    try:
        assert umask() == 0o037 and umask() == 0o037
    finally:
        os.umask(old)
