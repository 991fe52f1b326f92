"""The one door to llama.cpp's ctypes bindings: lazy import, backend init, quiet logs, GGUF header checks."""
from __future__ import annotations

import os
import sys
import threading

from ..errors import ModelError

_lock = threading.Lock()
_lib = None
_log_cb = None          # the ctypes callback must outlive every native call that may log
_verbose = False
_errors: list[str] = []   # error lines since clear_errors(); the first few kept, as the first is the cause
_last_level = 0

_GGML_LOG_ERROR = 4      # ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT
_GGML_LOG_CONT = 5


def preload() -> None:
    """Load llama.cpp's shared libraries now. Import order matters on CUDA builds: with numpy's bundled
    libraries loaded first, llama_model_load_from_file segfaulted (H200 box, CUDA 13, numpy 2.5); loaded
    first, llama.cpp ran. The engine calls this before importing numpy; an app that imports numpy first
    can `import llama_cpp` (or umi_edge.engine.llama) before it."""
    try:
        import llama_cpp.llama_cpp  # noqa: F401
    except ImportError:   # reported with its fix by lib()
        pass


def lib():
    """llama_cpp.llama_cpp, imported, logger installed and backend initialised on first use."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                try:
                    import llama_cpp.llama_cpp as L
                except ImportError as e:  # pragma: no cover - the package depends on it
                    raise ModelError(
                        f"llama-cpp-python is not importable ({e}); install it: pip install llama-cpp-python==0.3.36"
                    ) from None
                _install_logger(L)
                _fix_mmap_threshold()
                L.llama_backend_init()
                _lib = L
    return _lib


def _fix_mmap_threshold() -> None:
    """Keep glibc's mmap threshold at its default 128 KiB instead of letting it grow.

    llama.cpp frees and reallocates its graph buffers (several MB) each time a context's adapters change, which
    a team does at every role switch. glibc raises its threshold to the size of a freed mmap chunk, so from the
    first switch on those buffers come from the heap, whose freed space stays resident: 5-6 MB more RSS in the
    default set's bench workload. A fixed threshold returns them to the system. Left alone where the user set
    MALLOC_MMAP_THRESHOLD_ or the C library is not glibc."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(ctypes.c_int(-3), ctypes.c_int(128 * 1024))   # M_MMAP_THRESHOLD


def set_verbose(verbose: bool) -> None:
    """llama.cpp logs go to stderr only when asked (flag or UMI_EDGE_LLAMA_LOGS=1); errors are always kept."""
    global _verbose
    _verbose = verbose


def _install_logger(L) -> None:
    global _log_cb

    def on_log(level: int, text: bytes, _user) -> None:
        global _last_level
        msg = text.decode("utf-8", "replace") if text else ""
        if level == _GGML_LOG_CONT:
            level = _last_level
        _last_level = level
        if level == _GGML_LOG_ERROR and msg.strip() and len(_errors) < 16:
            _errors.append(msg.strip())
        if _verbose or os.environ.get("UMI_EDGE_LLAMA_LOGS") == "1":
            sys.stderr.write(msg)

    _log_cb = L.llama_log_callback(on_log)
    L.llama_log_set(_log_cb, None)


def detokenize(vocab, ids, *, special: bool = False) -> str:
    """Ids → text through llama_detokenize (`special`: spell special tokens out instead of dropping them)."""
    if not ids:
        return ""
    import ctypes

    L = lib()
    arr = (L.llama_token * len(ids))(*ids)
    size = max(64, 8 * len(ids))
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        n = L.llama_detokenize(vocab, arr, len(ids), buf, size, False, special)
        if n >= 0:
            return buf.raw[:n].decode("utf-8", "replace")
        size = -n + 1
    raise RuntimeError("llama_detokenize kept asking for a larger buffer")


def clear_errors() -> None:
    _errors.clear()


def last_error(default: str = "no details logged") -> str:
    """The first llama.cpp error line since clear_errors() (for one-line messages), and forget them all: the
    first names the cause; later ones are its consequences ("llama_model_load_from_file_impl: failed to
    load model")."""
    msg = _errors[0] if _errors else default
    _errors.clear()
    return msg


# GGUF header: just enough to tell a model from an adapter or a stray file before llama.cpp sees it.
from .gguf_header import gguf_header  # noqa: E402,F401  (its home; re-exported for callers)
