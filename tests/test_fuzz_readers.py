"""Fuzzing the converter's checkpoint readers: the restricted unpickler (torch-zip `.bin`) and the
safetensors reader, on mutated real files and on generated tensor geometry.

Every case runs in a worker process (tests/fuzz_worker.py) under a time limit, so a segfault or a hang is a
reported failure. The bar: no crash, no hang, no traceback; every rejection is one line from our error tree
(ConvertError), every acceptance a list of tensors whose arrays have their declared shape and dtype and lie
inside their storage. The fast tier runs a few hundred cases; `-m slow` runs thousands.
"""
from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crafted import PickleAsm, state_dict_pickle, write_torch_zip

CASE_SECONDS = 10.0   # a real case takes milliseconds; this only separates "slow machine" from "hang"
FAST, SLOW = 100, 2500  # examples per fuzz target (4 targets)


class Worker:
    """One fuzz worker process, restarted after a crash or a hang."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.stats: Counter = Counter()
        self.slowest = 0.0

    def _start(self) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fuzz_worker.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert json.loads(self._reply(60.0) or "{}").get("status") == "ready", "fuzz worker did not start"

    def _reply(self, timeout: float) -> str | None:
        out = self.proc.stdout
        ready, _, _ = select.select([out], [], [], timeout)
        return out.readline().decode() if ready else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, kind: str, data: bytes) -> dict:
        if self.proc is None:
            self._start()
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write({"bin": b"b", "safetensors": b"s"}[kind] + struct.pack("<Q", len(data)) + data)
            self.proc.stdin.flush()
            line = self._reply(CASE_SECONDS)
        except BrokenPipeError:
            line = ""
        elapsed = time.perf_counter() - t0
        if line is None:
            self.stop()
            result = {"status": "hang", "seconds": CASE_SECONDS}
        elif not line:
            code = self.proc.wait()
            self.proc = None
            result = {"status": "crash", "returncode": code}
        else:
            result = json.loads(line)
            self.slowest = max(self.slowest, elapsed)
        self.stats[result["status"]] += 1
        return result


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()
    print(f"\nfuzz cases: {dict(w.stats)}; slowest accepted or rejected case {w.slowest * 1000:.0f} ms")


def check(worker: Worker, kind: str, data: bytes) -> dict:
    """The bar, for one case."""
    r = worker.run(kind, data)
    assert r["status"] in ("ok", "rejected"), (r, data[:200])
    if r["status"] == "rejected":
        assert r["type"] == "ConvertError", r
        assert r["message"] and "\n" not in r["message"] and "\r" not in r["message"], r
    return r


# --- seeds: real files the mutations start from ------------------------------------------------------------

@pytest.fixture(scope="module")
def bin_seeds(tmp_path_factory) -> list[tuple[bytes, dict[str, bytes]]]:
    """(data.pkl, storages) of real torch.save files: a module's state dict (OrderedDict + _metadata via
    BUILD), a parameter, views sharing a storage; protocols 2 and 4; plus an assembled one."""
    import torch

    folder = tmp_path_factory.mktemp("fuzz-seeds")
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2)).to(torch.bfloat16)
    sd = model.state_dict()
    base = torch.arange(12, dtype=torch.float16).reshape(3, 4)
    sd.update(p=torch.nn.Parameter(torch.ones(2, 2)), v=base.t(), row=base[1], tail=base[2, 1:])
    seeds = []
    for proto in (2, 4):
        path = folder / f"p{proto}.bin"
        torch.save(sd, path, pickle_protocol=proto)
        with zipfile.ZipFile(path) as z:
            pkl = next(z.read(n) for n in z.namelist() if n.endswith("/data.pkl"))
            storages = {n.rsplit("/", 1)[1]: z.read(n) for n in z.namelist() if "/data/" in n}
        seeds.append((pkl, storages))
    seeds.append((state_dict_pickle({"w": ("FloatStorage", "0", 6, 1, (2, 2), (1, 2))}), {"0": bytes(24)}))
    return seeds


def st_seed() -> tuple[dict, bytes]:
    """A safetensors header and data section with every float dtype, a scalar and an empty tensor."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, dtype, shape, itemsize in (("a", "F32", [2, 3], 4), ("b", "F16", [4], 2), ("c", "BF16", [2, 2], 2),
                                         ("d", "F64", [], 8), ("e", "F32", [0, 5], 4)):
        n = itemsize
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n]}
        data += bytes(range(256))[:n] if n <= 256 else bytes(n)
    return header, data


def st_file(header: dict, data: bytes, length: int | None = None) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


# --- mutations ---------------------------------------------------------------------------------------------

INTERESTING = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
# opcode runs that build deep or large structures when spliced into a pickle
RUNS = [b"\x85", b"(", b"l", b"t", b"h\x00", b"q\x00", b"N", b"0", b")", b"]", b"}", b"e", b"s", b"b", b"R",
        b"\x94", b"\x93"]


@st.composite
def mutated(draw, data: bytes, runs: bool = False) -> bytes:
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(b)))
        op = draw(st.sampled_from(["flip", "byte", "int", "insert", "delete", "dup", "truncate"]
                                  + (["run"] if runs else [])))
        if op == "flip" and pos < len(b):
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and pos < len(b):
            b[pos] = draw(st.sampled_from([0, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif op == "int":
            width = draw(st.sampled_from([1, 2, 4, 8]))
            v = draw(st.sampled_from(INTERESTING) | st.integers(0, (1 << 64) - 1)) % (1 << (8 * width))
            b[pos:pos + width] = v.to_bytes(width, "little")
        elif op == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del b[pos:pos + draw(st.integers(1, 32))]
        elif op == "dup":
            n = draw(st.integers(1, 64))
            b[pos:pos] = b[draw(st.integers(0, max(0, len(b) - 1))):][:n]
        elif op == "truncate":
            del b[pos:]
        elif op == "run":
            b[pos:pos] = draw(st.sampled_from(RUNS)) * draw(st.sampled_from([2, 63, 64, 65, 1000, 100_000]))
    return bytes(b)


def zipped(pkl: bytes, storages: dict[str, bytes], deflate: bool, tmp: Path) -> bytes:
    path = write_torch_zip(tmp / "m.bin", pkl, storages,
                           pkl_compression=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    return path.read_bytes()


# mostly small values, so many cases are valid views; the rest negative or past 64 bits
EXTREME = st.sampled_from([-(1 << 63), -(1 << 40), -5, -1, (1 << 31) - 1, 1 << 31, (1 << 62), (1 << 63) - 1, 1 << 63,
                           1 << 64])
GEOM = st.one_of(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4), st.integers(0, 16), EXTREME)
STORAGE_TYPES = st.sampled_from(["FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage",
                                 "BoolStorage", "ByteStorage"])


@st.composite
def generated_bin(draw) -> tuple[bytes, dict[str, bytes]]:
    """A state dict pickle whose tensors have drawn geometry over drawn storages."""
    storages = {str(i): draw(st.binary(min_size=8, max_size=128)) for i in range(draw(st.integers(1, 3)))}
    tensors = {}
    for i in range(draw(st.integers(1, 2))):
        ndim = draw(st.integers(0, 4))
        n_strides = draw(st.sampled_from([ndim] * 7 + [ndim + 1]))
        tensors[f"t{i}"] = (draw(STORAGE_TYPES), draw(st.sampled_from(sorted(storages) * 4 + ["missing"])), 0,
                            draw(GEOM), tuple(draw(GEOM) for _ in range(ndim)),
                            tuple(draw(GEOM) for _ in range(n_strides)))
    return state_dict_pickle(tensors), storages


JSON = st.recursive(
    st.none() | st.booleans() | st.sampled_from(INTERESTING + [-1, -16, -(1 << 63)]) | st.integers(-(1 << 70), 1 << 70)
    | st.floats() | st.text(max_size=6) | st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "U8"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mutated_header(draw) -> bytes:
    header, data = st_seed()
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(header)))
        entry = header[name]
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "entry", "near", "drop"]))
        if field == "entry":
            header[name] = draw(JSON)
        elif field == "drop" and isinstance(entry, dict) and entry:
            entry.pop(draw(st.sampled_from(sorted(entry))))
        elif field == "near" and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list) \
                and entry["data_offsets"]:
            # one number of a valid entry moved by a small or a boundary amount
            key = draw(st.sampled_from(["shape", "data_offsets"]))
            if isinstance(entry.get(key), list) and entry[key]:
                i = draw(st.integers(0, len(entry[key]) - 1))
                if isinstance(entry[key][i], int):
                    entry[key][i] += draw(st.sampled_from([-64, -8, -1, 1, 8, 1 << 62]))
        elif isinstance(entry, dict):
            entry[field] = draw(JSON)
    length = draw(st.sampled_from([None] * 6 + [0, 1, 7, (1 << 63), (1 << 64) - 1]) | st.integers(0, 600))
    return st_file(header, draw(st.sampled_from([data, data[:-3], data + bytes(8), b""])), length)


# --- the fuzz targets (each as a fast and a slow test) -------------------------------------------------------

def _pickle_case(worker, bin_seeds, tmp_path, data):
    pkl, storages = data.draw(st.sampled_from(bin_seeds))
    check(worker, "bin", zipped(data.draw(mutated(pkl, runs=True)), storages, data.draw(st.booleans()), tmp_path))


def _zip_case(worker, bin_seeds, tmp_path, data):
    pkl, storages = data.draw(st.sampled_from(bin_seeds))
    check(worker, "bin", data.draw(mutated(zipped(pkl, storages, data.draw(st.booleans()), tmp_path))))


def _geometry_case(worker, tmp_path, data):
    pkl, storages = data.draw(generated_bin())
    check(worker, "bin", zipped(pkl, storages, False, tmp_path))


def _safetensors_case(worker, data):
    if data.draw(st.booleans()):
        check(worker, "safetensors", data.draw(mutated_header()))
    else:
        header, body = st_seed()
        check(worker, "safetensors", data.draw(mutated(st_file(header, body))))


def _tier(n: int):
    # the fast tier replays the same cases every run (CI stays reproducible); the slow tier explores
    return settings(max_examples=n, deadline=None, database=None, derandomize=n == FAST,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])


@_tier(FAST)
@given(data=st.data())
def test_fuzz_unpickler_mutated_pickles(worker, bin_seeds, tmp_path, data):
    _pickle_case(worker, bin_seeds, tmp_path, data)


@_tier(FAST)
@given(data=st.data())
def test_fuzz_unpickler_mutated_zips(worker, bin_seeds, tmp_path, data):
    _zip_case(worker, bin_seeds, tmp_path, data)


@_tier(FAST)
@given(data=st.data())
def test_fuzz_unpickler_tensor_geometry(worker, tmp_path, data):
    _geometry_case(worker, tmp_path, data)


@_tier(FAST)
@given(data=st.data())
def test_fuzz_safetensors(worker, data):
    _safetensors_case(worker, data)


@pytest.mark.slow
@_tier(SLOW)
@given(data=st.data())
def test_fuzz_unpickler_mutated_pickles_slow(worker, bin_seeds, tmp_path, data):
    _pickle_case(worker, bin_seeds, tmp_path, data)


@pytest.mark.slow
@_tier(SLOW)
@given(data=st.data())
def test_fuzz_unpickler_mutated_zips_slow(worker, bin_seeds, tmp_path, data):
    _zip_case(worker, bin_seeds, tmp_path, data)


@pytest.mark.slow
@_tier(SLOW)
@given(data=st.data())
def test_fuzz_unpickler_tensor_geometry_slow(worker, tmp_path, data):
    _geometry_case(worker, tmp_path, data)


@pytest.mark.slow
@_tier(SLOW)
@given(data=st.data())
def test_fuzz_safetensors_slow(worker, data):
    _safetensors_case(worker, data)


# --- the harness itself catches what it is meant to catch ----------------------------------------------------

def test_seeds_are_accepted(worker, bin_seeds, tmp_path):
    """Unmutated seeds read cleanly, so the mutations start from files the readers accept."""
    for pkl, storages in bin_seeds:
        assert check(worker, "bin", zipped(pkl, storages, False, tmp_path))["status"] == "ok"
        assert check(worker, "bin", zipped(pkl, storages, True, tmp_path))["status"] == "ok"
    header, body = st_seed()
    assert check(worker, "safetensors", st_file(header, body)) == {"status": "ok", "tensors": 5}


def test_harness_reports_crashes_and_hangs(monkeypatch):
    """A worker that segfaults is a "crash" and one that stops answering is a "hang", not a pytest death."""
    w = Worker()
    try:
        w._start()
        os.kill(w.proc.pid, 11)
        assert w.run("bin", b"x")["status"] == "crash"
        w._start()
        os.kill(w.proc.pid, 19)  # SIGSTOP: alive, never answers
        monkeypatch.setattr(sys.modules[__name__], "CASE_SECONDS", 1.0)
        assert w.run("bin", b"x")["status"] == "hang"
    finally:
        w.stop()


def test_harness_flags_a_view_outside_its_storage(monkeypatch, tmp_path):
    """With the bounds check disabled the worker's own oracle notices a view outside its storage (in-process:
    the view stays inside the mapped file, so nothing faults)."""
    import fuzz_worker
    from umi_convert import tensor_ref

    monkeypatch.setattr(tensor_ref.TensorRef, "check_bounds", lambda self, file_size=None: None)
    pkl = state_dict_pickle({"w": ("FloatStorage", "0", 4, -4, (4,), (1,))})
    data = zipped(pkl, {"0": bytes(16)}, False, tmp_path)
    r = fuzz_worker.run_case("bin", data, tmp_path)
    assert r["status"] == "bug" and "outside storage" in r["message"], r


def test_deep_run_is_refused_in_the_worker(worker, tmp_path):
    """The run mutation reaches the depth bound: a 100,000-deep tuple key is a one-line refusal."""
    pkl = PickleAsm().raw(b"}").int(1).raw(b"\x85" * 100_000).str("x").raw(b"s").stop()
    r = check(worker, "bin", zipped(pkl, {}, True, tmp_path))
    assert r["status"] == "rejected" and "nested deeper" in r["message"]
