"""GLPFT recipe training: the stage-1 + stage-2 adapter sum is exact, ids follow the runtime's rule, and the
smoke run goes end to end (generate → train → GGUF adapters → llama.cpp load_adapter)."""
from __future__ import annotations

import csv
import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "glpft"
sys.path.insert(0, str(RECIPE))

import train  # noqa: E402


def test_config_budgets_baseline_gets_the_team_compute():
    cfg = train.load_config(RECIPE / "config.toml")
    assert cfg["baseline"]["steps"] == cfg["stage1"]["steps"] + sum(cfg["stage2"]["steps"].values())
    assert cfg["baseline"]["rank"] == 2 * cfg["lora"]["rank"]
    smoke = train.load_config(RECIPE / "config.toml", smoke=True)
    assert smoke["train"]["max_len"] < cfg["train"]["max_len"] and smoke["stage1"]["steps"] <= 5


def test_bad_config_is_a_one_line_error(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[base]\nmodel = 'x'\n")
    with pytest.raises(train.RecipeError, match=r"missing \[data\]"):
        train.load_config(bad)
    assert train.main(["--config", str(bad)]) == 1


def test_stage1_plus_stage2_exports_as_one_lora_on_the_original_base(tmp_path):
    """W0 + s·B1A1 (merged) + s·B2A2 equals W0 + the combined rank-2r adapter, as PEFT loads it."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    base = LlamaForCausalLM(config).eval()
    w0 = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = {"lora": {"rank": 4, "alpha": 8, "dropout": 0.0,
                    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}}

    def attach(model):
        pm = peft.get_peft_model(model, train.lora_config(cfg))
        for name, p in pm.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero; a trained adapter does not
                torch.nn.init.normal_(p, std=0.1)
        return pm

    pm = attach(base)
    s1 = train.lora_state(pm)
    merged = pm.merge_and_unload()
    pm = attach(merged)
    s2 = train.lora_state(pm)
    x = torch.tensor([[1, 5, 9, 2, 33, 7]])
    with torch.no_grad():
        want = pm(input_ids=x).logits
    scale = cfg["lora"]["alpha"] / cfg["lora"]["rank"]
    both = train.combine(s1, scale, s2, scale)
    folder = tmp_path / "adapter"
    train.save_peft(folder, both, rank=8, alpha=8, targets=cfg["lora"]["target_modules"], base_dir=tmp_path)
    fresh = LlamaForCausalLM(config).eval()
    fresh.load_state_dict(w0)
    loaded = peft.PeftModel.from_pretrained(fresh, str(folder)).eval()
    with torch.no_grad():
        got = loaded(input_ids=x).logits
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
    plain = LlamaForCausalLM(config).eval()
    plain.load_state_dict(w0)
    with torch.no_grad():
        assert (plain(input_ids=x).logits - want).abs().max() > 1e-2  # the adapters did change the model


def test_combine_refuses_mismatched_stages():
    torch = pytest.importorskip("torch")
    a = {"m.q_proj.lora_A.weight": torch.zeros(2, 4), "m.q_proj.lora_B.weight": torch.zeros(4, 2)}
    with pytest.raises(train.RecipeError, match="same target_modules"):
        train.combine(a, 1.0, {}, 1.0)


def test_ids_follow_the_runtime_rule(smollm2_gguf):
    """Prompt ids = protocol encode (BOS, each `</s>` → the model's EOS); loss on target + EOS only."""
    import generate
    from umi_edge.engine.llama import LlamaBackend

    records = generate.build(3, seed=0)["caller"][:3]
    encoded = train.encode_records(records, smollm2_gguf, max_len=4096, role="caller")
    with LlamaBackend() as backend:
        m = backend.load_model(smollm2_gguf)
        for r, (ids, labels, trunk) in zip(records, encoded):
            # the trunk: the prompt up to the end of its history (plan turn included), before the caller's tail
            segments, cur = [], []
            for t in ids[1:trunk]:
                if t == m.eos_id:
                    segments.append(cur)
                    cur = []
                else:
                    cur.append(t)
            text = "</s>".join(m.detokenize(x) for x in segments + [cur])
            assert text == r["input"][:r["input"].rindex("\nThe thought of this step is:")]
            n_target = len(m.tokenize(r["target"])) + 1
            assert ids[0] == m.bos_id and ids[-1] == m.eos_id
            prompt = ids[:-n_target]
            assert prompt.count(m.eos_id) == r["input"].count("</s>") >= 1
            assert labels[:-n_target] == [train.IGNORE] * len(prompt)
            assert labels[-n_target:] == ids[-n_target:]
            assert m.detokenize(ids[-n_target:-1]) == r["target"]
    short = train.encode_records(records[:1], smollm2_gguf, max_len=64)[0]
    assert len(short[0]) == 64 and short[0] == encoded[0][0][-64:]  # the reference keeps the last tokens
    assert short[2] == max(0, encoded[0][2] - (len(encoded[0][0]) - 64))   # the trunk shrinks with the cut
    summarizer = generate.build(3, seed=0)["summarizer"][:1]
    assert train.encode_records(summarizer, smollm2_gguf, max_len=4096, role="summarizer")[0][2] == 0


@pytest.mark.slow
def test_smoke_run_end_to_end(tmp_path, smollm2_gguf):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(RECIPE / "train.py"), "--smoke", "--out", str(out),
                           "--base-gguf", str(smollm2_gguf)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader((out / "loss.csv").open()))
    assert {(r["stage"], r["role"]) for r in rows} == {("baseline", "backbone"), ("stage1", "all"),
                                                       ("stage2", "planner"), ("stage2", "caller"),
                                                       ("stage2", "summarizer")}
    assert all(math.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in rows)
    assert sorted(summary["adapters"]) == ["baseline", "caller", "planner", "summarizer", "trunk"]
    for name in ("planner", "caller", "summarizer", "backbone"):
        assert (out / "data" / f"train_{name}.json").is_file()

    from umi_edge.engine.llama import LlamaBackend
    from umi_edge.fetch import sha256_file
    from umi_edge.registry import load_registry, resolve_set

    spec = resolve_set(train.EVAL_SET, registry=load_registry(summary["models_toml"], env={}), env={})
    for role in ("planner", "caller", "summarizer"):
        assert Path(spec.roles[role].adapter) == Path(summary["adapters"][role]["path"]).resolve()
    assert spec.roles["caller"].max_tokens == train.generate.CALLER_MAX_TOKENS
    # trunk mode: the planner and the caller share one context whose trunk adapter is stage 1
    assert spec.roles["caller"].share_context == "planner" and spec.roles["summarizer"].share_context is None
    assert Path(spec.roles["planner"].trunk_adapter) == Path(summary["adapters"]["trunk"]["path"]).resolve()
    base = resolve_set(train.BASELINE_SET, registry=load_registry(summary["models_toml"], env={}), env={})
    assert list(base.roles) == ["backbone"] and base.protocol == "alpha-umi/toolbench-backbone-v1"
    assert Path(base.roles["backbone"].adapter) == Path(summary["adapters"]["baseline"]["path"]).resolve()

    with LlamaBackend() as backend:
        m = backend.load_model(smollm2_gguf)
        ids = [m.bos_id] + m.tokenize("What is 2 + 2? caller: ")
        plain = backend.new_role(m, name="plain", n_ctx=256)
        plain.generate(ids, max_tokens=0)
        base_logits = plain.last_logits()
        for name, info in summary["adapters"].items():
            assert info["rank"] == [8 if name == "trunk" else 16]
            role = backend.new_role(m, name=name, adapter=backend.load_adapter(m, info["path"]), n_ctx=256)
            gen = role.generate(ids, max_tokens=4)
            logits = role.last_logits()
            assert gen.tokens and all(math.isfinite(float(v)) for v in logits[:100])
            role.reset()
            role.generate(ids, max_tokens=0)
            assert abs(role.last_logits() - base_logits).max() > 0  # the adapter changes the model

    # ship.py: the role adapters and the baseline's (as `backbone`) for the package, the same bytes as the f16
    # ones train.py exported
    ship = tmp_path / "ship"
    proc = subprocess.run([sys.executable, str(RECIPE / "ship.py"), "--out", str(out), "--dest", str(ship)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shipped = json.loads(proc.stdout)
    assert sorted(shipped) == ["backbone", "caller", "planner", "summarizer", "trunk"]
    for role, info in shipped.items():
        trained = summary["adapters"]["baseline" if role == "backbone" else role]
        assert info["sha256"] == trained["sha256"] == sha256_file(ship / f"{role}.gguf")
    again = subprocess.run([sys.executable, str(RECIPE / "ship.py"), "--out", str(out), "--dest", str(ship)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "already exists; pass --force" in again.stderr   # nothing overwritten
    some = tmp_path / "some"
    part = subprocess.run([sys.executable, str(RECIPE / "ship.py"), "--out", str(out), "--dest", str(some),
                           "--only", "planner,trunk"], capture_output=True, text=True, timeout=300)
    assert part.returncode == 0 and sorted(json.loads(part.stdout)) == ["planner", "trunk"], part.stderr[-3000:]
    assert sorted(p.name for p in some.iterdir()) == ["planner.gguf", "trunk.gguf"]
    bad = subprocess.run([sys.executable, str(RECIPE / "ship.py"), "--out", str(out), "--dest", str(some),
                          "--only", "planer"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "--only planer" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("targets", [None, ["q_proj", "k_proj"]], ids=["all", "qk"])
def test_dequantized_base_and_exported_adapter_match_llama_cpp(tmp_path, smollm2_gguf, targets):
    """The faithful path: transformers on the dequantized GGUF ≈ llama.cpp on the GGUF, with and without a
    (random, non-zero) LoRA exported through the recipe's save_peft + convert_lora. "qk": only the
    projections whose rows llama.cpp permutes, so a layout slip cannot hide behind the other modules."""
    import numpy as np
    import torch
    from peft import get_peft_model

    from umi_convert.lora import convert_lora
    from umi_edge.engine.llama import LlamaBackend
    from umi_edge.protocol.alpha_umi import encode

    cfg = train.load_config(RECIPE / "config.toml")
    if targets:
        cfg["lora"]["target_modules"] = targets
    text = "user: What is 15% of 2,480?</s>assistant: I will call the calculator.\n Next: caller.</s> caller: "
    with LlamaBackend() as backend:
        m = backend.load_model(smollm2_gguf)
        ids = encode(text, m.tokenize, m.bos_id, m.eos_id)
    model = train.load_model(smollm2_gguf).eval()
    torch.manual_seed(0)
    pm = get_peft_model(model, train.lora_config(cfg))
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.4 if targets else 0.1)  # well above the base's q8 activation noise
    with torch.no_grad():
        hf_lora = pm(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        with pm.disable_adapter():
            hf_base = pm(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    base_dir = tmp_path / "base"
    model.config.save_pretrained(base_dir)
    train.save_peft(tmp_path / "peft", train.lora_state(pm), rank=cfg["lora"]["rank"], alpha=cfg["lora"]["alpha"],
                    targets=cfg["lora"]["target_modules"], base_dir=base_dir)
    convert_lora(tmp_path / "peft", tmp_path / "a.gguf", base=base_dir, outtype="f32")
    with LlamaBackend() as backend:
        m = backend.load_model(smollm2_gguf)
        plain = backend.new_role(m, name="plain", n_ctx=256)
        plain.generate(ids, max_tokens=0)
        cpp_base = plain.last_logits()
        role = backend.new_role(m, name="lora", adapter=backend.load_adapter(m, tmp_path / "a.gguf"), n_ctx=256)
        role.generate(ids, max_tokens=0)
        cpp_lora = role.last_logits()

    def corr(a, b):
        return float(np.corrcoef(a, b)[0, 1])

    assert corr(hf_base, cpp_base) > 0.99 and hf_base.argmax() == cpp_base.argmax()
    assert corr(hf_lora, cpp_lora) > 0.99 and hf_lora.argmax() == cpp_lora.argmax()
    # The adapter's own effect agrees too: measured 0.987 (all) / 0.979 (qk); 0.40 for qk with the
    # converter's rope row permutation disabled.
    assert np.abs(hf_lora - hf_base).max() > 2
    assert corr(hf_lora - hf_base, cpp_lora - cpp_base) > 0.95


@pytest.mark.slow
def test_trunk_mode_training_matches_the_runtime_trunk(tmp_path, smollm2_gguf):
    """Stage 2 in trunk mode (train.py: the trunk under stage 1 alone, the tail under stage 1 + 2) is what the
    runtime computes with trunk_adapter = stage 1 and the role adapter = stage 1 + 2 (generate(trunk=n)):
    transformers on the dequantized GGUF and llama.cpp agree on the logits and on the trunk's own effect."""
    import numpy as np
    import torch
    from peft import get_peft_model

    from umi_convert.lora import convert_lora
    from umi_edge.engine.llama import LlamaBackend
    from umi_edge.protocol.alpha_umi import encode

    cfg = train.load_config(RECIPE / "config.toml")
    trunk_text = "You have assess to the following apis:\n{}\nThe conversation history is:\nuser: What is 2+2?</s>"
    text = trunk_text + "\nYou are the assistant to plan what to do next. assistant: "
    with LlamaBackend() as backend:
        m = backend.load_model(smollm2_gguf)
        ids = encode(text, m.tokenize, m.bos_id, m.eos_id)
        head = encode(trunk_text, m.tokenize, m.bos_id, m.eos_id)
    n = len(head)
    assert ids[:n] == head and 0 < n < len(ids)

    def randomize(pm, seed):
        torch.manual_seed(seed)
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)

    model = train.load_model(smollm2_gguf).eval()
    scale = cfg["lora"]["alpha"] / cfg["lora"]["rank"]
    pm = get_peft_model(model, train.lora_config(cfg))
    randomize(pm, 1)
    stage1 = train.lora_state(pm)
    merged = pm.merge_and_unload()
    pm = get_peft_model(merged, train.lora_config(cfg))
    randomize(pm, 2)
    inner = pm.base_model.model
    with torch.no_grad():
        with pm.disable_adapter():
            out = inner.model(input_ids=torch.tensor([ids[:n]]), use_cache=True)
        cache = getattr(out, "cache", None)
        cache = out.past_key_values if cache is None else cache
        name = "cache" if "cache" in inspect.signature(inner.model.forward).parameters else "past_key_values"
        hidden = inner.model(input_ids=torch.tensor([ids[n:]]), **{name: cache}).last_hidden_state
        hf_trunk = inner.lm_head(hidden[0, -1]).numpy()
        hf_full = pm(input_ids=torch.tensor([ids])).logits[0, -1].numpy()   # everything under stage 1 + 2
    base_dir = tmp_path / "base"
    model.config.save_pretrained(base_dir)
    targets, rank = cfg["lora"]["target_modules"], cfg["lora"]["rank"]
    train.save_peft(tmp_path / "stage1", stage1, rank=rank, alpha=cfg["lora"]["alpha"], targets=targets,
                    base_dir=base_dir)
    train.save_peft(tmp_path / "role", train.combine(stage1, scale, train.lora_state(pm), scale), rank=2 * rank,
                    alpha=2 * rank, targets=targets, base_dir=base_dir)
    for name in ("stage1", "role"):
        convert_lora(tmp_path / name, tmp_path / f"{name}.gguf", base=base_dir, outtype="f32")
    with LlamaBackend() as backend:
        m = backend.load_model(smollm2_gguf)
        role_a, trunk_a = (backend.load_adapter(m, tmp_path / f"{x}.gguf") for x in ("role", "stage1"))
        role = backend.new_role(m, name="planner", adapter=role_a, trunk_adapter=trunk_a, n_ctx=512)
        role.generate(ids, max_tokens=0, trunk=n)
        cpp_trunk = role.last_logits()
        full = backend.new_role(m, name="full", adapter=role_a, n_ctx=512)
        full.generate(ids, max_tokens=0)
        cpp_full = full.last_logits()

    def corr(a, b):
        return float(np.corrcoef(a, b)[0, 1])

    assert corr(hf_trunk, cpp_trunk) > 0.99 and hf_trunk.argmax() == cpp_trunk.argmax()
    assert np.abs(hf_trunk - hf_full).max() > 1                        # the trunk's adapter matters...
    assert corr(hf_trunk - hf_full, cpp_trunk - cpp_full) > 0.9        # ...the same way in both


TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)
TINY_CFG = {"lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]},
            "train": {"seed": 0, "batch": 4, "warmup": 2, "bf16": False, "shared_prefix": False}}


def _tiny_samples(lengths) -> list:
    """(ids, labels, trunk) of random sequences: the loss on the second half of each."""
    import torch

    rnd = torch.Generator().manual_seed(1)
    samples = []
    for n in lengths:
        ids = torch.randint(1, 64, (n,), generator=rnd).tolist()
        samples.append((ids, [train.IGNORE] * (n // 2) + ids[n // 2:], 0))
    return samples


def test_a_killed_run_resumes_to_the_same_adapter(tmp_path, capsys):
    """train_lora with a checkpoint: a run killed at step 5 and started again ends with exactly the LoRA,
    loss log and checkpoint-free state of an unbroken run; another run's checkpoint is refused."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**TINY)
    torch.manual_seed(0)
    w0 = LlamaForCausalLM(config).state_dict()
    cfg = {**TINY_CFG, "train": {**TINY_CFG["train"], "batch": 2, "checkpoint_every": 2}}
    samples = _tiny_samples((9, 12, 7, 15, 10))

    class Killed(Exception):
        pass

    class DiesAt(list):  # a loss log whose append kills the run at a given step
        def __init__(self, step):
            super().__init__()
            self.step = step

        def append(self, row):
            if row["step"] == self.step:
                raise Killed
            super().append(row)

    def fit(log, ckpt, steps=6):
        model = LlamaForCausalLM(config)
        model.load_state_dict(w0)
        pm = train.train_lora(model, samples, lcfg=train.lora_config(cfg), steps=steps, lr=1e-2, cfg=cfg, log=log,
                              stage="stage1", role="all", ckpt=ckpt)
        return train.lora_state(pm)

    unbroken_log: list = []
    unbroken = fit(unbroken_log, None)
    ckpt = tmp_path / "stage1.pt"
    with pytest.raises(Killed):
        fit(DiesAt(5), ckpt)            # steps 1-4 ran; the last checkpoint is step 4
    assert torch.load(ckpt, weights_only=True)["step"] == 4
    capsys.readouterr()
    log: list = []
    resumed = fit(log, ckpt)
    printed = capsys.readouterr().out
    assert "resumed at step 4/6" in printed and " step    5/6 " in printed and " step    4/6 " not in printed
    assert [r["step"] for r in log] == list(range(1, 7))
    assert [r["loss"] for r in log] == [r["loss"] for r in unbroken_log]
    assert resumed.keys() == unbroken.keys()
    for k in unbroken:
        assert torch.equal(resumed[k], unbroken[k]), k
    assert any(v.abs().max() > 0 for k, v in unbroken.items() if "lora_B" in k)  # it did train
    with pytest.raises(train.RecipeError, match="another stage1/all run"):
        fit([], ckpt, steps=7)          # a different budget must not pick up this state


def _tiny_fit(rank: int, world: int, port: int, folder: str) -> None:
    """One training process of test_workers_split_the_batch (spawned: module level, so it pickles)."""
    import torch
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY))
    samples = _tiny_samples((9, 12, 7, 15, 10, 11, 8))
    log: list = []
    pm = train.train_lora(model, samples, lcfg=train.lora_config(TINY_CFG), steps=5, lr=1e-2, cfg=TINY_CFG,
                          log=log, stage="stage1", role="all")
    if rank == 0:
        torch.save({"lora": train.lora_state(pm), "loss": [r["loss"] for r in log]}, f"{folder}/w{world}.pt")
    if world > 1:
        dist.destroy_process_group()


def test_workers_split_the_batch_and_train_the_same_adapter(tmp_path):
    """--workers: two processes, each on half of every batch with summed gradients, train the adapter one
    process trains (up to float summation order)."""
    torch = pytest.importorskip("torch")
    import torch.multiprocessing as mp

    _tiny_fit(0, 1, 0, str(tmp_path))
    mp.spawn(_tiny_fit, args=(2, train.free_port(), str(tmp_path)), nprocs=2, join=True)
    one, two = (torch.load(tmp_path / f"w{n}.pt", weights_only=True) for n in (1, 2))
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)
    assert one["lora"].keys() == two["lora"].keys()
    for k, v in one["lora"].items():
        assert torch.allclose(two["lora"][k], v, rtol=1e-4, atol=1e-6), k
    assert any(v.abs().max() > 0 for k, v in one["lora"].items() if "lora_B" in k)  # it did train


def test_workers_share_each_batch_once_by_length():
    batch = [([0] * n, None, 0) for n in (5, 9, 7, 3, 8)]
    assert train.share(batch, 0, 1) == batch                       # one worker: untouched, order included
    for world in (2, 3):
        parts = [train.share(batch, r, world) for r in range(world)]
        assert sorted(len(x[0]) for p in parts for x in p) == [3, 5, 7, 8, 9]
    # snake order: 9+5+3 vs 8+7 (taking every other sample as it comes would give 5+7+8 vs 9+3)
    assert [sum(len(x[0]) for x in train.share(batch, r, 2)) for r in range(2)] == [17, 15]
