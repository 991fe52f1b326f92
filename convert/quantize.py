"""llama.cpp's own quantizer (llama_model_quantize via llama-cpp-python) for the types gguf-py cannot write."""
from __future__ import annotations

from pathlib import Path

from umi_edge.errors import ConvertError

from .precision import LLAMA_CPP


def llama_quantize(src: Path, dst: Path, outtype: str, *, nthread: int = 0) -> None:
    """Quantize the GGUF `src` into `dst` as `outtype` (a LLAMA_CPP key) with llama-quantize's defaults.
    llama.cpp's log stays quiet unless -v / UMI_EDGE_LLAMA_LOGS=1 (the runtime's single llama.cpp door)."""
    from umi_edge.engine import _native

    try:
        L = _native.lib()
    except Exception as e:  # ModelError when llama-cpp-python is missing
        raise ConvertError(f"--outtype {outtype} needs llama.cpp's quantizer: {e}") from None
    ftype = getattr(L, f"LLAMA_FTYPE_MOSTLY_{outtype.upper()}", LLAMA_CPP[outtype])
    params = L.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    _native.clear_errors()
    rc = L.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise ConvertError(f"llama.cpp could not quantize to {outtype}: {_native.last_error()}")
