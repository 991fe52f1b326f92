"""Reading GGUF headers (inspect, and the pre-flight check of `run`): crafted and damaged files give one
clean line, fast; llama.cpp's own error lines reach the message; metadata cannot drive the terminal."""
from __future__ import annotations

import json
import re
import struct
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from crafted_gguf import (ARRAY, STRING, U8, U32, gguf_bytes, kv, kv_array, kv_str, kv_u32, rich_gguf, s,
                          tensor_info, time_limit, write)
from umi_edge.cli import cli
from umi_edge.engine.gguf_header import gguf_header, read_header
from umi_edge.errors import ModelError

ARCH = kv_str("general.architecture", "llama")


def one_line_error(result, *needles: str) -> str:
    """The CLI failed with exit 1 and exactly one line, an `Error: ...` containing every needle."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (AssertionError, TypeError))
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# --- crafted headers -----------------------------------------------------------------------------------

def huge_array_count(tmp_path) -> Path:
    """The 119-byte file of the report: one uint8 array claiming 2^63 values."""
    data = gguf_bytes([kv_array("general.architecture", U8, 1 << 63)])
    return write(tmp_path / "count.gguf", data + b"\0" * (119 - len(data)))


DAMAGED = {
    "empty": b"",
    "five_bytes": b"GGUF\x03",
    "header_cut": b"GGUF\x03\x00\x00\x00\x00\x00",
    "bad_magic": b"GGML" + b"\0" * 40,
    "version_1": gguf_bytes([ARCH], version=1),
    "version_99": gguf_bytes([ARCH], version=99),
    "big_endian": b"GGUF" + struct.pack(">IQQ", 3, 0, 1) + ARCH,
    "kv_count_2_64": gguf_bytes([ARCH], n_kv=(1 << 64) - 1),
    "tensor_count_2_63": gguf_bytes([ARCH], n_tensors=1 << 63),
    "key_length_2_62": gguf_bytes([struct.pack("<Q", 1 << 62) + b"general.architecture"]),
    "string_length_2_62": gguf_bytes([kv("general.architecture", STRING, struct.pack("<Q", 1 << 62))]),
    "array_count_2_63": gguf_bytes([kv_array("general.architecture", U8, 1 << 63)]),
    "string_array_2_40": gguf_bytes([kv_array("tokenizer.ggml.tokens", STRING, 1 << 40, s("a")), ARCH]),
    "nested_arrays": gguf_bytes([kv("x", ARRAY, struct.pack("<IQ", ARRAY, 1) * 50 + struct.pack("<IQ", U8, 0)),
                                 ARCH]),
    "unknown_value_type": gguf_bytes([kv("x", 77, b"\0" * 8), ARCH]),
    "unknown_element_type": gguf_bytes([kv_array("x", 77, 1, b"\0" * 8), ARCH]),
    "string_cut": gguf_bytes([kv("general.architecture", STRING, struct.pack("<Q", 100) + b"lla")]),
    "duplicate_key": gguf_bytes([ARCH, ARCH]),
    "alignment_zero": gguf_bytes([ARCH, kv_u32("general.alignment", 0)]),
    "alignment_string": gguf_bytes([ARCH, kv_str("general.alignment", "32")]),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_header_is_one_model_error(tmp_path, name):
    p = write(tmp_path / f"{name}.gguf", DAMAGED[name])
    with time_limit(5):
        with pytest.raises(ModelError) as e:
            read_header(p, tensors=True)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_inspect_huge_array_count_fails_at_once(tmp_path):
    """Before: gguf's reader trusted the count, hung and grew memory without bound."""
    p = huge_array_count(tmp_path)
    assert p.stat().st_size == 119
    with time_limit(5):
        r = CliRunner().invoke(cli, ["inspect", str(p)])
    one_line_error(r, str(p), "9223372036854775808", "the file has 119")


@pytest.mark.parametrize("name", ["five_bytes", "string_length_2_62", "array_count_2_63", "empty"])
def test_run_on_damaged_gguf_is_one_line(tmp_path, umi_home, name):
    """Before: `run` on a 5-byte GGUF or a huge string/array length gave struct / ValueError tracebacks."""
    p = write(tmp_path / "m.gguf", DAMAGED[name])
    models = tmp_path / "models.toml"
    models.write_text(textwrap.dedent("""
        [models.m]
        path = "m.gguf"
        [sets.s]
        model = "m"
    """))
    with time_limit(10):
        r = CliRunner().invoke(cli, ["run", "--models", str(models), "--set", "s", "hi"])
    one_line_error(r, str(p))


def test_inspect_file_type_array_and_odd_types(tmp_path):
    """Before: general.file_type stored as an array gave `TypeError: unhashable type: 'list'`."""
    p = write(tmp_path / "ft.gguf", gguf_bytes([
        kv_array("general.architecture", U32, 2, struct.pack("<II", 1, 2)),
        kv_array("general.file_type", U32, 2, struct.pack("<II", 1, 2)),
        kv("general.name", U8, b"\x05"),
    ]))
    r = CliRunner().invoke(cli, ["inspect", str(p)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == f"{p}: [1, 2] [1, 2], 0.0 MB"
    info = json.loads(CliRunner().invoke(cli, ["inspect", str(p), "--json"]).output)
    assert info["file_type"] == "[1, 2]" and info["tensors"] == 0


def test_header_matches_gguf_py_on_a_valid_file(tmp_path):
    """On a well-formed file the bounded reader reads what gguf-py reads: every key, tensor and offset."""
    import gguf

    p = rich_gguf(tmp_path / "rich.gguf")
    head = read_header(p, tensors=True)
    ref = gguf.GGUFReader(str(p))
    want = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert want["x.nested"] == [1, 2, 3]     # gguf-py flattens nested arrays; the file holds [[1, 2], [3]]
    want["x.nested"] = [[1, 2], [3]]
    assert head.fields.keys() == want.keys()
    for k, v in want.items():
        assert head.fields[k] == pytest.approx(v) if isinstance(v, float) else head.fields[k] == v, k
    assert [(t.name, list(t.shape), t.type, t.offset) for t in head.tensors] == [
        (t.name, [int(d) for d in t.shape], int(t.tensor_type), int(t.data_offset) - ref.data_offset)
        for t in ref.tensors]
    assert head.data_offset == ref.data_offset
    # the run path stops at the keys it wants
    assert gguf_header(p) == {"general.architecture": "llama"}
    assert gguf_header(p, ("general.name", "umi.role")) == {"general.name": "rich", "umi.role": "caller"}


def test_inspect_names_the_truncated_tensor(tmp_path):
    p = rich_gguf(tmp_path / "rich.gguf")
    size = p.stat().st_size
    cut = write(tmp_path / "cut.gguf", p.read_bytes()[:size - 10])
    r = CliRunner().invoke(cli, ["inspect", str(cut)])
    one_line_error(r, "tensor 'half'", f"the file has {size - 10}", "truncated")
    ok = CliRunner().invoke(cli, ["inspect", str(p), "--json"])
    info = json.loads(ok.output)
    assert info["tensors"] == 3 and info["parameters"] == 32 + 8 + 32
    assert info["tensor_types"] == {"F16": 1, "F32": 2} and info["umi"] == {"umi.role": "caller", "umi.source": "test"}


def test_inspect_bad_tensor_table(tmp_path):
    for shape, ttype, why in (((1 << 40, 1 << 40),  0, "too large"), ((8,), 999, "unknown type 999"),
                              ((5,), 2, "block size 32"), ((1, 1, 1, 1, 1), 0, "5 dimensions")):
        p = write(tmp_path / "t.gguf", gguf_bytes([ARCH], [tensor_info("w", shape, ttype)], data=b"\0" * 64))
        with pytest.raises(ModelError, match=re.escape(why)):
            from umi_convert import inspect_gguf
            inspect_gguf(p)


def test_not_a_regular_file(tmp_path):
    import os

    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    with time_limit(5), pytest.raises(ModelError, match="not a regular file"):
        read_header(fifo)
    with pytest.raises(ModelError, match="not a regular file"):
        read_header(tmp_path)


# --- metadata on the terminal --------------------------------------------------------------------------

def test_inspect_escapes_control_characters(tmp_path):
    """Before: umi.* strings were printed raw, so terminal escape sequences in a GGUF reached the terminal."""
    evil = "\x1b]0;owned\x07\x1b[2J\u202eevil\nforged: line\x9b31m\x7f"
    p = write(tmp_path / "evil.gguf", gguf_bytes([
        ARCH, kv_str("general.name", "n\x1b[31m"), kv_str("umi.source", evil), kv_str("umi.\x1b[1mkey", "v"),
    ]))
    r = CliRunner().invoke(cli, ["inspect", str(p)])
    assert r.exit_code == 0, r.output
    for bad in ("\x1b", "\x07", "\x9b", "\x7f", "\u202e"):
        assert bad not in r.output
    lines = r.output.splitlines()
    assert len(lines) == 6          # path, name, tensors, parameters, two umi keys: no forged line
    assert lines[1] == "name: n\\x1b[31m"
    assert lines[4] == "umi.source: \\x1b]0;owned\\x07\\x1b[2J\\u202eevil\\nforged: line\\x9b31m\\x7f"
    assert lines[5] == "umi.\\x1b[1mkey: v"
    j = CliRunner().invoke(cli, ["inspect", str(p), "--json"])
    assert not set(j.output) & {"\x1b", "\x07", "\x9b", "\x7f"}
    assert json.loads(j.output)["umi"]["umi.source"] == evil     # JSON keeps the value, escaped


# --- llama.cpp's own messages ----------------------------------------------------------------------------

def test_error_log_level_is_ggml_error():
    """The bundled ggml's enum: NONE, DEBUG, INFO, WARN, ERROR, CONT. Before, 3 (WARN) was taken for ERROR."""
    import llama_cpp

    from umi_edge.engine import _native

    header = Path(llama_cpp.__file__).parent.parent / "include" / "ggml.h"
    if not header.is_file():
        pytest.skip(f"{header} not installed with this llama-cpp-python build")
    levels = dict(re.findall(r"GGML_LOG_LEVEL_(\w+)\s*=\s*(\d+)", header.read_text()))
    assert int(levels["ERROR"]) == _native._GGML_LOG_ERROR and int(levels["CONT"]) == _native._GGML_LOG_CONT
    _native.lib()
    _native.clear_errors()
    _native._log_cb(int(levels["WARN"]), b"a warning\n", None)
    _native._log_cb(int(levels["ERROR"]), b"the cause\n", None)
    _native._log_cb(int(levels["ERROR"]), b"failed to load model\n", None)
    assert _native.last_error() == "the cause" and _native.last_error() == "no details logged"


def test_truncated_model_message_names_the_real_cause(tmp_path):
    """Before: 'llama.cpp could not load …: no details logged'."""
    from tiny_gguf import write_llama_gguf

    from umi_edge.engine.llama import LlamaBackend

    full = tmp_path / "full.gguf"
    write_llama_gguf(full, ["<s>", "</s>", "a", "b"], [], n_embd=16, n_layer=1, n_head=2, n_head_kv=2, n_ff=32,
                     n_ctx=256, seed=0, scale=0.1, embd_scale=1.0, out_scale=0.1)
    cut = write(tmp_path / "cut.gguf", full.read_bytes()[:-100])
    with LlamaBackend() as be, pytest.raises(ModelError) as e:
        be.load_model(cut)
    assert "data is not within the file bounds" in str(e.value), str(e.value)


@pytest.mark.parametrize("key, value, why", [
    ("llama.block_count", 0, "llama.block_count is 0; llama.cpp runs 1 to 512 layers"),
    ("llama.block_count", 513, "llama.block_count is 513; llama.cpp runs 1 to 512 layers"),
    ("llama.attention.layer_norm_rms_epsilon", -1.0, "layer_norm_rms_epsilon is -1.0, not a finite number >= 0"),
    ("llama.attention.layer_norm_rms_epsilon", float("nan"), "layer_norm_rms_epsilon is nan"),
])
def test_hyperparameters_llama_cpp_would_abort_on(tmp_path, key, value, why):
    """Found by fuzzing the run path: llama.cpp GGML_ASSERTs (the process aborts) on these instead of refusing
    the file. The header check refuses them first."""
    from tiny_gguf import write_llama_gguf

    from umi_edge.engine import gguf_header as gh
    from umi_edge.engine.llama import LlamaBackend

    good = tmp_path / "good.gguf"
    write_llama_gguf(good, ["<s>", "</s>", "a", "b", "ab"], ["a b"], n_embd=16, n_layer=1, n_head=2, n_head_kv=2,
                     n_ff=32, n_ctx=64, seed=0, scale=0.1, embd_scale=1.0, out_scale=0.1)
    assert gh.model_header(good) == {"general.architecture": "llama"}
    data = bytearray(good.read_bytes())
    where = {}
    read_value = gh._Cursor.value

    def traced(self, vtype, what, depth=0):
        where[what.strip("'")] = (self.pos, vtype)
        return read_value(self, vtype, what, depth)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gh._Cursor, "value", traced)
        read_header(good)
    pos, vtype = where[key]
    fmt = gh.SCALAR[vtype]
    data[pos:pos + struct.calcsize(fmt)] = struct.pack(fmt, value)
    bad = write(tmp_path / "bad.gguf", bytes(data))
    with LlamaBackend() as be, pytest.raises(ModelError, match=re.escape(why)):
        be.load_model(bad)
