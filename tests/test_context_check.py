"""A role's n_ctx is checked against its model's training context and this machine's memory before
llama.cpp allocates anything; a huge n_batch is clamped to n_ctx (tiny random-weight GGUFs built here)."""
from __future__ import annotations

import re
import textwrap
import time

import pytest
from click.testing import CliRunner

from tiny_gguf import write_llama_gguf
from umi_edge.cli import cli
from umi_edge.engine.kv import N_CTX_MAX, KvShape, available_memory, check_context, model_shape
from umi_edge.engine.llama import LlamaBackend
from umi_edge.errors import ModelError

TOKENS = ["<s>", "</s>", "a", "b", "c", "ab"]


def tiny(path, *, n_ctx_train: int, n_layer: int = 1, n_head_kv: int = 2, n_embd: int = 64):
    write_llama_gguf(path, TOKENS, ["a b"], n_embd=n_embd, n_layer=n_layer, n_head=2, n_head_kv=n_head_kv,
                     n_ff=2 * n_embd, n_ctx=n_ctx_train, seed=0, scale=0.1, embd_scale=1.0, out_scale=0.1)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctx")
    # context_length 2^31 - 1: only the memory check can stop a huge n_ctx on "wide"
    return {"small": tiny(d / "small.gguf", n_ctx_train=256),
            "wide": tiny(d / "wide.gguf", n_ctx_train=N_CTX_MAX, n_layer=4, n_head_kv=2)}


def test_n_ctx_beyond_the_training_context(models):
    with LlamaBackend() as be:
        model = be.load_model(models["small"])
        t = time.monotonic()
        with pytest.raises(ModelError, match=r"role 'planner': n_ctx 1000000000 exceeds the 256 tokens small.gguf "
                                             r"was trained on; set n_ctx to 256 or less"):
            be.new_role(model, name="planner", n_ctx=10**9)
        assert time.monotonic() - t < 1
        assert be.new_role(model, name="ok", n_ctx=256).n_ctx == 256


def test_n_ctx_over_available_memory_fails_fast_with_the_numbers(models):
    """Before: n_ctx = 1e9 ran 48 s and took 19.6 GB before a misleading llama.cpp failure."""
    with LlamaBackend() as be:
        model = be.load_model(models["wide"])
        shape = model_shape(model)
        avail = available_memory()
        if avail is None:
            pytest.skip("available memory is unknown on this platform")
        n_ctx = min(N_CTX_MAX, 2 * avail // shape.bytes(1) + 1)
        if shape.bytes(n_ctx) <= avail:
            pytest.skip(f"this machine has more than {shape.bytes(N_CTX_MAX) >> 30} GiB available")
        t = time.monotonic()
        with pytest.raises(ModelError) as e:
            be.new_role(model, name="caller", n_ctx=n_ctx)
        assert time.monotonic() - t < 1
    msg = str(e.value)
    assert re.fullmatch(rf"role 'caller': n_ctx {n_ctx} needs a [\d.]+ GiB KV cache \(4 layers × 2 KV heads × "
                        r"32\+32 values, f16/f16\) but [\d.]+ GiB of memory is available; set n_ctx to \d+ or less",
                        msg), msg


def test_huge_n_ctx_from_the_command_line_is_one_line(models, tmp_path):
    (tmp_path / "models.toml").write_text(textwrap.dedent(f"""
        [models.small]
        path = "{models['small']}"
        [sets.s]
        model = "small"
        n_ctx = 128
        max_tokens = 16
    """))
    r = CliRunner().invoke(cli, ["run", "q", "--models", str(tmp_path / "models.toml"), "--set", "s",
                                 "--n-ctx", "1000000000"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.strip().splitlines() == [
        "Error: role 'planner': n_ctx 1000000000 exceeds the 256 tokens small.gguf was trained on; "
        "set n_ctx to 256 or less"]


def test_huge_n_batch_is_clamped_to_n_ctx(models):
    """Before: n_batch = 1e9 sized a 4 GB token buffer before llama.cpp clamped it."""
    with LlamaBackend() as be:
        model = be.load_model(models["small"])
        t = time.monotonic()
        role = be.new_role(model, name="r", n_ctx=128, n_batch=10**9)
        assert time.monotonic() - t < 2
        assert role.n_batch == 128 and len(role._tok) == 128
        g = role.generate([role.bos_id, 2, 3, 4], max_tokens=4)
        assert g.n_prompt == 4 and g.n_generated >= 1


@pytest.mark.parametrize("type_k", ["f16", "q8_0"])
def test_estimate_equals_llama_cpp_kv_size(models, capsys, monkeypatch, type_k):
    """The estimate is the size llama.cpp reports for the cache it allocates."""
    monkeypatch.setenv("UMI_EDGE_LLAMA_LOGS", "1")
    with LlamaBackend() as be:
        model = be.load_model(models["small"])
        be.new_role(model, name="r", n_ctx=256, type_k=type_k)
        shape = model_shape(model)
    logged = re.search(r"llama_kv_cache: size =\s+([\d.]+) MiB", capsys.readouterr().err)
    assert logged, "llama.cpp did not log its KV cache size"
    assert shape == KvShape(n_layer=1, n_head_kv=2, head_k=32, head_v=32, n_ctx_train=256)
    assert shape.bytes(256, type_k) / (1 << 20) == pytest.approx(float(logged.group(1)), abs=0.005)


def test_check_context_rules():
    shape = KvShape(n_layer=30, n_head_kv=3, head_k=64, head_v=64, n_ctx_train=8192)   # SmolLM2-135M
    assert shape.bytes(2048) == 45 << 20      # llama.cpp: "size = 45.00 MiB" at n_ctx 2048
    check_context("planner", "m.gguf", shape, 8192, available=1 << 30)
    with pytest.raises(ModelError, match=r"n_ctx 8192 needs a 0.2 GiB KV cache .* but 0.1 GiB of memory is "
                                         r"available; set n_ctx to 4551 or less"):
        check_context("planner", "m.gguf", shape, 8192, available=100 << 20)
    check_context("planner", "m.gguf", shape, 8192, available=100 << 20, memory=False)   # offloaded: VRAM
    with pytest.raises(ModelError, match="beyond llama.cpp's limit"):
        check_context("planner", "m.gguf", KvShape(1, 1, 1, 1, 0), 1 << 40, available=1 << 60)
