"""Checkpoint discovery and tensor indexing: safetensors and PyTorch `.bin`, single or sharded with an index.

Indexing reads only headers (safetensors JSON, pickle metadata); tensor data stays on disk until written.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from umi_edge.errors import ConvertError

from .tensor_ref import _I64_MAX, DTYPES, MAX_NDIM, TensorRef, short_repr

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"

# safetensors dtype tag -> our dtype name
_ST_DTYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16", "F64": "F64"}
_MAX_HEADER = 100 * 1024 * 1024


def find_weight_files(folder: Path) -> tuple[str, list[Path], Path | None]:
    """Return (format, files, index) for the checkpoint in `folder`; format is "safetensors" or "bin".

    Like llama.cpp, safetensors wins when both are present; an index, when present, decides the shards.
    """
    for fmt, index_name, single, prefix, suffix in (
        ("safetensors", SAFETENSORS_INDEX, "model.safetensors", "model", ".safetensors"),
        ("bin", BIN_INDEX, "pytorch_model.bin", "pytorch_model", ".bin"),
    ):
        index = folder / index_name
        if index.is_file():
            files = _files_from_index(folder, index)
            return fmt, files, index
        parts = sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix)
                       and p.is_file())
        if (folder / single).is_file():
            return fmt, [folder / single], None
        if parts:
            return fmt, parts, None
    raise ConvertError(
        f"{folder}: no weights found (expected model.safetensors, sharded safetensors with "
        f"{SAFETENSORS_INDEX}, pytorch_model.bin or sharded .bin with {BIN_INDEX})"
    )


def _load_index(index: Path) -> dict[str, str]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map is not a name -> file mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConvertError(f"{index}: unreadable index ({e}); restore the file from the original checkpoint") from None
    return weight_map


def _files_from_index(folder: Path, index: Path) -> list[Path]:
    weight_map = _load_index(index)
    files = []
    for name in sorted(set(weight_map.values())):
        p = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ConvertError(f"{index}: shard name {name!r} points outside the checkpoint folder")
        if not p.is_file():
            raise ConvertError(f"{index}: shard {name!r} is missing from {folder}; download it or fix the index")
        files.append(p)
    return files


def index_tensors(folder: Path) -> tuple[str, dict[str, TensorRef], list[Path]]:
    """All tensors of the checkpoint in `folder`, in llama.cpp's order (shards sorted; within a
    safetensors shard by name, within a pickle by insertion order). Checks the index against the shards."""
    fmt, files, index = find_weight_files(folder)
    tensors: dict[str, TensorRef] = {}
    for path in files:
        refs = read_safetensors_header(path) if fmt == "safetensors" else _read_bin(path)
        for ref in refs:
            if ref.name in tensors:
                raise ConvertError(f"{path}: tensor {ref.name!r} also appears in {tensors[ref.name].path.name}")
            tensors[ref.name] = ref
    if index is not None:
        weight_map = _load_index(index)
        for name, shard in weight_map.items():
            ref = tensors.get(name)
            if ref is None:
                raise ConvertError(f"{index}: tensor {name!r} is not in shard {shard!r}; the shard is incomplete "
                                   f"or the index is stale")
            if ref.path.name != shard:
                raise ConvertError(f"{index}: tensor {name!r} is listed in {shard!r} but found in {ref.path.name!r}")
        extra = sorted(set(tensors) - set(weight_map))
        if extra:
            raise ConvertError(f"{index}: shards hold tensors the index does not list: {', '.join(extra[:5])}")
    return fmt, tensors, files


def read_safetensors_header(path: Path) -> list[TensorRef]:
    """Parse a safetensors header (8-byte little-endian length + JSON) into sorted TensorRefs. Every entry
    is checked (a known dtype, non-negative integer shape and offsets, a byte range inside the data section
    that fits the shape) before anything else is done with it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConvertError(f"{path}: truncated safetensors file ({size} bytes); download it again")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise ConvertError(f"{path}: truncated or corrupt safetensors header (needs {8 + n} bytes, file has "
                               f"{size}); download it again")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            detail = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
            raise ConvertError(f"{path}: corrupt safetensors header ({detail}); download it again") from None
    if not isinstance(header, dict):
        raise ConvertError(f"{path}: corrupt safetensors header (not a JSON object)")
    base = 8 + n
    refs = []
    for name, meta in sorted(header.items()):
        if name == "__metadata__":
            continue
        shown = short_repr(name)
        if not isinstance(meta, dict) or not {"dtype", "shape", "data_offsets"} <= meta.keys():
            raise ConvertError(f"{path}: corrupt header entry for tensor {shown}")
        dtype, shape, offsets = meta["dtype"], meta["shape"], meta["data_offsets"]
        if not isinstance(dtype, str):
            raise ConvertError(f"{path}: corrupt header entry for tensor {shown} (dtype is not a string)")
        if dtype not in _ST_DTYPES:
            raise ConvertError(f"{path}: tensor {shown} has dtype {short_repr(dtype, 20)}; only F32/F16/BF16/F64 "
                               f"checkpoints can be converted (dequantize it first)")
        if not (isinstance(shape, list) and len(shape) <= MAX_NDIM and all(_is_index(d) for d in shape)):
            raise ConvertError(f"{path}: tensor {shown} has shape {short_repr(shape, 60)}; sizes must be "
                               f"non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_index(x) for x in offsets)
                and offsets[0] <= offsets[1]):
            raise ConvertError(f"{path}: tensor {shown} has data_offsets {short_repr(offsets, 60)}; they must be two "
                               f"non-negative integers, begin <= end")
        start, end = offsets
        dt = _ST_DTYPES[dtype]
        numel = 1
        for d in shape:
            numel *= d
        if end - start != numel * DTYPES[dt].itemsize:
            raise ConvertError(f"{path}: tensor {shown} has {end - start} bytes for shape {list(shape)}")
        if base + end > size:
            raise ConvertError(f"{path}: truncated ({size} bytes, tensor {shown} ends at {base + end}); "
                               f"download the file again")
        ref = TensorRef(name=name, dtype=dt, shape=tuple(shape), path=path, offset=base + start,
                        storage_numel=numel)
        ref.check_bounds(size)
        refs.append(ref)
    return refs


def _is_index(x) -> bool:
    """A JSON integer usable as a size or offset (bools, floats, strings and negatives are not)."""
    return type(x) is int and 0 <= x <= _I64_MAX



def _read_bin(path: Path) -> list[TensorRef]:
    from .pickle_reader import read_torch_zip

    refs = read_torch_zip(path)
    for ref in refs:
        ref.check_bounds()
    return refs
