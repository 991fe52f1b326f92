"""Ship a trained GLPFT team as the package default: one GGUF LoRA per role (stage 1 + stage 2 in one adapter),
stage 1 alone as the trunk adapter (the planner's and caller's shared prompt head runs under it), and the
single-model baseline's adapter (set `single`).

Converts `out/peft/{planner,caller,summarizer,stage1,baseline}` (written by train.py) to
`umi_edge/adapters/{planner,caller,summarizer,trunk,backbone}.gguf` at
`--outtype` (f16 by default: q8_0 halves the size but moved the logits by up to 1.8, see README.md) and
prints each file's sha256 and size for models.toml.

Shipping stage 1 once and only each role's stage-2 half (stacked on the role's context) would store a third
less, but llama.cpp 0.3.36 did not add two stacked adapters up to their concatenation on the Q4_1 SmolLM2 base
(max logit difference 0.59 with LoRA on attn_q alone; exact on a float32 tiny model), so each role ships whole.

    python recipes/glpft/ship.py [--out recipes/glpft/out] [--dest umi_edge/adapters] [--outtype f16] [--force]
                                 [--only planner,caller,summarizer,trunk]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import train  # noqa: E402

ROOT = HERE.parents[1]


def ship(out: Path, dest: Path, outtype: str, force: bool, only: list[str] | None = None) -> dict:
    from umi_convert.lora import convert_lora
    from umi_edge.fetch import sha256_file

    base_dir = out / "base_config"
    # the three role adapters, stage 1 as the trunk adapter, and the single-model baseline's (set `single`)
    files = {**{role: role for role in train.TEAM}, "stage1": "trunk", "baseline": "backbone"}
    if only:
        unknown = set(only) - set(files.values())
        if unknown:
            raise train.RecipeError(f"--only {','.join(sorted(unknown))}: expected some of {', '.join(files.values())}")
        files = {name: role for name, role in files.items() if role in only}
    for need in (base_dir / "config.json", *(out / "peft" / r for r in files)):
        if not Path(need).exists():
            raise train.RecipeError(f"{need} is missing; run recipes/glpft/train.py first")
    dest.mkdir(parents=True, exist_ok=True)
    shipped = {}
    for name, role in files.items():
        path = dest / f"{role}.gguf"
        info = convert_lora(out / "peft" / name, path, base=base_dir, outtype=outtype, force=force,
                            role=role if role in train.TEAM else None)
        shipped[role] = {"path": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                         "sha256": sha256_file(path), "size_bytes": info["size_bytes"], "rank": info["rank"]}
    return shipped


def main(argv: list[str] | None = None) -> int:
    from umi_edge.errors import ConvertError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "out"), help="train.py's output folder")
    ap.add_argument("--dest", default=str(ROOT / "umi_edge" / "adapters"))
    ap.add_argument("--outtype", default="f16", help="GGUF adapter type (f32, f16, bf16, q8_0)")
    ap.add_argument("--force", action="store_true", help="overwrite adapters already in --dest")
    ap.add_argument("--only", default="", help="a comma list of the adapters to ship (planner, caller, summarizer, "
                                                "trunk, backbone), e.g. the team before the baseline has finished")
    args = ap.parse_args(argv)
    try:
        shipped = ship(Path(args.out), Path(args.dest), args.outtype, args.force,
                       [x for x in args.only.split(",") if x] or None)
    except (train.RecipeError, ConvertError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(shipped, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
