"""The one door to llama.cpp's ctypes bindings: lazy import, backend init, quiet logs, GGUF header checks."""
from __future__ import annotations

import collections
import os
import struct
import sys
import threading
from pathlib import Path

from ..errors import ModelError

_lock = threading.Lock()
_lib = None
_log_cb = None          # the ctypes callback must outlive every native call that may log
_verbose = False
_errors: collections.deque[str] = collections.deque(maxlen=16)
_last_level = 0

_GGML_LOG_ERROR = 3
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
                L.llama_backend_init()
                _lib = L
    return _lib


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
        if level == _GGML_LOG_ERROR and msg.strip():
            _errors.append(msg.strip())
        if _verbose or os.environ.get("UMI_EDGE_LLAMA_LOGS") == "1":
            sys.stderr.write(msg)

    _log_cb = L.llama_log_callback(on_log)
    L.llama_log_set(_log_cb, None)


def clear_errors() -> None:
    _errors.clear()


def last_error(default: str = "no details logged") -> str:
    """The most recent llama.cpp error line (for one-line messages), and forget the rest."""
    msg = _errors[-1] if _errors else default
    _errors.clear()
    return msg


# GGUF header: just enough to tell a model from an adapter or a stray file before llama.cpp sees it.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def gguf_header(path: Path, wanted: tuple[str, ...] = ("general.type", "general.architecture")) -> dict:
    """Read the GGUF key/value section up to the `wanted` keys. Raises ModelError if it is not a GGUF."""
    found: dict = {}
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelError(f"{path} is not a GGUF file (bad magic); convert it with `umi-edge convert`")
            version, _n_tensors, n_kv = struct.unpack("<IQQ", f.read(20))
            if version < 2 or n_kv > 1_000_000:
                raise ModelError(f"{path}: unsupported or corrupt GGUF header (version {version})")

            def read(fmt):
                size = struct.calcsize(fmt)
                data = f.read(size)
                if len(data) != size:
                    raise ModelError(f"{path}: GGUF file is truncated; download or convert it again")
                return struct.unpack(fmt, data)[0]

            def read_str():
                n = read("<Q")
                if n > 1 << 24:
                    raise ModelError(f"{path}: corrupt GGUF header (string of {n} bytes)")
                return f.read(n).decode("utf-8", "replace")

            def skip(vtype):
                if vtype == _STRING:
                    f.seek(read("<Q"), 1)
                elif vtype == _ARRAY:
                    etype, n = read("<I"), read("<Q")
                    if etype in _SCALAR:
                        f.seek(struct.calcsize(_SCALAR[etype]) * n, 1)
                    else:
                        for _ in range(n):
                            skip(etype)
                elif vtype in _SCALAR:
                    read(_SCALAR[vtype])
                else:
                    raise ModelError(f"{path}: corrupt GGUF header (value type {vtype})")

            for _ in range(n_kv):
                key, vtype = read_str(), read("<I")
                if key in wanted and vtype == _STRING:
                    found[key] = read_str()
                elif key in wanted and vtype in _SCALAR:
                    found[key] = read(_SCALAR[vtype])
                else:
                    skip(vtype)
                if len(found) == len(wanted):
                    break
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror}") from None
    return found
