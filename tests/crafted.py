"""Hand-assembled checkpoint files for the hardening and fuzz tests: torch-zip `.bin` pickles (in the
layout torch.save writes, opcode by opcode, so a test can put any value anywhere) and safetensors files
with any header. No torch needed."""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np


class PickleAsm:
    """A protocol-2 pickle assembled from opcodes."""

    def __init__(self) -> None:
        self.b = bytearray(b"\x80\x02")

    def raw(self, data: bytes) -> "PickleAsm":
        self.b += data
        return self

    def glob(self, module: str, name: str) -> "PickleAsm":
        return self.raw(b"c" + f"{module}\n{name}\n".encode())

    def str(self, s: str) -> "PickleAsm":
        e = s.encode()
        return self.raw(b"X" + struct.pack("<I", len(e)) + e)

    def int(self, v: int) -> "PickleAsm":
        n = max(1, (v.bit_length() + 8) // 8)
        return self.raw(b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True))

    def ints_tuple(self, values) -> "PickleAsm":
        self.mark()
        for v in values:
            self.int(v)
        return self.raw(b"t")

    def mark(self) -> "PickleAsm":
        return self.raw(b"(")

    def reduce(self) -> "PickleAsm":
        return self.raw(b"R")

    def storage(self, storage_type: str, key: str, numel: int) -> "PickleAsm":
        """A persistent storage reference, as torch writes it."""
        self.mark().str("storage").glob("torch", storage_type).str(key).str("cpu").int(numel).raw(b"t")
        return self.raw(b"Q")  # BINPERSID

    def tensor(self, storage_type: str, key: str, numel: int, offset: int, size, stride) -> "PickleAsm":
        self.glob("torch._utils", "_rebuild_tensor_v2").mark()
        self.storage(storage_type, key, numel).int(offset).ints_tuple(size).ints_tuple(stride)
        self.raw(b"\x89")  # requires_grad=False
        self.glob("collections", "OrderedDict").raw(b")").reduce()  # backward hooks
        return self.raw(b"t").reduce()

    def stop(self) -> bytes:
        return bytes(self.b + b".")


def state_dict_pickle(tensors: dict[str, tuple]) -> bytes:
    """{name: (storage_type, key, storage_numel, offset, size, stride)} as torch.save's data.pkl."""
    p = PickleAsm().raw(b"}").mark()
    for name, spec in tensors.items():
        p.str(name).tensor(*spec)
    return p.raw(b"u").stop()


def write_torch_zip(path: Path, pkl: bytes, storages: dict[str, bytes], *, pkl_compression=zipfile.ZIP_STORED,
                    prefix: str = "archive") -> Path:
    """A torch-zip checkpoint: `<prefix>/data.pkl` plus one stored member per storage key."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo(f"{prefix}/data.pkl"), pkl, compress_type=pkl_compression)
        z.writestr(f"{prefix}/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"{prefix}/data/{key}", data)
        z.writestr(f"{prefix}/version", "3\n")
    return path


def write_safetensors(path: Path, header: dict | bytes, data: bytes, *, length: int | None = None) -> Path:
    """A safetensors file with the given header (a dict is JSON-encoded, NaN/Infinity allowed) and data."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h) if length is None else length) + h + data)
    return path


def f32(values) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()
