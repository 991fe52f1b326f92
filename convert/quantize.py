"""llama.cpp's own quantizer (llama_model_quantize via llama-cpp-python) for the types gguf-py cannot write."""
from __future__ import annotations

import os
from pathlib import Path

from umi_edge.errors import ConvertError

from .precision import LLAMA_CPP


def llama_quantize(src: Path, dst: Path, outtype: str, *, nthread: int = 0) -> None:
    """Quantize the GGUF `src` into `dst` as `outtype` (a LLAMA_CPP key) with llama-quantize's defaults."""
    try:
        import llama_cpp
        from llama_cpp import _logger
    except ImportError:
        raise ConvertError(f"--outtype {outtype} needs llama-cpp-python (a core dependency); reinstall umi-edge") \
            from None
    ftype = LLAMA_CPP[outtype]
    named = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{outtype.upper()}", ftype)
    if named != ftype:  # the bundled llama.cpp renumbered its enum: trust it over our table
        ftype = named
    _logger.set_verbose(os.environ.get("UMI_EDGE_LLAMA_LOGS") == "1")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise ConvertError(f"llama.cpp could not quantize to {outtype} (code {rc}); run with -v for its log")
