"""PyTorch `.bin` checkpoints (torch's zip format) read without torch and without running pickled code.

`data.pkl` is run by our restricted pickle machine (safe_pickle), which admits only what a plain state
dict needs. Tensor data stays in the zip, whose storage members torch stores uncompressed, and is later
memory-mapped; every view is checked against its storage (TensorRef.check_bounds) before an array is made.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

from umi_edge.errors import ConvertError

from . import safe_pickle
from .safe_pickle import PendingTensor
from .tensor_ref import DTYPES, TensorRef, contiguous_strides, short_repr

# torch writes data.pkl uncompressed, about 100 bytes per tensor; a deflated one is read up to this size
MAX_PICKLE_BYTES = 64 * 1024 * 1024


def _member_data_offset(path: Path, fh, info: zipfile.ZipInfo, size: int) -> int:
    """Where the bytes of a stored member start; the member must lie inside the file."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 or info.compress_size != info.file_size:
        raise ConvertError(f"{path}: member {info.filename!r} is compressed or encrypted; re-save the checkpoint "
                           f"with torch.save or as safetensors")
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise ConvertError(f"{path}: corrupt zip member {info.filename!r}; download the file again")
    n_name, n_extra = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + n_name + n_extra
    if start + info.file_size > size:
        raise ConvertError(f"{path}: truncated ({size} bytes, member {info.filename!r} needs "
                           f"{start + info.file_size}); download the file again")
    return start


def _read_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes, decompressed, refused past `limit` (the declared size is not trusted)."""
    if info.file_size > limit:
        raise ConvertError(f"{path}: {info.filename!r} would expand to {info.file_size} bytes (limit {limit}); "
                           f"not a state dict")
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)
    except Exception as e:  # zipfile, zlib, bz2 and lzma errors alike: the member is corrupt
        raise ConvertError(f"{path}: corrupt zip member {info.filename!r} ({type(e).__name__}); download the "
                           f"file again") from None
    if len(data) > limit:
        raise ConvertError(f"{path}: {info.filename!r} expands past {limit} bytes; not a state dict")
    return data


def read_torch_zip(path: Path) -> list[TensorRef]:
    """Index the tensors of a torch-zip `.bin` checkpoint in state-dict order (nothing is executed)."""
    try:
        zf = zipfile.ZipFile(path)
    except OSError as e:
        raise ConvertError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception:  # BadZipFile and whatever a crafted central directory makes zipfile raise
        raise ConvertError(
            f"{path}: not a zip-format PyTorch checkpoint (truncated, or saved by torch < 1.6); download it again "
            f"or re-save it as safetensors"
        ) from None
    with zf, open(path, "rb") as fh:
        size = fh.seek(0, 2)
        infos = {i.filename: i for i in zf.infolist()}
        pkl = [n for n in infos if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ConvertError(f"{path}: no data.pkl in the archive; not a PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        order = infos.get(prefix + "byteorder")
        if order is not None and _read_member(path, zf, order, 64).strip() not in (b"little", b""):
            raise ConvertError(f"{path}: big-endian checkpoint; re-save it on a little-endian machine")
        obj = safe_pickle.load(_read_member(path, zf, infos[pkl[0]], MAX_PICKLE_BYTES), str(path))
        if not isinstance(obj, dict):
            raise ConvertError(f"{path}: the pickle holds a {type(obj).__name__}, not a state dict")
        refs = []
        offsets: dict[str, int] = {}
        for name, t in obj.items():
            if not isinstance(name, str) or not isinstance(t, PendingTensor):
                raise ConvertError(f"{path}: state dict entry {short_repr(name)} is not a tensor; only flat state "
                                   f"dicts are accepted")
            member = f"{prefix}data/{t.storage.key}"
            info = infos.get(member)
            if info is None:
                raise ConvertError(f"{path}: storage {short_repr(member)} of tensor {short_repr(name)} is missing; "
                                   f"download the file again")
            if member not in offsets:
                offsets[member] = _member_data_offset(path, fh, info, size)
            itemsize = DTYPES[t.storage.dtype].itemsize
            refs.append(TensorRef(
                name=name, dtype=t.storage.dtype, shape=t.size, path=path,
                offset=offsets[member], storage_numel=info.file_size // itemsize,
                storage_offset=t.storage_offset,
                strides=None if t.stride == contiguous_strides(t.size) else t.stride,
            ))
        return refs
