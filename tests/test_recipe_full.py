"""recipes/glpft/full.py: full fine-tuning trains every weight and resumes to the same weights; the overlay's sets
resolve (full model in every role; base + delta adapter in every role); the smoke run goes end to end
(train → HF folders → GGUF → delta adapter llama.cpp loads)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "glpft"
sys.path.insert(0, str(RECIPE))

import full  # noqa: E402
import train  # noqa: E402

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
CFG = {"train": {"seed": 0, "batch": 2, "warmup": 2, "bf16": False, "shared_prefix": False, "checkpoint_every": 2}}


def _samples() -> list:
    import torch

    rnd = torch.Generator().manual_seed(1)
    out = []
    for n in (9, 12, 7, 15, 10):
        ids = torch.randint(1, 64, (n,), generator=rnd).tolist()
        out.append((ids, [train.IGNORE] * (n // 2) + ids[n // 2:], 0))
    return out


def test_full_training_moves_every_weight_and_resumes_exactly(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**TINY)
    torch.manual_seed(0)
    w0 = {k: v.clone() for k, v in LlamaForCausalLM(config).state_dict().items()}

    class Killed(Exception):
        pass

    class DiesAt(list):
        def append(self, row):
            if row["step"] == 5:
                raise Killed
            super().append(row)

    def fit(log, ckpt, steps=6):
        model = LlamaForCausalLM(config)
        model.load_state_dict(w0)
        model = full.train_full(model, _samples(), steps=steps, lr=1e-2, cfg=CFG, log=log, ckpt=ckpt)
        return {k: v.clone() for k, v in model.state_dict().items()}

    unbroken_log: list = []
    unbroken = fit(unbroken_log, None)
    # every weight moved, norms and the (tied) embeddings included: nothing was frozen
    for k, v in unbroken.items():
        if "rotary" not in k:
            assert (v - w0[k]).abs().max() > 0, k
    assert torch.equal(unbroken["lm_head.weight"], unbroken["model.embed_tokens.weight"])
    assert unbroken_log[-1]["loss"] < unbroken_log[0]["loss"]

    ckpt = tmp_path / "full.pt"
    with pytest.raises(Killed):
        fit(DiesAt(), ckpt)
    assert torch.load(ckpt, weights_only=True)["step"] == 4
    capsys.readouterr()
    log: list = []
    resumed = fit(log, ckpt)
    assert "resumed at step 4/6" in capsys.readouterr().out
    assert [r["loss"] for r in log] == [r["loss"] for r in unbroken_log]
    for k in unbroken:
        assert torch.equal(resumed[k], unbroken[k]), k
    with pytest.raises(train.RecipeError, match="another full/all run"):
        fit([], ckpt, steps=7)


def test_overlay_sets_full_and_one_delta_per_rank(tmp_path):
    from umi_edge.registry import load_registry, resolve_set

    (tmp_path / "gguf").mkdir()
    path = full.write_overlay(tmp_path, "smollm2-135m-instruct", tmp_path / "gguf" / "full.f16.gguf", [8, "auto"])
    reg = load_registry(path, env={})
    f = resolve_set(full.FULL_SET, registry=reg, env={})
    assert set(f.roles) == {"planner", "caller", "summarizer"}
    for role in f.roles.values():
        spec = reg.model(role.model)
        assert spec.kind == "path" and Path(spec.ref) == (tmp_path / "gguf" / "full.f16.gguf").resolve()
        assert not role.adapters
    assert f.roles["caller"].share_context == "planner" and f.roles["summarizer"].share_context == "planner"
    for name in ("delta-r8", "delta-auto"):
        d = resolve_set(name, registry=reg, env={})
        for role in d.roles.values():
            assert Path(role.adapter) == (tmp_path / "gguf" / f"{name}.gguf").resolve()
            assert role.model == "smollm2-135m-instruct" and reg.model(role.model).kind == "pypi"   # the shipped base
    assert "--set full --compare delta-r8 --compare delta-auto" in path.read_text()


def test_bad_config_is_a_one_line_error(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[base]\nmodel = 'x'\n[data]\n[train]\nsteps = 1\nlr = 1\nbatch = 1\nmax_len = 9\nseed = 0\n"
                   "[export]\nranks = [0]\n")
    with pytest.raises(train.RecipeError, match=r"ranks: 0 is not a positive integer"):
        full.load_config(bad)
    assert full.main(["--config", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path, smollm2_gguf):
    """2 steps on a few short samples of the real base: the HF folders, the full GGUF, a delta adapter that
    llama.cpp applies on the shipped base, and an overlay whose sets load."""
    import numpy as np

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(RECIPE / "full.py"), "--smoke", "--out", str(out),
                           "--base-gguf", str(smollm2_gguf)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "full-hf" / "model.safetensors").is_file() and (out / "base-hf" / "tokenizer.json").is_file()
    assert summary["budget"]["steps"] == 2 and summary["loss_last"]
    deltas = json.loads((out / "deltas.json").read_text())
    assert list(deltas) == ["delta-r4"] and deltas["delta-r4"]["ranks"]["max"] == 4
    # tied embeddings: their delta is reported as not carried, never dropped silently
    assert any(t["tensor"] == "token_embd.weight" for t in deltas["delta-r4"]["not_carried"])

    from umi_edge.engine.llama import LlamaBackend

    with LlamaBackend() as be:
        base = be.load_model(smollm2_gguf)
        fm = be.load_model(out / "gguf" / "full.f16.gguf")
        ids = [base.bos_id] + base.tokenize("What is 2 + 2? Next: caller.")
        assert fm.tokenize("What is 2 + 2? Next: caller.") == ids[1:]   # the same vocabulary
        logits = {}
        for name, m, adapter in (("base", base, None), ("full", fm, None),
                                 ("delta", base, be.load_adapter(base, out / "gguf" / "delta-r4.gguf"))):
            role = be.new_role(m, name=name, adapter=adapter, n_ctx=256)
            role.generate(ids, max_tokens=0)
            logits[name] = np.asarray(role.last_logits(), dtype=np.float64)
    assert np.abs(logits["full"] - logits["base"]).max() > 0
    # base + the rank-4 delta is closer to the full model than the base alone
    assert np.abs(logits["delta"] - logits["full"]).mean() < np.abs(logits["base"] - logits["full"]).mean()

    from umi_edge.registry import load_registry, resolve_set

    reg = load_registry(summary["models_toml"], env={})
    assert resolve_set("delta-r4", registry=reg, env={}).roles["caller"].adapter


def test_report_recommends_the_smallest_adapter_within_3_points(tmp_path):
    def delta(size, top1):
        return {"size_bytes": size, "ranks": {"min": 1, "median": 2, "max": 3}, "energy_kept_min": 0.5,
                "agreement": {"extracted": {"top1": top1, "kl_mean": 0.1}, "base": {"top1": 0.2, "kl_mean": 2.0}}}

    (tmp_path / "deltas.json").write_text(json.dumps({"delta-r8": delta(5e6, 0.6), "delta-r16": delta(10e6, 0.8),
                                                      "delta-r32": delta(20e6, 0.9)}))
    (tmp_path / "summary.json").write_text(json.dumps({"full_gguf": {"outtype": "f16", "size_bytes": 270e6}}))
    sets = {"full": 0.90, "delta-r8": 0.80, "delta-r16": 0.875, "delta-r32": 0.95}
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps({"sets": {k: {"success_rate": v, "n_tasks": 40} for k, v in sets.items()}}))
    table = full.report(tmp_path, ev)
    assert "| delta-r8 | 80.0 % (32/40) | -10.0 | 5.0 |" in table
    assert "| delta-r16 | 87.5 % (35/40) | -2.5 | 10.0 |" in table
    assert table.endswith("Recommended: delta-r16 (the smallest adapter within 3 points of full)")
    ev.write_text(json.dumps({"sets": {"delta-r8": {"success_rate": 0.5, "n_tasks": 2}}}))
    with pytest.raises(train.RecipeError, match="no set 'full'"):
        full.report(tmp_path, ev)
