"""The baseline users would reach for without umi-edge: a stock `llama_cpp.Llama` per model."""
from __future__ import annotations


def stock_llama(path, *, n_ctx: int, threads: tuple[int, int] | None = None, n_batch: int = 512,
                lora_path=None, n_gpu_layers: int = 0, use_mmap: bool = True):
    """`llama_cpp.Llama` with its own defaults, except the CPU buffer-type choice our engine makes too
    (on AMX CPUs llama.cpp's repack path crashed for Q4_1 here; see engine.llama._extra_bufts_default),
    so both sides run the same kernels. `threads`: (decode, prompt batch), as the engine uses them;
    `lora_path`: the role's LoRA adapter, so both sides pay for it."""
    import llama_cpp
    import llama_cpp.llama_cpp as L

    from ..engine._native import lib
    from ..engine.llama import _extra_bufts_default

    lib()   # our quiet logger and backend init, as in the engine
    orig = L.llama_model_default_params

    def params():
        p = orig()
        p.use_extra_bufts = _extra_bufts_default()
        return p

    L.llama_model_default_params = params   # Llama reads its model defaults from this module
    try:
        decode, batch = threads or (None, None)
        return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=decode, n_threads_batch=batch,
                               n_batch=n_batch, verbose=False, lora_path=None if lora_path is None else str(lora_path),
                               n_gpu_layers=n_gpu_layers, use_mmap=use_mmap)
    finally:
        L.llama_model_default_params = orig
