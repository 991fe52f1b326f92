"""PyTorch `.bin` checkpoints (torch's zip format) read without torch and without running pickled code.

The unpickler admits only the globals a plain state dict needs (tensor rebuild functions, storage types,
OrderedDict); any other global is refused before anything is called. Tensor data stays in the zip, whose
members torch stores uncompressed, and is later memory-mapped.
"""
from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

from umi_edge.errors import ConvertError

from .tensor_ref import DTYPES, TensorRef, contiguous_strides


class _StorageType:
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


class _Storage:
    """A reference to `<prefix>/data/<key>` in the archive."""

    def __init__(self, dtype: str, key: str) -> None:
        self.dtype = dtype
        self.key = key


class _PendingTensor:
    def __init__(self, storage: _Storage, storage_offset: int, size: tuple, stride: tuple) -> None:
        self.storage = storage
        self.storage_offset = storage_offset
        self.size = size
        self.stride = stride


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    if not isinstance(storage_offset, int) or not all(isinstance(x, int) for x in (*size, *stride)):
        raise pickle.UnpicklingError("tensor rebuilt with non-integer geometry")
    return _PendingTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    if not isinstance(data, _PendingTensor):
        raise pickle.UnpicklingError("parameter rebuilt from something that is not a tensor")
    return data


def _ordered_dict(*args):
    from collections import OrderedDict

    return OrderedDict(*args)


_STORAGES = {
    "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}
# (module, name) -> what the pickle gets instead; these are our own harmless functions and markers
_ALLOWED: dict[tuple[str, str], object] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    **{("torch", name): _StorageType(dt) for name, dt in _STORAGES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise ConvertError(
                f"{self._path}: refused to load: the pickle references {module}.{name}, which is not a tensor "
                f"global (only plain state dicts are accepted; re-save the checkpoint as safetensors)"
            )
        return allowed

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) < 3 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)):
            raise ConvertError(f"{self._path}: refused to load: unexpected persistent id {pid!r:.80}")
        return _Storage(pid[1].dtype, pid[2])


def _member_data_offset(path: Path, fh, info: zipfile.ZipInfo) -> int:
    if info.compress_type != zipfile.ZIP_STORED:
        raise ConvertError(f"{path}: member {info.filename} is compressed; re-save the checkpoint with torch.save "
                           f"or as safetensors")
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise ConvertError(f"{path}: corrupt zip member {info.filename}; download the file again")
    n_name, n_extra = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + n_name + n_extra


def read_torch_zip(path: Path) -> list[TensorRef]:
    """Index the tensors of a torch-zip `.bin` checkpoint in state-dict order (nothing is executed)."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ConvertError(
            f"{path}: not a zip-format PyTorch checkpoint (truncated, or saved by torch < 1.6); download it again "
            f"or re-save it as safetensors"
        ) from None
    except OSError as e:
        raise ConvertError(f"{path}: cannot read ({e.strerror or e})") from None
    with zf, open(path, "rb") as fh:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ConvertError(f"{path}: no data.pkl in the archive; not a PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        if prefix + "byteorder" in names and zf.read(prefix + "byteorder").strip() not in (b"little", b""):
            raise ConvertError(f"{path}: big-endian checkpoint; re-save it on a little-endian machine")
        try:
            with zf.open(pkl[0]) as f:
                obj = _RestrictedUnpickler(f, path).load()
        except ConvertError:
            raise
        except Exception as e:  # any malformed pickle is the file's fault, never ours to run
            detail = (str(e).strip().splitlines() or [""])[0]
            raise ConvertError(f"{path}: unreadable pickle ({type(e).__name__}: {detail}); re-save the checkpoint") \
                from None
        if not isinstance(obj, dict):
            raise ConvertError(f"{path}: the pickle holds a {type(obj).__name__}, not a state dict")
        refs = []
        infos = {i.filename: i for i in zf.infolist()}
        for name, t in obj.items():
            if not isinstance(name, str) or not isinstance(t, _PendingTensor):
                raise ConvertError(f"{path}: state dict entry {name!r} is not a tensor; only flat state dicts are "
                                   f"accepted")
            member = f"{prefix}data/{t.storage.key}"
            info = infos.get(member)
            if info is None:
                raise ConvertError(f"{path}: storage {member} of tensor {name!r} is missing; download the file again")
            itemsize = DTYPES[t.storage.dtype].itemsize
            refs.append(TensorRef(
                name=name, dtype=t.storage.dtype, shape=t.size, path=path,
                offset=_member_data_offset(path, fh, info), storage_numel=info.file_size // itemsize,
                storage_offset=t.storage_offset,
                strides=None if t.stride == contiguous_strides(t.size) else t.stride,
            ))
        return refs
