"""Role deltas: a full fine-tune (ROLE) as a GGUF LoRA adapter on the model it was tuned from (BASE).

For every weight matrix llama.cpp applies adapters to (the attention and MLP projections, the output head and,
for untied models, the token embeddings), the truncated SVD of W_role - W_base becomes a lora_a / lora_b pair:
`--rank N` keeps N singular values, `--rank auto` the fewest that keep `energy` of the delta's squared
Frobenius norm (per matrix, at most `max_rank`). Matrices are read one at a time from both checkpoints' mmaps
(pages dropped after each); the factors, rank × (rows + cols) values per matrix, stay in memory until written.
The SVD is exact below `EXACT_DIM` and randomized above it (a range finder with power iterations).

Tensors an adapter cannot carry are reported with how much they differ, never dropped silently: llama.cpp
ignores norms in adapters, and on a model with tied embeddings a token_embd pair would also be applied to the
output head. `agreement()` then measures, on prompts in the role's own α-UMi format, how often base + adapter
predicts the full role's next token (top-1) and the KL divergence between the two distributions.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from umi_edge.errors import ConvertError

from .output import check_output, checkpoint_files, temp_beside
from .tensor_ref import Mmaps, to_float32

log = logging.getLogger(__name__)

EXACT_DIM = 1024          # full SVD below this smaller dimension; randomized above (much faster there)
OVERSAMPLE, POWER_ITERS = 10, 3
_HPARAMS = ("n_layer", "n_embd", "n_head", "n_head_kv", "n_ff", "n_vocab", "head_dim")


@dataclass
class Factor:
    name: str                 # GGUF tensor name, e.g. blk.0.attn_q.weight
    a: np.ndarray             # lora_a as written: (rank, n_in), or (vocab, rank) for token_embd
    b: np.ndarray             # lora_b: (n_out, rank), or (hidden, rank) for token_embd
    rank: int
    energy: float             # fraction of ||delta||_F^2 the factors keep
    rel_error: float          # ||delta - b a||_F / ||delta||_F


@dataclass
class DeltaReport:
    factors: list[Factor] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_carried: list[dict] = field(default_factory=list)    # {"tensor", "why", "max_abs_diff", "rel_diff"}


def low_rank(delta: np.ndarray, *, rank: int | None, energy: float, max_rank: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U_k * S_k, V_k^T, all singular values found) of `delta`, k = `rank`, or with rank None the fewest that
    keep `energy` of the squared norm (capped at max_rank). Exact SVD when the smaller side is below
    EXACT_DIM, else randomized (Halko et al. 2011: Gaussian range finder, power iterations, QR each time)."""
    m, n = delta.shape
    cap = min(m, n, rank if rank is not None else max_rank)
    if min(m, n) <= EXACT_DIM or cap + OVERSAMPLE >= min(m, n):
        u, s, vt = np.linalg.svd(delta, full_matrices=False)
    else:
        k = cap + OVERSAMPLE
        q, _ = np.linalg.qr(delta @ rng.standard_normal((n, k), dtype=np.float32))
        for _ in range(POWER_ITERS):
            q, _ = np.linalg.qr(delta.T @ q)
            q, _ = np.linalg.qr(delta @ q)
        ub, s, vt = np.linalg.svd(q.T @ delta, full_matrices=False)
        u = q @ ub
    total = float(np.sum(np.square(delta, dtype=np.float64)))
    if rank is None:
        kept = np.cumsum(s.astype(np.float64) ** 2) / max(total, 1e-300)
        k = int(np.searchsorted(kept, energy - 1e-12) + 1)
        rank = min(k, cap)
    rank = max(1, min(rank, cap, len(s)))
    return u[:, :rank] * s[:rank], vt[:rank], s


def _check_pair(role_arch, base_arch, role_dir: Path, base_dir: Path) -> None:
    if type(role_arch) is not type(base_arch):
        raise ConvertError(f"{role_dir} is {role_arch.hf_arch} but {base_dir} is {base_arch.hf_arch}; "
                           f"--delta-from needs the model ROLE was fine-tuned from")
    for k in _HPARAMS:
        if getattr(role_arch, k) != getattr(base_arch, k):
            raise ConvertError(f"{role_dir} and {base_dir} differ in {k} ({getattr(role_arch, k)} vs "
                               f"{getattr(base_arch, k)}); --delta-from needs the model ROLE was fine-tuned from")


def extract(role_src, base_src, *, rank: int | str = "auto", energy: float = 0.9, max_rank: int = 256,
            seed: int = 0, progress=lambda s: None) -> tuple[DeltaReport, dict]:
    """Every factor of ROLE - BASE (see the module docstring); returns (report, context for writing)."""
    from .archs import get_arch
    from .pipeline import load_config, plan_tensors
    from .readers import index_tensors
    from .source import resolve

    if rank != "auto" and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ConvertError(f"--rank must be a positive integer or 'auto', not {rank!r}")
    if not 0 < energy <= 1:
        raise ConvertError(f"--energy must be in (0, 1], not {energy!r}")
    role_dir, role_label = resolve(role_src, None, progress=False)
    base_dir, base_label = resolve(base_src, None, progress=False)
    role_arch, base_arch = get_arch(load_config(role_dir)), get_arch(load_config(base_dir))
    _check_pair(role_arch, base_arch, role_dir, base_dir)
    _, role_refs, role_files = index_tensors(role_dir)
    _, base_refs, base_files = index_tensors(base_dir)
    role_keep, _ = plan_tensors(role_arch, role_refs, role_dir)
    base_keep = dict(plan_tensors(base_arch, base_refs, base_dir)[0])
    missing = [n for n, _ in role_keep if n not in base_keep]
    if missing:
        raise ConvertError(f"{base_dir}: lacks {', '.join(missing[:3])} that {role_dir} has; "
                           f"--delta-from needs the model ROLE was fine-tuned from")
    rng = np.random.default_rng(seed)
    want = None if rank == "auto" else int(rank)
    report = DeltaReport()
    with Mmaps() as maps:
        for i, (hf_name, ref) in enumerate(role_keep):
            name = role_arch.tensor_name(hf_name)
            bref = base_keep[hf_name]
            a = to_float32(np.asarray(maps.array(ref)), ref.dtype)
            b = to_float32(np.asarray(maps.array(bref)), bref.dtype)
            delta = a - b
            del a, b
            maps.release(ref)
            maps.release(bref)
            if not delta.any():
                report.unchanged.append(name)
                continue
            norm = float(np.sqrt(np.sum(np.square(delta, dtype=np.float64))))
            max_abs = float(np.abs(delta).max())
            if delta.ndim != 2 or not name.endswith(".weight"):
                report.not_carried.append({"tensor": name, "why": "llama.cpp adapters carry only weight matrices "
                                           "(norms and biases keep the base's values)", "max_abs_diff": max_abs,
                                           "rel_diff": norm / max(_norm(maps, bref), 1e-30)})
                continue
            embedding = name == "token_embd.weight"
            if embedding and role_arch.tied:
                report.not_carried.append({"tensor": name, "why": "tied embeddings: llama.cpp would apply a "
                                           "token_embd pair to the output head too", "max_abs_diff": max_abs,
                                           "rel_diff": norm / max(_norm(maps, bref), 1e-30)})
                continue
            if not embedding:
                delta = role_arch.transform(hf_name, delta)       # llama.cpp's row order (q/k rope layout)
            us, vt, _s = low_rank(np.ascontiguousarray(delta, dtype=np.float32), rank=want, energy=energy,
                                  max_rank=max_rank, rng=rng)
            r = us.shape[1]
            err = float(np.sqrt(np.sum(np.square(delta - us @ vt, dtype=np.float64)))) / norm
            kept = max(0.0, 1.0 - err * err)
            # llama.cpp computes x @ a^T @ b^T; for token_embd it looks rows of a up by token and multiplies by b
            lora_a, lora_b = (us, vt.T) if embedding else (vt, us)
            report.factors.append(Factor(name, np.ascontiguousarray(lora_a), np.ascontiguousarray(lora_b), r,
                                         kept, err))
            if i % 16 == 0:
                progress(f"delta: {i + 1}/{len(role_keep)} tensors")
    ctx = {"role_dir": role_dir, "base_dir": base_dir, "role_label": role_label, "base_label": base_label,
           "arch": role_arch, "files": role_files + base_files}
    return report, ctx


def _norm(maps: Mmaps, ref) -> float:
    x = to_float32(np.asarray(maps.array(ref)), ref.dtype)
    maps.release(ref)
    return float(np.sqrt(np.sum(np.square(x, dtype=np.float64))))


def convert_delta(role_src, base_src, out, *, rank: int | str = "auto", energy: float = 0.9, max_rank: int = 256,
                  outtype: str = "f16", role: str | None = None, force: bool = False, calibrate: bool = True,
                  progress=lambda s: None) -> dict:
    """Write ROLE - BASE as the GGUF LoRA adapter OUT; returns the summary the CLI prints (ranks, energy kept,
    sizes, tensors not carried, and with `calibrate` the agreement measured against the full role)."""
    import gguf

    t0 = time.perf_counter()
    if outtype not in ("f16", "f32"):
        raise ConvertError(f"--outtype {outtype!r}: a delta adapter is written as f16 or f32")
    out = Path(out).expanduser()
    check_output(out, force)
    report, ctx = extract(role_src, base_src, rank=rank, energy=energy, max_rank=max_rank, progress=progress)
    check_output(out, force, checkpoint_files(ctx["role_dir"], extra=ctx["files"]))
    if not report.factors:
        raise ConvertError(f"{ctx['role_dir']}: no weight matrix differs from {ctx['base_dir']}; nothing to extract")
    arch = ctx["arch"]
    dtype = np.float16 if outtype == "f16" else np.float32
    r_max = max(f.rank for f in report.factors)
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch.gguf_arch])
    for f in report.factors:
        # llama.cpp scales each pair by alpha / its own rank: with alpha = the largest rank, lora_b carries r / alpha
        f.b = f.b * np.float32(f.rank / r_max)
        writer.add_tensor_info(f.name + ".lora_a", f.a.shape, np.dtype(dtype), f.a.size * np.dtype(dtype).itemsize)
        writer.add_tensor_info(f.name + ".lora_b", f.b.shape, np.dtype(dtype), f.b.size * np.dtype(dtype).itemsize)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(r_max))
    if role:
        from .pipeline import PROTOCOLS

        writer.add_string("umi.role", role)
        writer.add_string("umi.protocol", PROTOCOLS[role])
    writer.add_string("umi.source", ctx["role_label"])
    writer.add_string("umi.delta_from", ctx["base_label"])
    from umi_edge import __version__

    writer.add_string("umi.converter", f"umi-edge {__version__}")
    tmp = temp_beside(out)
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for f in report.factors:
            writer.write_tensor_data(f.a.astype(dtype))
            writer.write_tensor_data(f.b.astype(dtype))
        writer.close()
        os.replace(tmp, out)
    except OSError as e:
        raise ConvertError(f"{out}: write failed ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)
    ranks = sorted(f.rank for f in report.factors)
    sq = [(f.energy, f.a.size + f.b.size) for f in report.factors]
    summary = {
        "output": str(out), "kind": "delta-lora", "source": ctx["role_label"], "base": ctx["base_label"],
        "architecture": gguf.MODEL_ARCH_NAMES[arch.gguf_arch], "outtype": outtype, "pairs": len(report.factors),
        "rank": "auto" if rank == "auto" else int(rank), "energy_target": energy if rank == "auto" else None,
        "ranks": {"min": ranks[0], "median": ranks[len(ranks) // 2], "max": ranks[-1]},
        "energy_kept_min": round(min(e for e, _ in sq), 6),
        "rel_error_max": round(max(f.rel_error for f in report.factors), 6),
        "unchanged": report.unchanged, "not_carried": report.not_carried,
        "size_bytes": out.stat().st_size, "role": role,
    }
    if calibrate:
        progress("delta: measuring agreement with the full role")
        summary["agreement"] = agreement(ctx["role_dir"], ctx["base_dir"], out, role=role or "planner")
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def calibration_prompts(role: str) -> list:
    """α-UMi prompts for `role` over the demo tools, from the demo task suite's first queries (as Prompts)."""
    import json
    from importlib import resources

    from umi_edge.protocol import Turn, get_protocol
    from umi_edge.tools.demo import TOOLS

    proto = get_protocol("alpha-umi/toolbench-v1")
    docs = TOOLS.docs(proto.doc_chars)
    lines = resources.files("umi_edge").joinpath("data/tasks/demo.jsonl").read_text().splitlines()
    queries = [json.loads(x)["query"] for x in lines[:4] if x.strip()]
    out = []
    for q in queries:
        history = [Turn("user", q)]
        plan = "I should use the calculator first. Next: caller."
        out.append({"planner": lambda: proto.planner_prompt(docs, history),
                    "caller": lambda: proto.caller_prompt(docs, history, plan),
                    "summarizer": lambda: proto.summarizer_prompt(history, "I have the answer. Next: conclusion."),
                    "backbone": lambda: proto.planner_prompt(docs, history)}[role]())
    return out


def agreement(role_dir: Path, base_dir: Path, adapter: Path, *, role: str = "planner", tokens: int = 8) -> dict:
    """Top-1 agreement and mean KL(full role || base + adapter) over every position of the full role's greedy
    continuation of each calibration prompt (the prompt's last position and `tokens` more), with base alone
    beside it as the reference. Both checkpoints are converted to f32 GGUF in a temporary folder first."""
    import tempfile

    from umi_edge.engine.llama import LlamaBackend
    from umi_edge.protocol import get_protocol

    from .pipeline import convert

    proto = get_protocol("alpha-umi/toolbench-v1")
    with tempfile.TemporaryDirectory(prefix="umi-delta-") as tmp:
        paths = {}
        for name, folder in (("role", role_dir), ("base", base_dir)):
            paths[name] = Path(tmp) / f"{name}.gguf"
            convert(folder, paths[name], outtype="f32", progress=False)
        with LlamaBackend() as be:
            full_m, base_m = be.load_model(paths["role"]), be.load_model(paths["base"])
            lora = be.load_adapter(base_m, adapter)
            from umi_edge.engine.kv import model_shape

            n_ctx = min(4096, model_shape(full_m).n_ctx_train or 4096)
            full = be.new_role(full_m, name="full", n_ctx=n_ctx, n_threads=1)
            ext = be.new_role(base_m, name="extracted", adapter=lora, n_ctx=n_ctx, n_threads=1)
            plain = be.new_role(base_m, name="base", n_ctx=n_ctx, n_threads=1)
            stats = {"extracted": [], "base": []}
            skipped = used = 0
            for prompt in calibration_prompts(role):
                ids = proto.encode(prompt, full.tokenize, full.bos_id, full.eos_id)
                if len(ids) + tokens + 8 > n_ctx:
                    skipped += 1        # longer than the model's context: not a prompt it would be given
                    continue
                used += 1
                cont = list(full.generate(ids, max_tokens=tokens).tokens)
                for j in range(len(cont) + 1):
                    seq = ids + cont[:j]
                    full.generate(seq, max_tokens=0)
                    p = full.last_logits()
                    for key, eng in (("extracted", ext), ("base", plain)):
                        eng.generate(seq, max_tokens=0)
                        stats[key].append(_compare(p, eng.last_logits()))
    if not stats["base"]:
        raise ConvertError(f"every calibration prompt is longer than the model's context ({n_ctx} tokens)")
    out = {key: {"positions": len(v), "top1": round(float(np.mean([t for t, _ in v])), 4),
                 "kl_mean": round(float(np.mean([k for _, k in v])), 6)} for key, v in stats.items()}
    out["prompts"], out["prompts_skipped"] = used, skipped
    return out


def _compare(p_logits: np.ndarray, q_logits: np.ndarray) -> tuple[float, float]:
    """(top-1 equal, KL(p || q)) of two logit vectors."""
    lp = p_logits.astype(np.float64) - np.logaddexp.reduce(p_logits.astype(np.float64))
    lq = q_logits.astype(np.float64) - np.logaddexp.reduce(q_logits.astype(np.float64))
    return float(np.argmax(p_logits) == np.argmax(q_logits)), float(np.sum(np.exp(lp) * (lp - lq)))
