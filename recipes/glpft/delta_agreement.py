"""How closely each extracted delta follows the full model it came from, on the runtime's own weights: top-1
agreement and mean KL(full ‖ candidate) over the full model's greedy continuation of α-UMi planner and caller
prompts (the demo suite's first four queries, as `umi-edge convert --delta-from` calibrates), for the shipped
Q4_1 base + each adapter (what the delta sets run), the f32 base + each adapter (the extraction alone), and the
Q4_1 base alone.

    python recipes/glpft/delta_agreement.py /work/delta-out/135m [--tokens 16] [--json]

OUT is a folder written by full.py (gguf/full.*.gguf, gguf/delta-*.gguf, base-hf/).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def measure(out: Path, base_gguf: Path, tokens: int = 16) -> dict:
    import numpy as np

    from umi_convert.delta import _compare, calibration_prompts
    from umi_convert.pipeline import convert
    from umi_edge.engine.llama import LlamaBackend
    from umi_edge.protocol import get_protocol

    fulls = sorted((out / "gguf").glob("full.*.gguf"))
    deltas = sorted((out / "gguf").glob("delta-*.gguf"))
    if not fulls or not deltas:
        raise SystemExit(f"error: {out}/gguf has no full.*.gguf or delta-*.gguf; run recipes/glpft/full.py first")
    f32 = out / "base.f32.gguf"
    if not f32.is_file():
        convert(out / "base-hf", f32, outtype="f32", progress=False)
    proto = get_protocol("alpha-umi/toolbench-v1")
    with LlamaBackend() as be:
        fm, q4, bf = be.load_model(fulls[0]), be.load_model(base_gguf), be.load_model(f32)
        full = be.new_role(fm, name="full", n_ctx=2048, n_threads=1)
        engines = {"q4_1 base": be.new_role(q4, name="q4", n_ctx=2048, n_threads=1)}
        for d in deltas:
            for label, m in (("q4_1", q4), ("f32", bf)):
                engines[f"{label} base + {d.stem}"] = be.new_role(
                    m, name=f"{label}-{d.stem}", adapter=be.load_adapter(m, d), n_ctx=2048, n_threads=1)
        stats: dict = {k: [] for k in engines}
        for role in ("planner", "caller"):
            for prompt in calibration_prompts(role):
                ids = proto.encode(prompt, full.tokenize, full.bos_id, full.eos_id)
                cont = list(full.generate(ids, max_tokens=tokens).tokens)
                for j in range(len(cont) + 1):
                    seq = ids + cont[:j]
                    full.generate(seq, max_tokens=0)
                    p = full.last_logits()
                    for k, eng in engines.items():
                        eng.generate(seq, max_tokens=0)
                        stats[k].append(_compare(p, eng.last_logits()))
    return {"full": str(fulls[0]), "base": str(base_gguf), "tokens": tokens,
            "candidates": {k: {"positions": len(v), "top1": round(float(np.mean([t for t, _ in v])), 4),
                               "kl_mean": round(float(np.mean([x for _, x in v])), 5)} for k, v in stats.items()}}


def main(argv: list[str] | None = None) -> int:
    import train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the folder full.py wrote")
    ap.add_argument("--base-gguf", default=None, help="the shipped base GGUF (default: the registry model)")
    ap.add_argument("--tokens", type=int, default=16, help="greedy continuation length per prompt")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    base = train.base_gguf({"base": {"model": "smollm2-135m-instruct"}}, args.base_gguf)
    res = measure(Path(args.out), base, args.tokens)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res["candidates"].items():
            print(f"{k:28s} top-1 {v['top1'] * 100:5.1f} %  KL {v['kl_mean']:.4f}  ({v['positions']} positions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
