"""Fuzzing the GGUF header reader (umi-edge inspect, and run's pre-flight check) with mutated files: every
case ends, under a time limit, in a summary or in our one-line ModelError; never a hang or a traceback.
A few hundred cases here (derandomized); thousands in the slow tier: `pytest -m slow tests/test_gguf_fuzz.py`."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crafted_gguf import rich_gguf, time_limit
from tiny_gguf import byte_unicode, write_llama_gguf
from umi_convert import inspect_gguf
from umi_edge.cli import cli
from umi_edge.engine.gguf_header import gguf_header, read_header
from umi_edge.errors import ModelError

CASE_SECONDS = 3.0     # generous for a loaded 2-core box; a well-behaved case takes milliseconds
INTERESTING = [0, 1, 2, 3, 4, 7, 8, 9, 12, 13, 31, 32, 63, 64, 255, 256, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 32,
               1 << 40, 1 << 62, 1 << 63, (1 << 64) - 1]


def _seeds(folder: Path) -> list[bytes]:
    bu = byte_unicode()
    tokens = ["<s>", "</s>"] + [bu[b] for b in range(97, 123)] + ["ab", "abc"]
    vocab = folder / "vocab.gguf"
    write_llama_gguf(vocab, tokens, [f"{bu[97]} {bu[98]}", f"ab {bu[99]}"], n_embd=8, n_layer=1, n_head=2,
                     n_head_kv=2, n_ff=16, n_ctx=64, seed=0, scale=0.1, embd_scale=1.0, out_scale=0.1,
                     vocab_only=True)
    return [rich_gguf(folder / "rich.gguf").read_bytes(), vocab.read_bytes()]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-seeds")
    return folder, [(d, *field_offsets(d)) for d in _seeds(folder)]


def field_offsets(data: bytes) -> tuple[list[int], list[int], int]:
    """Offsets of every count, length and type field the reader decodes in a seed (all, and those of the
    tensor table), and where its header ends: most mutations land on these (a uniform byte position mostly
    hits string bodies or the magic)."""
    import tempfile

    from umi_edge.engine import gguf_header as gh

    offsets: list[int] = []
    table: list[int] = []      # offsets[table[0]:] are the tensor table's
    unpack, infos = gh._Cursor.unpack, gh._tensor_infos

    def traced_infos(c, n):
        table.append(len(offsets))
        return infos(c, n)

    def traced(self, st, what):
        offsets.append(self.pos)
        return unpack(self, st, what)

    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(data)
        f.flush()
        gh._Cursor.unpack, gh._tensor_infos = traced, traced_infos
        try:
            head = read_header(Path(f.name), tensors=True)
        finally:
            gh._Cursor.unpack, gh._tensor_infos = unpack, infos
    # the version (offset 4) is left to the positional mutations: drawn first, it would dominate the cases
    fields = [o for o in offsets[:table[0]] if o != 4]
    tensors = offsets[table[0]:]
    return fields + tensors, tensors or fields, head.data_offset or len(data)


@st.composite
def mutated(draw, seeds: list[tuple[bytes, list[int], list[int], int]]) -> bytes:
    seed, offsets, tensor_offsets, end = draw(st.sampled_from(seeds))
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["byte", "u32", "u64", "u64", "truncate", "insert", "delete"]))
        where = draw(st.integers(0, 9))
        if where < 4:            # a field the reader decodes
            pos = draw(st.sampled_from(offsets))
        elif where < 6:          # a field of the tensor table (few, and checked last)
            pos = draw(st.sampled_from(tensor_offsets))
        elif where < 9:          # anywhere in the header after the magic
            pos = draw(st.integers(4, max(end - 1, 4)))
        else:                    # anywhere at all
            pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "byte":
            data[pos:pos + 1] = bytes([draw(st.integers(0, 255))])
        elif kind in ("u32", "u64"):
            bits = 32 if kind == "u32" else 64
            value = draw(st.sampled_from(INTERESTING) | st.integers(0, (1 << bits) - 1))
            value = draw(st.sampled_from([value, len(data), len(data) + 1, max(len(data) - pos, 0)])) % (1 << bits)
            data[pos:pos + bits // 8] = struct.pack("<I" if bits == 32 else "<Q", value)
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=24))
        else:
            del data[pos:pos + draw(st.integers(1, 24))]
    return bytes(data)


def check_case(path: Path, data: bytes) -> None:
    """Every reader either answers or raises our ModelError: one line naming the file."""
    path.write_bytes(data)
    with time_limit(CASE_SECONDS):
        for read in (lambda: read_header(path, tensors=True), lambda: inspect_gguf(path), lambda: gguf_header(path)):
            try:
                read()
            except ModelError as e:
                msg = str(e)
                assert "\n" not in msg and str(path) in msg, msg
        r = CliRunner().invoke(cli, ["inspect", str(path)])
    assert r.exit_code in (0, 1), (r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit)), r.exception
    if r.exit_code == 1:
        assert r.output.count("\n") == 1 and r.output.startswith("Error: "), r.output


def _fuzz(seeds_fixture, examples: int, derandomize: bool):
    folder, seeds = seeds_fixture
    case = folder / "case.gguf"

    @settings(max_examples=examples, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutated(seeds))
    def run(data):
        check_case(case, data)

    run()


def test_seeds_are_valid_ggufs(seeds):
    folder, data = seeds
    for i, (d, offsets, tensor_offsets, end) in enumerate(data):
        assert len(offsets) > 40 and set(tensor_offsets) <= set(offsets) and 0 < end <= len(d)
        (folder / f"seed{i}.gguf").write_bytes(d)
        info = inspect_gguf(folder / f"seed{i}.gguf")
        assert info["architecture"] == "llama"


def test_fuzz_header_reader_fast(seeds):
    _fuzz(seeds, examples=300, derandomize=True)


@pytest.mark.slow
def test_fuzz_header_reader_thousands(seeds):
    _fuzz(seeds, examples=5000, derandomize=False)


# --- the run path: mutated models that pass the header check, loaded and run by llama.cpp -----------------

_LOAD_CHILD = r"""
import sys
from pathlib import Path
from umi_edge.engine.llama import LlamaBackend
from umi_edge.errors import ModelError
folder = Path(sys.argv[1])
with LlamaBackend() as be:
    for p in sorted(folder.glob("case*.gguf"))[int(sys.argv[2]):]:
        (folder / "current").write_text(p.name)
        try:
            model = be.load_model(p)
            role = be.new_role(model, name=p.stem, n_ctx=64)
            role.generate([model.bos_id, 2, 3], max_tokens=2)
            print("ok", p.name, flush=True)
        except ModelError as e:
            print("refused" if "\n" not in str(e) else "multiline", p.name, flush=True)
"""


def _hyperparameter_cases(data: bytes) -> list[bytes]:
    """Every scalar hyperparameter of the seed set to boundary values (0, huge, negative, NaN, inf)."""
    from umi_edge.engine import gguf_header as gh

    places: dict[str, tuple[int, int]] = {}
    value = gh._Cursor.value

    def traced(self, vtype, what, depth=0):
        if depth == 0 and vtype in gh.SCALAR:
            places[what.strip("'")] = (self.pos, vtype)
        return value(self, vtype, what, depth)

    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".gguf") as f:
        f.write(data)
        f.flush()
        gh._Cursor.value = traced
        try:
            read_header(Path(f.name))
        finally:
            gh._Cursor.value = value
    cases = []
    for key, (pos, vtype) in places.items():
        fmt = gh.SCALAR[vtype]
        floats = fmt in ("<f", "<d")
        for v in ([0.0, -1e-5, -1.0, 1e30, float("nan"), float("inf"), float("-inf")] if floats else
                  [0, 1, 3, 64, 129, 513, 65535, 0x7FFFFFFF, 0xFFFFFFFF]):
            b = bytearray(data)
            n = struct.calcsize(fmt)
            b[pos:pos + n] = struct.pack(fmt, v) if floats else (v % (1 << (8 * n))).to_bytes(n, "little")
            cases.append(bytes(b))
    return cases


@pytest.mark.slow
def test_fuzz_run_path_never_crashes(tmp_path):
    """Mutated tiny models through load_model, a context and two decoded tokens, in a child process that is
    restarted after a crash: 0 crashes (llama.cpp aborts on some values it asserts instead of refusing; the
    header check refuses those first), every refusal one ModelError line."""
    import os
    import random
    import subprocess
    import sys

    seed = tmp_path / "seed.gguf"
    write_llama_gguf(seed, ["<s>", "</s>", "a", "b", "ab"], ["a b"], n_embd=32, n_layer=1, n_head=2, n_head_kv=2,
                     n_ff=64, n_ctx=128, seed=0, scale=0.1, embd_scale=1.0, out_scale=0.1)
    data = seed.read_bytes()
    offsets, _, end = field_offsets(data)
    rng = random.Random(0)
    cases = _hyperparameter_cases(data)
    for _ in range(600):
        b = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            pos = rng.choice(offsets) if rng.random() < 0.7 else rng.randrange(4, end)
            width = rng.choice([1, 4, 8])
            v = rng.choice(INTERESTING + [rng.getrandbits(8 * width)]) % (1 << (8 * width))
            b[pos:pos + width] = v.to_bytes(width, "little")
        cases.append(bytes(b))
    folder = tmp_path / "cases"
    folder.mkdir()
    for i, c in enumerate(cases):
        (folder / f"case{i:05d}.gguf").write_bytes(c)
    names = sorted(p.name for p in folder.glob("case*.gguf"))
    crashes, done, start = [], {}, 0
    while start < len(names):
        p = subprocess.run([sys.executable, "-c", _LOAD_CHILD, str(folder), str(start)], capture_output=True,
                           text=True, timeout=900, env={**os.environ, "UMI_EDGE_LLAMA_LOGS": "0"})
        for line in p.stdout.splitlines():
            kind, name = line.split(" ", 1)
            done[name] = kind
        if p.returncode == 0:
            break
        current = (folder / "current").read_text()
        crashes.append((current, p.returncode, p.stderr.strip().splitlines()[-3:]))
        start = names.index(current) + 1
    assert crashes == []
    assert len(done) == len(names)
    assert "multiline" not in done.values()
    assert 0 < list(done.values()).count("refused") < len(names)      # both outcomes were exercised
