"""A context's KV-cache size, and the check of a role's n_ctx against its model and this machine's memory,
made before llama.cpp allocates anything (n_ctx = 10^9 used to run 48 s and take 19.6 GB before failing)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError

BYTES_PER_VALUE = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32}   # q8_0: 32 int8 values + one f16 scale
N_CTX_MAX = (1 << 31) - 1     # llama.cpp keeps positions in int32


@dataclass(frozen=True)
class KvShape:
    """What sizes one context's K and V caches: per token, n_layer × n_head_kv × (head_k + head_v) values."""

    n_layer: int
    n_head_kv: int
    head_k: int
    head_v: int
    n_ctx_train: int          # 0 when the GGUF does not say

    def bytes(self, n_ctx: int, type_k: str = "f16", type_v: str = "f16") -> int:
        per_token = self.n_layer * self.n_head_kv * (self.head_k * BYTES_PER_VALUE[type_k]
                                                     + self.head_v * BYTES_PER_VALUE[type_v])
        return int(n_ctx * per_token)


def model_shape(model) -> KvShape:
    """The KvShape of a loaded SharedModel (llama.cpp's own hyperparameters)."""
    from . import _native

    L = _native.lib()
    arch = model._meta("general.architecture")
    head_v = model._meta_int(f"{arch}.attention.value_length") or model.head_dim_k
    return KvShape(n_layer=L.llama_model_n_layer(model.ptr), n_head_kv=L.llama_model_n_head_kv(model.ptr),
                   head_k=model.head_dim_k, head_v=head_v, n_ctx_train=L.llama_model_n_ctx_train(model.ptr))


def available_memory() -> int | None:
    """Bytes this process could still get: MemAvailable, lowered by a cgroup v2 limit; None if unknown."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(min(found), 0) if found else None


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def check_context(role: str, path, shape: KvShape, n_ctx: int, *, type_k: str = "f16", type_v: str = "f16",
                  available: int | None = None, memory: bool = True) -> None:
    """ModelError, with the numbers, when `n_ctx` exceeds the model's training context or (with `memory`) its
    KV cache would not fit in the memory available (`available` bytes; default: measured now, skipped if
    unknown). Offloaded models keep their KV cache in GPU memory: the caller passes memory=False."""
    name = Path(path).name
    if n_ctx > N_CTX_MAX:
        raise ModelError(f"role {role!r}: n_ctx {n_ctx} is beyond llama.cpp's limit ({N_CTX_MAX})")
    if shape.n_ctx_train and n_ctx > shape.n_ctx_train:
        raise ModelError(f"role {role!r}: n_ctx {n_ctx} exceeds the {shape.n_ctx_train} tokens {name} was trained "
                         f"on; set n_ctx to {shape.n_ctx_train} or less")
    if not memory:
        return
    need = shape.bytes(n_ctx, type_k, type_v)
    available = available_memory() if available is None else available
    if available is not None and need > available:
        fits = int(available / max(shape.bytes(1, type_k, type_v), 1))
        raise ModelError(f"role {role!r}: n_ctx {n_ctx} needs a {_gib(need)} KV cache ({shape.n_layer} layers × "
                         f"{shape.n_head_kv} KV heads × {shape.head_k}+{shape.head_v} values, {type_k}/{type_v}) "
                         f"but {_gib(available)} of memory is available; set n_ctx to {fits} or less")
