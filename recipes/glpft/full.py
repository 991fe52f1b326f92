"""Full fine-tuning (all weights, not LoRA) of SmolLM2-135M on the GLPFT data, then role deltas extracted from it:
the small-scale quality study of `umi-edge convert ROLE --delta-from BASE` (docs/scale.md, "Role deltas").

The GLPFT stage-1 way, to stay affordable on CPU: ONE model trained on all three roles' samples and used for
every role. Training starts from the shipped Q4_1 GGUF dequantized into transformers (train.load_model), and
that starting point is saved too (base-hf/), so W_full - W_base is exactly what training added. Then:

    full-hf/, base-hf/            the trained and the starting model as HF folders (safetensors + tokenizer)
    gguf/full.<outtype>.gguf      the full model for llama.cpp (umi_convert.pipeline.convert)
    gguf/delta-r<N>.gguf          W_full - W_base as a LoRA adapter on the shipped base, one per [export] rank
    deltas.json                   each extraction's summary (ranks, energy kept, size, tensors not carried,
                                  agreement with the full model), as `umi-edge convert --delta-from --json`
    models.toml                   sets `full` and `delta-r<N>` for one `umi-edge eval tasks ... --compare` run
    loss.csv, summary.json

    python recipes/glpft/full.py --out /work/delta-out/135m [--probe 3] [--smoke] [--config recipes/glpft/full.toml]

A killed run resumes: training from out/checkpoints/full.pt (every `checkpoint_every` steps), and every export
step whose output exists is skipped.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402
import train  # noqa: E402
from train import TEAM, RecipeError  # noqa: E402

FULL_SET = "full"


def load_config(path: Path, smoke: bool = False) -> dict:
    cfg = train.read_config(path, ("base", "data", "train", "export"), "full.toml")
    for key in ("steps", "lr", "batch", "max_len", "seed"):
        if key not in cfg["train"]:
            raise RecipeError(f"{path}: [train] lacks {key}; start from recipes/glpft/full.toml")
    if smoke:
        s = cfg.get("smoke", {})
        cfg["data"]["episodes"] = s.get("episodes", 6)
        cfg["train"].update(max_len=s.get("max_len", 160), batch=s.get("batch", 1), steps=s.get("steps", 2),
                            lr=s.get("lr", 1e-4), warmup=0)
        cfg["export"].update(ranks=s.get("ranks", [4]), calibrate=s.get("calibrate", False))
    for r in cfg["export"].get("ranks", []):
        if r != "auto" and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise RecipeError(f"{path}: [export] ranks: {r!r} is not a positive integer or \"auto\"")
    return cfg


def train_full(model, samples, *, steps: int, lr: float, cfg: dict, log: list, device: str = "cpu",
               ckpt: Path | None = None):
    """Train every weight of `model` on `samples` ((ids, labels, trunk) as train.encode_records makes them)
    with train.fit, the loop of the LoRA stages (same sampler, schedule, shared prompt head, bf16 autocast,
    clipping, checkpoints), the model's own weights as the parameters."""
    import torch

    if not samples:
        raise RecipeError("full: no training samples")
    torch.manual_seed(cfg["train"]["seed"])
    params = list(model.parameters())   # tied embeddings appear once
    for p in params:
        p.requires_grad_(True)
    train.fit(model, params, samples, steps=steps, lr=lr, cfg=cfg, log=log, stage="full", role="all", device=device,
              ckpt=ckpt, extra_key={}, state=("model", model.state_dict, model.load_state_dict))
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return model


def save_hf(model, gguf: Path, folder: Path) -> None:
    """`model` as an HF folder (safetensors, config) with the GGUF's tokenizer, which the converter needs."""
    from transformers import AutoTokenizer

    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # save_pretrained refuses a GGUF-loaded model ("quantized with gguf"); the weights are plain float32 here
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)      # tied: the HF layout keeps the embeddings only
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(tmp)
    config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    config.pop("quantization_config", None)     # the GGUF it was read from; these weights are not quantized
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def delta_name(rank) -> str:
    return f"delta-r{rank}" if rank != "auto" else "delta-auto"


_LAYOUT = ('protocol = "alpha-umi/toolbench-v1"\ntools = "umi_edge.tools.demo:TOOLS"\nn_ctx = 2048\n'
           # budget_seconds: trained teams take 6-34 s a held-out task, an untrained one up to 256 s (max_steps
           # loops); 90 s caps a broken set's cost without touching a working one's result
           "max_tokens = 192\nmax_steps = 8\nbudget_seconds = 90\n"
           "sampling = { temperature = 0.0, top_p = 1.0, top_k = 0, min_p = 0.0, seed = 0 }\n"
           'caller = { max_tokens = 256, share_context = "planner" }\nsummarizer = { share_context = "planner" }\n')


def write_overlay(out: Path, base_model: str, full_gguf: Path, ranks) -> Path:
    """Sets for one eval run: `full` (the full model in every role, no adapter) and one `delta-r<N>` per rank
    (the shipped base + that adapter in every role). All use the `untrained` set's layout: one context shared
    by the three roles (same weights in every role), so they differ only in the weights."""
    names = [delta_name(r) for r in ranks]
    text = (f"# written by recipes/glpft/full.py: umi-edge eval tasks heldout --models {out / 'models.toml'} "
            f"--set {FULL_SET}" + "".join(f" --compare {n}" for n in names) + " --json\n"
            f'[models.full-135m]\npath = "{full_gguf.relative_to(out).as_posix()}"\n\n'
            f'[sets.{FULL_SET}]\ndescription = "SmolLM2-135M fully fine-tuned on all roles (recipes/glpft/full.py)"\n'
            f'model = "full-135m"\n' + _LAYOUT)
    for r, name in zip(ranks, names):
        text += (f"\n[sets.{name}]\ndescription = \"SmolLM2-135M-Instruct + the full fine-tune's delta at rank {r} "
                 f'(recipes/glpft/full.py)"\nmodel = "{base_model}"\nadapter = "gguf/{name}.gguf"\n' + _LAYOUT)
    path = out / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run(cfg: dict, out: Path, *, gguf: Path, smoke: bool = False, device: str = "cpu") -> dict:
    """Generate → encode all roles' records → train the full model → HF folders → GGUF → deltas → overlay."""
    import torch

    from umi_convert.delta import convert_delta
    from umi_convert.pipeline import convert
    from umi_edge.fetch import sha256_file

    t0 = time.monotonic()
    torch.set_num_threads(cfg["train"]["threads"])
    out.mkdir(parents=True, exist_ok=True)
    t, ex = cfg["train"], cfg["export"]
    full_hf, base_hf = out / "full-hf", out / "base-hf"
    log: list = []
    counts: dict = {}
    if not (full_hf / "config.json").is_file():
        data = generate.build(cfg["data"]["episodes"], cfg["data"]["seed"], cfg["data"].get("demo_share", 1.0))
        counts = generate.write(data, out / "data")
        samples = [s for role in TEAM for s in train.encode_records(data[role], gguf, t["max_len"], role)]
        model = train.load_model(gguf).to(device)
        if not (base_hf / "config.json").is_file():
            save_hf(model, gguf, base_hf)      # exactly the weights training starts from
        (out / "checkpoints").mkdir(exist_ok=True)
        ckpt = out / "checkpoints" / "full.pt"
        model = train_full(model, samples, steps=t["steps"], lr=t["lr"], cfg=cfg, log=log, device=device,
                           ckpt=ckpt)
        train.write_log(log, out / "loss.csv")
        save_hf(model.to("cpu"), gguf, full_hf)
        ckpt.unlink(missing_ok=True)
        del model
    (out / "gguf").mkdir(exist_ok=True)
    full_gguf = out / "gguf" / f"full.{ex['outtype']}.gguf"
    if not full_gguf.is_file():
        convert(full_hf, full_gguf, outtype=ex["outtype"], progress=False)
    deltas_path = out / "deltas.json"
    deltas = json.loads(deltas_path.read_text()) if deltas_path.is_file() else {}
    for r in ex["ranks"]:
        name = delta_name(r)
        path = out / "gguf" / f"{name}.gguf"
        if name in deltas and path.is_file():
            continue
        print(f"extracting {name}", flush=True)
        deltas[name] = convert_delta(full_hf, base_hf, path, rank=r, energy=ex.get("energy", 0.9), outtype="f16",
                                     force=True, calibrate=ex.get("calibrate", True))
        deltas_path.write_text(json.dumps(deltas, indent=2) + "\n", encoding="utf-8")
    overlay = write_overlay(out, cfg["base"]["model"], full_gguf, ex["ranks"])
    rows = list(csv.DictReader((out / "loss.csv").open())) if (out / "loss.csv").is_file() else []
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.update({
        "smoke": smoke, "base_gguf": str(gguf), "base_sha256": sha256_file(gguf), "data": cfg["data"],
        "budget": {"steps": t["steps"], "batch": t["batch"], "lr": t["lr"], "warmup": t.get("warmup", 0),
                   "max_len": t["max_len"], "bf16": t.get("bf16", False), "threads": t["threads"], "device": device},
        "full_gguf": {"path": str(full_gguf), "outtype": ex["outtype"], "size_bytes": full_gguf.stat().st_size},
        "adapters": {n: {"path": d["output"], "size_bytes": d["size_bytes"], "ranks": d["ranks"]}
                     for n, d in deltas.items()},
        "models_toml": str(overlay),
    })
    if counts:
        summary["records"] = counts
    if rows:
        summary.update(loss_first=float(rows[0]["loss"]), loss_last=float(rows[-1]["loss"]),
                       train_seconds=float(rows[-1]["seconds"]))
    summary["seconds_this_run"] = round(time.monotonic() - t0, 1)
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def report(out: Path, eval_json: Path) -> str:
    """The markdown table of held-out success per set (full vs each delta) with each adapter's size, ranks and
    agreement (from out/deltas.json and out/summary.json), and the recommended rank: the smallest whose
    success is within 3 points of the full model's."""
    ev = json.loads(Path(eval_json).read_text(encoding="utf-8"))["sets"]
    deltas = json.loads((out / "deltas.json").read_text(encoding="utf-8"))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    if FULL_SET not in ev:
        raise RecipeError(f"{eval_json}: no set {FULL_SET!r}; run the eval command in {out / 'models.toml'}")
    f = ev[FULL_SET]
    rows = ["| set | held-out success | vs full | adapter MB | ranks (min/median/max) | energy kept (min) "
            "| top-1 agreement / KL vs full (base alone) | s / task |", "|---|---|---|---|---|---|---|---|"]

    def cell(s):
        return f"{s['success_rate'] * 100:.1f} % ({round(s['success_rate'] * s['n_tasks'])}/{s['n_tasks']})"

    def secs(s):
        return f"{s['mean_seconds']:.1f}" if "mean_seconds" in s else ""

    rows.append(f"| {FULL_SET} ({summary['full_gguf']['outtype']} GGUF, "
                f"{summary['full_gguf']['size_bytes'] / 1e6:.1f} MB) | {cell(f)} | | | | | | {secs(f)} |")
    ok = []
    for name, d in deltas.items():
        if name not in ev:
            continue
        s = ev[name]
        diff = (s["success_rate"] - f["success_rate"]) * 100
        a = d.get("agreement")
        agree = (f"{a['extracted']['top1'] * 100:.1f} % / {a['extracted']['kl_mean']:.4f} "
                 f"({a['base']['top1'] * 100:.1f} % / {a['base']['kl_mean']:.4f})") if a else "not measured"
        r = d["ranks"]
        rows.append(f"| {name} | {cell(s)} | {diff:+.1f} | {d['size_bytes'] / 1e6:.1f} | {r['min']}/{r['median']}/"
                    f"{r['max']} | {d['energy_kept_min'] * 100:.1f} % | {agree} | {secs(s)} |")
        if diff >= -3:
            ok.append((d["size_bytes"], name))
    best = min(ok)[1] if ok else None
    rows.append("")
    rows.append(f"Recommended: {best} (the smallest adapter within 3 points of {FULL_SET})" if best else
                f"No extracted set is within 3 points of {FULL_SET}.")
    return "\n".join(rows)


def probe(cfg: dict, gguf: Path, steps: int, device: str = "cpu") -> dict:
    """Time `steps` full-model steps on the config's data (first 40 episodes), to size the budget."""
    import torch

    torch.set_num_threads(cfg["train"]["threads"])
    data = generate.build(40, cfg["data"]["seed"], cfg["data"].get("demo_share", 1.0))
    samples = [s for role in TEAM for s in train.encode_records(data[role], gguf, cfg["train"]["max_len"], role)]
    model = train.load_model(gguf).to(device)
    log: list = []
    train_full(model, samples, steps=steps, lr=cfg["train"]["lr"], cfg=cfg, log=log, device=device)
    return {"steps": steps, "seconds": log[-1]["seconds"], "seconds_per_step": round(log[-1]["seconds"] / steps, 2),
            "batch": cfg["train"]["batch"], "threads": cfg["train"]["threads"], "bf16": cfg["train"].get("bf16")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE / "full.toml"))
    ap.add_argument("--out", required=True, help="output folder (large: keep it outside the repository)")
    ap.add_argument("--base-gguf", default=None, help="the base GGUF (default: the registry model, fetched and checked)")
    ap.add_argument("--smoke", action="store_true", help="a few steps on a handful of short samples")
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    ap.add_argument("--probe", type=int, metavar="STEPS", default=0,
                    help="only time STEPS training steps (no output files) and exit")
    ap.add_argument("--report", metavar="EVAL_JSON", default=None,
                    help="print the table of OUT's sets from `umi-edge eval ... --json` output and exit")
    args = ap.parse_args(argv)
    from umi_edge.errors import UmiError

    try:
        if args.report:
            print(report(Path(args.out), Path(args.report)))
            return 0
        cfg = load_config(Path(args.config), smoke=args.smoke)
        gguf = train.base_gguf(cfg, args.base_gguf)
        if args.probe:
            print(json.dumps(probe(cfg, gguf, args.probe, args.device)))
            return 0
        summary = run(cfg, Path(args.out), gguf=gguf, smoke=args.smoke, device=args.device)
    except (RecipeError, UmiError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
