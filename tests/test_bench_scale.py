"""`umi-edge bench --scale`: the shape-exact random GGUF writer and the per-layout scenario, on a tiny shape
(the 7B file is 3.5 GiB: built only by the bench itself). No figure is asserted beyond being measured."""
from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")
gguf = pytest.importorskip("gguf")

from umi_edge.bench.scale import LAYOUTS, estimate, run_scale, scale_table  # noqa: E402
from umi_edge.bench.shapes import SHAPES, Shape, cached_files  # noqa: E402

TINY = Shape("tiny-shape", n_embd=128, n_layer=2, n_head=4, n_head_kv=4, n_ff=256, n_vocab=600, n_ctx_train=4096)


def test_the_7b_shape_is_llama_2_7b():
    s = SHAPES["7b"]
    assert (s.n_embd, s.n_layer, s.n_head, s.n_ff, s.n_vocab) == (4096, 32, 32, 11008, 32000)
    n_params = sum(r * c for _, r, c in s.matrices()) + s.n_embd * len(s.norms())
    assert 6.73e9 < n_params < 6.75e9                                   # Llama-2-7B: 6.738B parameters
    assert s.kv_bytes(4096) == 2 << 30                                  # f16 KV at n_ctx 4096: 2 GiB
    assert SHAPES["13b"].kv_bytes(4096) == 3200 << 20


def test_written_files_match_the_shape_and_run(tmp_path):
    from umi_edge.engine.llama import LlamaBackend

    np = pytest.importorskip("numpy")
    files = cached_files(TINY, tmp_path)
    r = gguf.GGUFReader(str(files["model"]))
    got = {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape)) for t in r.tensors}
    for name, rows, cols in TINY.matrices():
        assert got[name] == ("Q4_0", (cols, rows))
    assert all(got[n] == ("F32", (TINY.n_embd,)) for n in TINY.norms())
    assert files["model"].stat().st_size >= TINY.weight_bytes()
    assert len(r.fields["tokenizer.ggml.tokens"].contents()) == TINY.n_vocab
    with LlamaBackend() as be:
        model = be.load_model(files["model"])
        role = be.new_role(model, name="p", n_ctx=256, adapter=be.load_adapter(model, files["planner"]))
        g = role.generate([model.bos_id] + role.tokenize("the tool docs say"), max_tokens=4)
        assert g.n_generated == 4 and np.isfinite(role.last_logits()).all()
    mtime = files["model"].stat().st_mtime_ns
    assert cached_files(TINY, tmp_path)["model"].stat().st_mtime_ns == mtime      # reused, not rewritten


def test_every_layout_is_measured_in_its_own_process(tmp_path):
    report = run_scale(TINY, root=tmp_path, n_ctx=512, prompt_tokens=8, decode_tokens=3)
    rows = report["layouts"]
    assert list(rows) == list(LAYOUTS)
    for layout, row in rows.items():
        assert row["measured"] and row["peak_rss_mb"] > 0 and row["prompt_tok_s"] > 0, layout
    assert rows["contexts"]["contexts"] == 2 and rows["pool"]["contexts"] == 1
    assert rows["published"]["instances"] == 3 and rows["single_read"]["instances"] == 1
    assert report["estimate_13b"]["pool_vs_single"] > 0
    assert "13B (paper estimate" in scale_table(report)


def test_a_layout_that_does_not_fit_is_estimated_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr("umi_edge.engine.kv.available_memory", lambda: 1 << 20)
    report = run_scale(TINY, root=tmp_path, n_ctx=512, layouts=("single", "pool"))
    for row in report["layouts"].values():
        assert row["measured"] is False and "available" in row["why"] and row["estimate_rss_mb"] > 0
        assert row["rss_vs_single_is_estimate"]
    s7 = SHAPES["7b"]
    zero = {"llama": 0, "ctx": 0, "process": 0}
    assert estimate(s7, "published", 4096, zero, repack=False)["rss"] == 3 * (s7.weight_bytes() + s7.kv_bytes(4096))
    # a repacked model, mmapped, holds its weights twice; read (umi-edge's choice then), once
    assert (estimate(s7, "single", 4096, zero, repack=True)["rss"]
            == estimate(s7, "single_read", 4096, zero, repack=True)["rss"] + s7.weight_bytes())


def test_a_model_whose_weights_are_repacked_is_read_not_mapped(tmp_path, monkeypatch):
    """llama.cpp's CPU backend repacks q4_0 (and q4_K, q8_0, ...) matrices into a copy of its own; an mmapped
    file would keep its pages resident beside that copy, so such a model is read instead. F32 stays mapped."""
    import os

    from umi_edge.engine.llama import LlamaBackend, _repacked
    from test_engine import _mapped_bytes, write_tiny_llama

    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc/self/maps")
    q4 = cached_files(TINY, tmp_path)["model"]
    f32 = tmp_path / "f32.gguf"
    write_tiny_llama(f32)
    assert _repacked(q4) and not _repacked(f32)
    for extra, mapped in (("1", False), ("0", True)):
        monkeypatch.setenv("UMI_EDGE_EXTRA_BUFTS", extra)
        with LlamaBackend() as be:
            be.load_model(q4)
            be.load_model(f32)
            assert (_mapped_bytes(q4) > 0) is mapped, extra
            assert _mapped_bytes(f32) > 0
