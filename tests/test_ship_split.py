"""recipes/glpft/ship.py's split: a whole role adapter (stage 1 + stage 2 concatenated by train.combine) becomes
its stage-2 half, which stacked on the trunk adapter is the same LoRA; anything else is refused."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes" / "glpft"))
ship = pytest.importorskip("ship")


def _write(path, tensors: dict, alpha: float) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_name("Planner")
    w.add_float32("adapter.lora.alpha", alpha)
    for name, array in tensors.items():
        w.add_tensor(name, array.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _adapters(tmp_path, r1=4, r2=4, n=32, layers=2, seed=0):
    """trunk (rank r1, alpha 2·r1: scale 2) and the whole role adapter train.combine would export from it and a
    stage-2 LoRA of rank r2 (scale 2): A = [A1; A2], B = [2·B1, 2·B2], alpha = rank (scale 1)."""
    rng = np.random.default_rng(seed)
    trunk, stage2, whole = {}, {}, {}
    for i in range(layers):
        key = f"blk.{i}.attn_q.weight"
        a1, a2 = rng.standard_normal((r1, n)) * 0.1, rng.standard_normal((r2, n)) * 0.1
        b1, b2 = rng.standard_normal((n, r1)) * 0.1, rng.standard_normal((n, r2)) * 0.1
        trunk |= {f"{key}.lora_a": a1, f"{key}.lora_b": b1}
        stage2 |= {f"{key}.lora_a": a2, f"{key}.lora_b": 2 * b2}
        whole |= {f"{key}.lora_a": np.concatenate([a1, a2]), f"{key}.lora_b": np.concatenate([2 * b1, 2 * b2], 1)}
    _write(tmp_path / "trunk.gguf", trunk, alpha=2.0 * r1)
    _write(tmp_path / "planner.gguf", whole, alpha=float(r1 + r2))
    return stage2


def _read(path):
    r = gguf.GGUFReader(str(path))
    return {t.name: np.array(t.data, dtype=np.float32) for t in r.tensors}, float(r.get_field("adapter.lora.alpha").contents())


def test_split_keeps_the_stage2_half_at_scale_one(tmp_path):
    stage2 = _adapters(tmp_path, r1=4, r2=6)
    info = ship.split_stage2(tmp_path / "planner.gguf", tmp_path / "trunk.gguf", tmp_path / "half.gguf")
    assert (info["rank"], info["trunk_rank"]) == (6, 4)
    half, alpha = _read(tmp_path / "half.gguf")
    assert alpha == 6.0 and sorted(half) == sorted(stage2)
    for name, want in stage2.items():
        np.testing.assert_allclose(half[name], want.astype(np.float16).astype(np.float32), rtol=0, atol=0)
    # stacked on the trunk (its scale 2 times B1, the half's scale 1 times its B) = the whole at scale 1
    trunk, t_alpha = _read(tmp_path / "trunk.gguf")
    whole, w_alpha = _read(tmp_path / "planner.gguf")
    for key in {n.rsplit(".", 1)[0] for n in whole}:
        a, b = f"{key}.lora_a", f"{key}.lora_b"
        stacked = (t_alpha / 4) * trunk[b] @ trunk[a] + (alpha / 6) * half[b] @ half[a]
        np.testing.assert_allclose(stacked, (w_alpha / 10) * whole[b] @ whole[a], atol=1e-5)


def test_split_refuses_an_adapter_that_does_not_start_with_the_trunk(tmp_path):
    _adapters(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _adapters(other, seed=1)
    with pytest.raises(ship.train.RecipeError, match="does not start with the trunk"):
        ship.split_stage2(tmp_path / "planner.gguf", tmp_path / "other" / "trunk.gguf", tmp_path / "half.gguf")
    assert not (tmp_path / "half.gguf").exists()


def test_split_shipped_rewrites_in_place_and_refuses_a_second_time(tmp_path):
    _adapters(tmp_path, seed=3)
    for role in ("caller", "summarizer"):
        (tmp_path / f"{role}.gguf").write_bytes((tmp_path / "planner.gguf").read_bytes())
    out = ship.split_shipped(tmp_path)
    assert sorted(out) == ["caller", "planner", "summarizer"] and all(v["rank"] == 4 for v in out.values())
    before = (tmp_path / "planner.gguf").read_bytes()
    with pytest.raises(ship.train.RecipeError):      # already a half: not whole any more, nothing changed
        ship.split_shipped(tmp_path)
    assert (tmp_path / "planner.gguf").read_bytes() == before
    assert not list(tmp_path.glob("*.part"))
