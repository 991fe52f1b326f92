"""Where a checkpoint tensor lives on disk, and reading it through a shared read-only mmap."""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umi_edge.errors import ConvertError

# source dtype name -> numpy storage dtype; bf16 is kept as raw uint16 and widened on read
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"),
    # integer buffers can be indexed (and then refused or skipped by name), never converted
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
_I64_MAX = (1 << 63) - 1
MAX_NDIM = 32  # numpy's own limit is 64 (32 before numpy 2)


@dataclass(frozen=True)
class TensorRef:
    """A tensor as a strided view of a byte range in a file; nothing is read until `Mmaps.array`."""

    name: str
    dtype: str                  # key of DTYPES
    shape: tuple[int, ...]
    path: Path
    offset: int                 # absolute byte offset of element 0 of the storage
    storage_numel: int          # elements available in the storage from `offset`
    storage_offset: int = 0     # in elements (pickled views)
    strides: tuple[int, ...] | None = None  # in elements; None = C-contiguous

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def check_bounds(self, file_size: int | None = None) -> None:
        """Raise unless every element of the view lies inside its storage and the storage inside the file.

        Offsets, sizes and strides must be non-negative 64-bit integers; the extent is computed exactly
        (Python integers) before numpy sees any of them. `file_size` defaults to the file's size on disk."""
        itemsize = DTYPES[self.dtype].itemsize
        strides = self.strides if self.strides is not None else contiguous_strides(self.shape)
        values = (self.offset, self.storage_numel, self.storage_offset, *self.shape, *strides)
        if (not all(type(v) is int and 0 <= v <= _I64_MAX for v in values) or len(self.shape) > MAX_NDIM
                or len(strides) != len(self.shape)):
            raise ConvertError(f"{self.path}: tensor {self.name!r} has a negative or out-of-range offset, size or "
                               f"stride; re-save the checkpoint")
        numel, span = self.numel, 1
        for d in self.shape:
            span *= max(d, 1)  # numpy refuses a shape whose non-zero sizes overflow, even when one size is 0
        if (span * itemsize > _I64_MAX or any(s * itemsize > _I64_MAX for s in strides)
                or self.offset + self.storage_numel * itemsize > _I64_MAX):
            raise ConvertError(f"{self.path}: tensor {self.name!r} is too large; re-save the checkpoint")
        last = self.storage_offset + sum((d - 1) * s for d, s in zip(self.shape, strides)) if numel else -1
        if last >= self.storage_numel:
            raise ConvertError(f"{self.path}: tensor {self.name!r} lies outside its storage; re-save the checkpoint")
        if numel > self.storage_numel:
            # only overlapping views (stride 0, expand) get here: a few stored bytes must not expand into an
            # arbitrarily large output
            raise ConvertError(f"{self.path}: tensor {self.name!r} is an overlapping view with more elements than "
                               f"its storage; re-save it contiguous")
        end = self.offset + self.storage_numel * itemsize
        size = self.path.stat().st_size if file_size is None else file_size
        if end > size:
            raise ConvertError(
                f"{self.path}: truncated ({size} bytes, tensor {self.name!r} needs {end}); download the file again"
            )


def short_repr(x, limit: int = 80) -> str:
    """A file-controlled value for a one-line message: escaped (no control characters), cut short."""
    r = ascii(x)
    return r if len(r) <= limit else r[:limit] + "..."


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


class Mmaps:
    """One read-only mmap per checkpoint file, closed together; pages are dropped after each tensor so
    the resident set stays near one tensor rather than the whole checkpoint."""

    def __init__(self) -> None:
        self._maps: dict[Path, mmap.mmap] = {}

    def _map(self, path: Path) -> mmap.mmap:
        mm = self._maps.get(path)
        if mm is None:
            try:
                with open(path, "rb") as f:
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as e:
                raise ConvertError(f"{path}: cannot map the file ({getattr(e, 'strerror', None) or e})") from None
            self._maps[path] = mm
        return mm

    def array(self, ref: TensorRef) -> np.ndarray:
        """Zero-copy view of the tensor in its storage dtype (bf16 as uint16); the view is checked against
        its storage and the mapped file first, so no array ever reaches outside them."""
        dt = DTYPES[ref.dtype]
        mm = self._map(ref.path)
        ref.check_bounds(len(mm))
        if ref.numel == 0:
            return np.zeros(ref.shape, dt)
        if ref.strides is None:
            flat = np.frombuffer(mm, dtype=dt, count=ref.numel, offset=ref.offset + ref.storage_offset * dt.itemsize)
            return flat.reshape(ref.shape)
        flat = np.frombuffer(mm, dtype=dt, count=ref.storage_numel, offset=ref.offset)
        return np.lib.stride_tricks.as_strided(
            flat[ref.storage_offset:], shape=ref.shape, strides=tuple(s * dt.itemsize for s in ref.strides),
            writeable=False,
        )

    def release(self, ref: TensorRef) -> None:
        """Drop the tensor's pages from this process's resident set (they stay in the page cache)."""
        mm = self._maps.get(ref.path)
        if mm is None or not hasattr(mm, "madvise"):
            return
        itemsize = DTYPES[ref.dtype].itemsize
        start = ref.offset - ref.offset % mmap.PAGESIZE
        end = min(len(mm), ref.offset + ref.storage_numel * itemsize)
        if end > start:
            try:
                mm.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):
                pass

    def release_rows(self, ref: TensorRef, start: int, stop: int) -> None:
        """Like `release`, for rows [start, stop) of a C-contiguous tensor (pages wholly inside only)."""
        mm = self._maps.get(ref.path)
        if mm is None or ref.strides is not None or not ref.shape or not hasattr(mm, "madvise"):
            return
        row_bytes = DTYPES[ref.dtype].itemsize * (ref.numel // ref.shape[0])
        base = ref.offset + ref.storage_offset * DTYPES[ref.dtype].itemsize
        lo = base + start * row_bytes
        lo += -lo % mmap.PAGESIZE
        hi = base + stop * row_bytes
        hi -= hi % mmap.PAGESIZE
        if hi > lo:
            try:
                mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        for mm in self._maps.values():
            try:
                mm.close()
            except BufferError:
                # a caller still holds a view; the map is freed with it
                pass
        self._maps.clear()

    def __enter__(self) -> "Mmaps":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def to_float32(a: np.ndarray, dtype: str) -> np.ndarray:
    """Widen a storage-dtype array to float32 exactly (bf16 is the top half of an f32)."""
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def file_size(path: Path) -> int:
    return os.stat(path).st_size
