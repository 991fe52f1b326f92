"""`umi-edge convert ROLE --delta-from BASE`: a "full fine-tune" built here (base + a known low-rank delta per
weight matrix + small noise, one norm changed) comes back as a GGUF LoRA whose ranks are the delta's, which
llama.cpp applies natively, and whose agreement with the full role is measured and high."""
from __future__ import annotations

import json
import shutil

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("torch")
pytest.importorskip("llama_cpp")
st = pytest.importorskip("safetensors.numpy")

from click.testing import CliRunner  # noqa: E402

from umi_edge.cli import cli  # noqa: E402
from umi_edge.errors import ConvertError  # noqa: E402

RANK = 3


@pytest.fixture(scope="module")
def pair(tmp_path_factory, spm_tokenizer_dir):
    """(base folder, role folder): role = base + a rank-3 delta on every matrix + noise, one norm moved."""
    from tiny_models import make_tiny_model

    root = tmp_path_factory.mktemp("delta")
    base = make_tiny_model(root / "base", tokenizer_dir=spm_tokenizer_dir, max_position_embeddings=4096)
    role = root / "role"
    shutil.copytree(base, role)
    w = st.load_file(str(base / "model.safetensors"))
    rng = np.random.default_rng(1)
    for name, x in w.items():
        if x.ndim == 2:
            u = rng.standard_normal((x.shape[0], RANK)).astype(np.float32)
            v = rng.standard_normal((RANK, x.shape[1])).astype(np.float32)
            w[name] = x + 0.02 * (u @ v) + 1e-5 * rng.standard_normal(x.shape).astype(np.float32)
    w["model.layers.0.input_layernorm.weight"] = w["model.layers.0.input_layernorm.weight"] + 0.01
    st.save_file(w, str(role / "model.safetensors"), metadata={"format": "pt"})
    return base, role


def test_auto_rank_recovers_the_delta_and_agrees_with_the_full_role(pair, tmp_path):
    from umi_convert.delta import convert_delta

    base, role = pair
    out = tmp_path / "role.lora.gguf"
    s = convert_delta(role, base, out, rank="auto", energy=0.999, role="planner")
    assert s["ranks"] == {"min": RANK, "median": RANK, "max": RANK}
    assert s["energy_kept_min"] > 0.999 and s["rel_error_max"] < 0.01
    # 7 projections x 2 layers + the output head + the (untied) token embeddings
    assert s["pairs"] == 2 * 7 + 2
    assert [n["tensor"] for n in s["not_carried"]] == ["blk.0.attn_norm.weight"]
    assert s["not_carried"][0]["max_abs_diff"] == pytest.approx(0.01, rel=1e-3)
    a = s["agreement"]
    assert a["prompts"] >= 1 and a["extracted"]["positions"] == a["base"]["positions"] > 0
    # the adapter restores what the base alone gets wrong; the norm it cannot carry and f16 factors keep it from
    # exact, and a random tiny model's near-flat distributions let top-1 flip on small changes (measured: 0.86
    # top-1 and KL 0.0013, base alone 0.03 and 0.79)
    assert a["extracted"]["top1"] >= 0.75 and a["extracted"]["top1"] > a["base"]["top1"] + 0.5, a
    assert a["extracted"]["kl_mean"] < a["base"]["kl_mean"] / 100, a
    import gguf

    r = gguf.GGUFReader(str(out))
    assert r.fields["general.type"].contents() == "adapter" and r.fields["umi.role"].contents() == "planner"
    assert r.fields["adapter.lora.alpha"].contents() == RANK


def test_a_smaller_rank_keeps_less_and_the_cli_reports_it(pair, tmp_path):
    base, role = pair
    out = tmp_path / "r1.gguf"
    r = CliRunner().invoke(cli, ["convert", str(role), "--delta-from", str(base), "-o", str(out), "--rank", "1",
                                 "--no-calibrate", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["ranks"]["max"] == 1 and s["energy_kept_min"] < 0.9 and "agreement" not in s
    # and the human form names the ranks, the energy and what was not carried
    r = CliRunner().invoke(cli, ["convert", str(role), "--delta-from", str(base), "-o", str(tmp_path / "r2.gguf"),
                                 "--rank", "2", "--no-calibrate"])
    assert r.exit_code == 0 and "rank 2" in r.output and "blk.0.attn_norm.weight" in r.output


def test_mismatched_models_and_bad_options_fail_before_writing(pair, tmp_path, spm_tokenizer_dir):
    from tiny_models import make_tiny_model
    from umi_convert.delta import convert_delta

    base, role = pair
    other = make_tiny_model(tmp_path / "other", tokenizer_dir=spm_tokenizer_dir, num_hidden_layers=3)
    out = tmp_path / "x.gguf"
    with pytest.raises(ConvertError, match="differ in n_layer"):
        convert_delta(role, other, out, calibrate=False)
    with pytest.raises(ConvertError, match="--rank must be"):
        convert_delta(role, base, out, rank=0, calibrate=False)
    with pytest.raises(ConvertError, match="nothing to extract"):
        convert_delta(base, base, out, calibrate=False)
    assert not out.exists() and not list(tmp_path.glob("*.part"))
    out.write_bytes(b"mine")
    r = CliRunner().invoke(cli, ["convert", str(role), "--delta-from", str(base), "-o", str(out), "--no-calibrate"])
    assert r.exit_code != 0 and "--force" in r.output and out.read_bytes() == b"mine"


def test_randomized_svd_matches_the_exact_one_on_a_low_rank_matrix():
    from umi_convert.delta import EXACT_DIM, low_rank

    rng = np.random.default_rng(0)
    m, n, k = EXACT_DIM + 200, EXACT_DIM + 100, 8
    d = (rng.standard_normal((m, k)) @ rng.standard_normal((k, n))).astype(np.float32)
    d += 1e-4 * rng.standard_normal((m, n)).astype(np.float32)
    us, vt, _ = low_rank(d, rank=None, energy=0.9999, max_rank=64, rng=rng)
    assert us.shape == (m, k) and vt.shape == (k, n)
    assert np.linalg.norm(d - us @ vt) / np.linalg.norm(d) < 1e-3
