"""Turn one memory-mapped source tensor into its GGUF bytes, a slab of rows at a time.

Peak memory per tensor is its encoded output plus one slab's float32 temporaries, never the whole
checkpoint. Every type is encoded by the same gguf.quants functions llama.cpp's converter calls, on the
same float32 (or float16) input, so the bytes are identical; quantization blocks never straddle rows,
so slabs change nothing.
"""
from __future__ import annotations

import numpy as np

from .tensor_ref import to_float32

SLAB_BYTES = 16 * 1024 * 1024  # float32 bytes per slab


def encoded_nbytes(shape: tuple[int, ...], qtype) -> int:
    import gguf

    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = 1
    for d in shape:
        n *= d
    return n // block * type_size


def encode(src: np.ndarray, src_dtype: str, qtype, perm: np.ndarray | None = None, release=None) -> np.ndarray:
    """`src` (storage dtype, rows permuted by `perm` when given) encoded as `qtype`: a float array for
    F32/F16, raw uint8 bytes for BF16 and block types. `release(start, stop)` is told when source rows
    are done with, so their mapped pages can be dropped before the next slab."""
    import gguf

    Q = gguf.GGMLQuantizationType
    shape = src.shape
    if src.ndim <= 1:
        data = src if perm is None else src[perm]
        return _encode_rows(np.ascontiguousarray(data).reshape(1, -1), src_dtype, qtype).reshape(-1)

    rows = src.reshape(shape[0], -1) if src.flags.c_contiguous else src
    if perm is None and src.flags.c_contiguous and _is_passthrough(src_dtype, qtype):
        # same type in and out: the mapped bytes are written as they are
        return src
    row_len = int(np.prod(shape[1:]))
    n_rows = shape[0]
    out_row_bytes = encoded_nbytes((row_len,), qtype)
    out = np.empty((n_rows, out_row_bytes), dtype=np.uint8)
    step = max(1, SLAB_BYTES // max(1, row_len * 4))
    for start in range(0, n_rows, step):
        idx = slice(start, min(n_rows, start + step))
        slab = rows[idx] if perm is None else rows[perm[idx]]
        slab = np.ascontiguousarray(slab).reshape(-1, row_len)
        out[idx] = _encode_rows(slab, src_dtype, qtype).reshape(slab.shape[0], -1).view(np.uint8)
        del slab
        if release is not None and perm is None:
            release(idx.start, idx.stop)
    if qtype == Q.F32:
        return out.view(np.float32).reshape(shape)
    if qtype == Q.F16:
        return out.view(np.float16).reshape(shape)
    return out.reshape(-1)


def _is_passthrough(src_dtype: str, qtype) -> bool:
    import gguf

    Q = gguf.GGMLQuantizationType
    return (src_dtype, qtype) in (("F32", Q.F32), ("F16", Q.F16))


def _encode_rows(rows: np.ndarray, src_dtype: str, qtype) -> np.ndarray:
    import gguf

    Q = gguf.GGMLQuantizationType
    if qtype == Q.F16 and src_dtype == "F16":
        return rows
    if qtype == Q.BF16 and src_dtype == "BF16" and not _has_nan_bf16(rows):
        # bf16 -> f32 -> bf16 is the identity except for NaN payloads, which the encoder quiets
        return rows.view(np.uint8)
    # llama.cpp hands float16 tensors to the encoders as float16 and everything else as float32
    data = rows if src_dtype == "F16" else to_float32(rows, src_dtype)
    if qtype == Q.F32:
        return data.astype(np.float32, copy=False)
    if qtype == Q.F16:
        return data.astype(np.float16, copy=False)
    return gguf.quants.quantize(data, qtype)


def _has_nan_bf16(rows: np.ndarray) -> bool:
    return bool(((rows & 0x7FFF) > 0x7F80).any())
