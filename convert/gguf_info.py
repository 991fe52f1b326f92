"""`inspect_gguf()`: what a GGUF file holds (architecture, size, tensor types, parameters, umi.* keys)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from umi_edge.errors import ModelError


def _value(field):
    """A reader field as a plain Python value (strings decoded, arrays as lists)."""
    import gguf

    types = field.types
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        if len(types) > 1 and types[1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return field.parts[field.data[0]].tolist()[0]


def inspect_gguf(path) -> dict:
    """Summary of a GGUF file; ModelError if it is missing or not a GGUF."""
    import gguf

    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"{p}: no such file")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelError(f"{p}: not a GGUF file (magic {magic!r}); pass a .gguf produced by umi-edge convert or llama.cpp")
    try:
        reader = gguf.GGUFReader(p, "r")
    except Exception as e:  # a damaged file surfaces as any of several parse errors
        raise ModelError(f"{p}: corrupt GGUF ({type(e).__name__}: {e})") from None
    fields = reader.fields
    arch = _value(fields["general.architecture"]) if "general.architecture" in fields else None
    types = Counter(t.tensor_type.name for t in reader.tensors)
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    ftype = _value(fields["general.file_type"]) if "general.file_type" in fields else None
    return {
        "path": str(p),
        "architecture": arch,
        "name": _value(fields["general.name"]) if "general.name" in fields else None,
        "file_type": gguf.LlamaFileType(ftype).name if ftype is not None and ftype in gguf.LlamaFileType._value2member_map_ else ftype,
        "size_bytes": p.stat().st_size,
        "tensors": len(reader.tensors),
        "tensor_types": dict(sorted(types.items())),
        "parameters": n_params,
        "umi": {k: _value(v) for k, v in fields.items() if k.startswith("umi.")},
    }
