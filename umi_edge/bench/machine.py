"""What the bench ran on: cores, threads, llama.cpp build features, and a memory read-bandwidth probe."""
from __future__ import annotations

import os
import platform
import time


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def thread_counts(threads: int | None) -> tuple[int, int]:
    """(decode threads, prompt-batch threads) the engine uses for `threads` (None: its own defaults)."""
    if threads:
        return threads, threads
    from ..engine.llama import _default_threads

    return _default_threads()


def read_bandwidth(mb: int = 512, *, threads: int = 1, repeats: int = 5) -> dict:
    """Read bandwidth (GB/s) of summing an `mb` MB array, one thread and `threads` threads; best of `repeats`.

    The best run is the one least disturbed by other processes, so it is the fairest ceiling.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    a = np.ones(max(mb, 1) * (1 << 20) // 8, dtype=np.int64)   # ones, not empty: pages must be resident
    a.sum()                                                     # first touch outside the timed runs

    def best(fn) -> float:
        top = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            top = max(top, a.nbytes / (time.perf_counter() - t0) / 1e9)
        return top

    one = best(a.sum)
    many = one
    if threads > 1:
        parts = np.array_split(a, threads)
        with ThreadPoolExecutor(threads) as pool:
            many = best(lambda: list(pool.map(np.sum, parts)))
    return {"array_mb": mb, "one_thread_gb_s": round(one, 2), "threads": threads,
            "threaded_gb_s": round(many, 2), "gb_s": round(max(one, many), 2)}


def machine_info(threads: int | None) -> dict:
    """Cores, the thread counts used, the CPU, Python and llama.cpp versions and llama.cpp's system info."""
    from importlib import metadata

    from ..engine import _native

    L = _native.lib()
    decode, batch = thread_counts(threads)
    info = L.llama_print_system_info()
    return {
        "cores": os.cpu_count() or 1,
        "threads": decode,
        "threads_batch": batch,
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": metadata.version("llama_cpp_python"),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "llama_system_info": (info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)).strip(),
    }
