"""`inspect_gguf()`: what a GGUF file holds (architecture, size, tensor types, parameters, umi.* keys).

Read with umi_edge's bounded header reader (every count and length checked against the file size), not
gguf.GGUFReader, which trusts the counts it reads: a 119-byte file claiming 2^63 array values hung it."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from umi_edge.engine.gguf_header import read_header
from umi_edge.errors import ModelError

_SHOWN = ("general.architecture", "general.name", "general.file_type")


def _wanted(key: str) -> bool:
    return key in _SHOWN or key.startswith("umi.")


def inspect_gguf(path) -> dict:
    """Summary of a GGUF file; ModelError if it is missing, not a GGUF, or its header or tensor table is
    damaged (a tensor whose data lies past the end of the file names the truncation)."""
    import gguf

    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"{p}: no such file")
    head = read_header(p, _wanted, tensors=True)
    types: Counter[str] = Counter()
    n_params = 0
    for t in head.tensors:
        try:
            qtype = gguf.GGMLQuantizationType(t.type)
        except ValueError:
            raise ModelError(f"{p}: tensor {t.name!r} has unknown type {t.type}; the file is corrupt or from a "
                             "newer llama.cpp") from None
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        n = t.n_elements
        if t.shape and t.shape[0] % block:
            raise ModelError(f"{p}: tensor {t.name!r} ({qtype.name}) has a row of {t.shape[0]} values, not a "
                             f"multiple of its block size {block}; the file is corrupt")
        end = head.data_offset + t.offset + n // block * type_size
        if t.offset % head.alignment or end > head.size:
            why = (f"its data ends at byte {end} but the file has {head.size}: the file is truncated"
                   if end > head.size else f"its offset {t.offset} is not aligned to {head.alignment}")
            raise ModelError(f"{p}: tensor {t.name!r}: {why}; download or convert it again")
        types[qtype.name] += 1
        n_params += n
    f = head.fields
    ftype = f.get("general.file_type")
    if isinstance(ftype, int) and ftype in gguf.LlamaFileType._value2member_map_:
        ftype = gguf.LlamaFileType(ftype).name
    return {
        "path": str(p),
        "architecture": f.get("general.architecture"),
        "name": f.get("general.name"),
        "file_type": ftype if ftype is None or isinstance(ftype, (int, str)) else str(ftype),
        "size_bytes": head.size,
        "tensors": len(head.tensors),
        "tensor_types": dict(sorted(types.items())),
        "parameters": n_params,
        "umi": {k: v if isinstance(v, (int, float, str, list)) else str(v) for k, v in f.items()
                if k.startswith("umi.")},
    }
