"""Reading a GGUF file's header (key/values and tensor infos) with every count and length checked against
the file size before it is trusted, so a crafted or damaged file is one ModelError, never a hang, a huge
allocation or a traceback. Pure Python (struct over an mmap): no llama.cpp, gguf or numpy import."""
from __future__ import annotations

import math
import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

from ..errors import ModelError

# GGUF value types (gguf.GGUFValueType), scalar ones with their struct format
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
TYPE_NAMES = {0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32", 7: "bool",
              8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64"}
_STRUCTS = {t: struct.Struct(f) for t, f in SCALAR.items()}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")

VERSIONS = (2, 3)            # what llama.cpp reads (v1 used 32-bit counts)
MAX_DIMS = 4                 # GGML_MAX_DIMS
MAX_NAME = 63                # GGML_MAX_NAME - 1: llama.cpp refuses longer tensor names
MAX_KEY = 1 << 16            # real keys are tens of bytes
MAX_DEPTH = 4                # arrays of arrays (llama.cpp reads none; gguf-py writes some)
MAX_ELEMENTS = 1 << 26       # per string/array array: a 262k vocab plus its merges is far below
KEEP_VALUES = 1 << 16        # arrays longer than this are summarised instead of materialised
_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class ArraySummary:
    """Stands for a wanted array too long to materialise (a vocabulary, say)."""

    type: str
    count: int

    def __str__(self) -> str:
        return f"[{self.count} × {self.type}]"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]    # GGUF order: ne[0] (the contiguous dimension) first
    type: int                 # ggml type id
    offset: int               # from the start of the data section

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Header:
    path: Path
    size: int                 # file size in bytes
    version: int
    n_tensors: int
    n_kv: int
    fields: dict[str, Any] = field(default_factory=dict)       # wanted keys -> values
    types: dict[str, int] = field(default_factory=dict)        # wanted keys -> GGUF value type
    tensors: tuple[TensorInfo, ...] | None = None               # when read with tensors=True
    alignment: int = 32
    data_offset: int | None = None                              # start of the tensor data (tensors=True)


class _Cursor:
    """Bounds-checked little-endian reads from a buffer; every failure is a ModelError naming the file."""

    def __init__(self, buf, size: int, path: Path):
        self.buf, self.size, self.path, self.pos = buf, size, path, 0

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.path}: corrupt or truncated GGUF ({what}); download or convert it again")

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(f"{what} at byte {self.pos} needs {n} bytes, the file has {self.size}")

    def unpack(self, st: struct.Struct, what: str):
        self.need(st.size, what)
        value = st.unpack_from(self.buf, self.pos)[0]
        self.pos += st.size
        return value

    def u32(self, what: str) -> int:
        return self.unpack(_U32, what)

    def u64(self, what: str) -> int:
        return self.unpack(_U64, what)

    def string(self, what: str, limit: int | None = None) -> str:
        n = self.u64(f"length of {what}")
        if limit is not None and n > limit:
            raise self.fail(f"{what} of {n} bytes at byte {self.pos - 8}, at most {limit} allowed")
        self.need(n, what)
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", "replace")
        self.pos += n
        return s

    def skip_string(self, what: str) -> None:
        n = self.u64(f"length of {what}")
        self.need(n, what)
        self.pos += n

    def _skip_strings(self, n: int, what: str) -> None:
        # inlined: a vocabulary is 10^5 strings and this runs on every model load
        buf, size, pos, unpack = self.buf, self.size, self.pos, _U64.unpack_from
        for _ in range(n):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, f"length of a string in {what}")
            pos += 8 + unpack(buf, pos)[0]
            if pos > size:
                raise self.fail(f"a string in {what} ends at byte {pos}, the file has {size}")
        self.pos = pos

    def array_head(self, what: str, depth: int) -> tuple[int, int]:
        etype, n = self.u32(f"element type of {what}"), self.u64(f"length of {what}")
        if etype in SCALAR:
            self.need(n * _STRUCTS[etype].size, f"{n} {TYPE_NAMES[etype]} values of {what}")
        elif etype in (STRING, ARRAY):
            if n > MAX_ELEMENTS:
                raise self.fail(f"{what} claims {n} elements, at most {MAX_ELEMENTS} allowed")
            if etype == ARRAY and depth + 1 >= MAX_DEPTH:
                raise self.fail(f"{what} nests arrays more than {MAX_DEPTH} deep")
            # every element takes at least its 8-byte length (a string) or 12-byte head (an array)
            self.need(n * (8 if etype == STRING else 12), f"{n} {TYPE_NAMES[etype]} elements of {what}")
        else:
            raise self.fail(f"{what} has unknown element type {etype}")
        return etype, n

    def skip(self, vtype: int, what: str, depth: int = 0) -> None:
        if vtype in SCALAR:
            self.need(_STRUCTS[vtype].size, what)
            self.pos += _STRUCTS[vtype].size
        elif vtype == STRING:
            self.skip_string(what)
        elif vtype == ARRAY:
            etype, n = self.array_head(what, depth)
            if etype in SCALAR:
                self.pos += n * _STRUCTS[etype].size
            elif etype == STRING:
                self._skip_strings(n, what)
            else:
                for _ in range(n):
                    self.skip(ARRAY, what, depth + 1)
        else:
            raise self.fail(f"{what} has unknown value type {vtype}")

    def value(self, vtype: int, what: str, depth: int = 0):
        if vtype in SCALAR:
            return self.unpack(_STRUCTS[vtype], what)
        if vtype == STRING:
            return self.string(what)
        if vtype != ARRAY:
            raise self.fail(f"{what} has unknown value type {vtype}")
        start = self.pos
        etype, n = self.array_head(what, depth)
        if n > KEEP_VALUES:
            self.pos = start
            self.skip(ARRAY, what, depth)
            return ArraySummary(TYPE_NAMES[etype], n)
        if etype in SCALAR:
            st = _STRUCTS[etype]
            out = [v for (v,) in st.iter_unpack(bytes(self.buf[self.pos:self.pos + n * st.size]))]
            self.pos += n * st.size
            return out
        return [self.value(etype, what, depth + 1) for _ in range(n)]


def read_header(path, want: Collection[str] | Callable[[str], bool] | None = None, *,
                tensors: bool = False, stop_early: bool = True) -> Header:
    """The header of GGUF `path`: values of the `want`ed keys (a collection, a predicate, or None for all),
    and with `tensors` the tensor infos. Without `tensors`, reading stops once every wanted key (of a
    collection) is found. Raises ModelError for anything that is not a well-formed GGUF header."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise ModelError(f"cannot read {p}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"{p} is not a regular file; pass a .gguf model file")
        size = st.st_size
        if size < 4:
            raise ModelError(f"{p} is not a GGUF file ({size} bytes); convert it with `umi-edge convert`")
        try:
            buf = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read {p}: {e}") from None
        try:
            return _parse(_Cursor(buf, size, p), want, tensors, stop_early)
        finally:
            buf.close()
    finally:
        os.close(fd)


def _parse(c: _Cursor, want, tensors: bool, stop_early: bool) -> Header:
    p = c.path
    if c.buf[:4] != b"GGUF":
        raise ModelError(f"{p} is not a GGUF file (bad magic); convert it with `umi-edge convert`")
    c.pos = 4
    version = c.u32("version")
    if version not in VERSIONS:
        raise ModelError(f"{p}: unsupported GGUF version {version} (readable: {', '.join(map(str, VERSIONS))}); "
                         "convert the model again with `umi-edge convert`")
    n_tensors, n_kv = c.u64("tensor count"), c.u64("key/value count")
    # cheapest possible entries: a key/value is >= 13 bytes, a tensor info >= 24 bytes
    c.need(n_kv * 13, f"{n_kv} key/value pairs")
    c.need(n_kv * 13 + n_tensors * 24, f"{n_tensors} tensor infos")
    wanted = (lambda k: True) if want is None else want if callable(want) else set(want).__contains__
    n_wanted = len(set(want)) if want is not None and not callable(want) else None
    fields: dict[str, Any] = {}
    types: dict[str, int] = {}
    seen: set[str] = set()
    alignment = 32
    for i in range(n_kv):
        key = c.string(f"key {i}", MAX_KEY)
        if key in seen:
            raise c.fail(f"duplicate key {key!r}")
        seen.add(key)
        vtype = c.u32(f"type of {key!r}")
        if key == "general.alignment":
            if vtype != 4:
                raise c.fail(f"general.alignment is {TYPE_NAMES.get(vtype, vtype)}, not uint32")
            alignment = c.u32(key)
            if alignment == 0 or alignment & (alignment - 1):
                raise c.fail(f"general.alignment {alignment} is not a power of two")
            if wanted(key):
                fields[key], types[key] = alignment, vtype
        elif wanted(key):
            fields[key], types[key] = c.value(vtype, repr(key)), vtype
        else:
            c.skip(vtype, repr(key))
        if stop_early and not tensors and len(fields) == n_wanted:
            return Header(p, c.size, version, n_tensors, n_kv, fields, types, alignment=alignment)
    if not tensors:
        return Header(p, c.size, version, n_tensors, n_kv, fields, types, alignment=alignment)
    infos = _tensor_infos(c, n_tensors)
    data_offset = -(-c.pos // alignment) * alignment
    if n_tensors and data_offset > c.size:
        raise c.fail(f"tensor data would start at byte {data_offset}, the file has {c.size}")
    return Header(p, c.size, version, n_tensors, n_kv, fields, types, infos, alignment, data_offset)


def _tensor_infos(c: _Cursor, n_tensors: int) -> tuple[TensorInfo, ...]:
    out: list[TensorInfo] = []
    names: set[str] = set()
    for i in range(n_tensors):
        name = c.string(f"name of tensor {i}", MAX_NAME)
        if name in names:
            raise c.fail(f"duplicate tensor {name!r}")
        names.add(name)
        n_dims = c.u32(f"dimension count of tensor {name!r}")
        if n_dims > MAX_DIMS:
            raise c.fail(f"tensor {name!r} has {n_dims} dimensions, at most {MAX_DIMS} allowed")
        shape = tuple(c.u64(f"shape of tensor {name!r}") for _ in range(n_dims))
        n = 1
        for d in shape:
            n *= d
        if any(d > _INT64_MAX for d in shape) or n > _INT64_MAX:
            raise c.fail(f"tensor {name!r} has shape {list(shape)}, too large")
        ttype = c.u32(f"type of tensor {name!r}")
        offset = c.u64(f"offset of tensor {name!r}")
        out.append(TensorInfo(name, shape, ttype, offset))
    return tuple(out)


def gguf_header(path: Path, wanted: tuple[str, ...] = ("general.type", "general.architecture")) -> dict:
    """The values of the `wanted` keys present in GGUF `path` (read up to the last of them)."""
    return read_header(path, wanted).fields


# hyperparameters llama.cpp asserts on (GGML_ASSERT aborts the process) instead of refusing the file
LLAMA_MAX_LAYERS = 512
_ASSERTED = (".block_count", ".attention.layer_norm_rms_epsilon", ".attention.layer_norm_epsilon")


def model_header(path: Path) -> dict:
    """general.type and general.architecture of GGUF `path`, after checking the hyperparameters a crafted
    file could abort llama.cpp with (found by fuzzing): block_count outside 1-512, a negative or non-finite
    norm epsilon. Reads the whole key/value section."""
    head = read_header(path, lambda k: k in ("general.type", "general.architecture") or k.endswith(_ASSERTED))
    f = head.fields
    arch = f.get("general.architecture")
    if isinstance(arch, str):
        n = f.get(f"{arch}.block_count")
        if isinstance(n, int) and not 1 <= n <= LLAMA_MAX_LAYERS:
            raise ModelError(f"{path}: {arch}.block_count is {n}; llama.cpp runs 1 to {LLAMA_MAX_LAYERS} layers: "
                             "the file is corrupt; download or convert it again")
        for key in (f"{arch}{k}" for k in _ASSERTED[1:]):
            eps = f.get(key)
            if isinstance(eps, float) and not 0 <= eps < math.inf:
                raise ModelError(f"{path}: {key} is {eps}, not a finite number >= 0: the file is corrupt; "
                                 "download or convert it again")
    return {k: f[k] for k in ("general.type", "general.architecture") if k in f}
