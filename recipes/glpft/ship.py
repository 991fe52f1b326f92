"""Ship a trained GLPFT team as the package default: one GGUF LoRA per role (stage 1 + stage 2 in one adapter),
stage 1 alone as the trunk adapter (the planner's and caller's shared prompt head runs under it), and the
single-model baseline's adapter (set `single`).

Converts `out/peft/{planner,caller,summarizer,stage1,baseline}` (written by train.py) to
`umi_edge/adapters/{planner,caller,summarizer,trunk,backbone}.gguf` at
`--outtype` (f16 by default: q8_0 halves the size but moved the logits by up to 1.8, see README.md) and
prints each file's sha256 and size for models.toml.

Shipping stage 1 once and only each role's stage-2 half, stacked on it in every role (`--split DIR` rewrites
whole role adapters that way, checking each against trunk.gguf), needs 14 MB less (team ÷ one Llama 1.168 vs
1.237, `umi-edge bench --only memory`), but llama.cpp adds two stacked adapters in another order than one
concatenated adapter, and float rounding moved 2 of 86 task outcomes (demo 44 → 45, heldout 28 → 27 of 31;
recipes/glpft/results/grounded/), so each role ships whole.

    python recipes/glpft/ship.py [--out recipes/glpft/out] [--dest umi_edge/adapters] [--outtype f16] [--force]
                                 [--only planner,caller,summarizer,trunk]
    python recipes/glpft/ship.py --split DIR    # DIR's whole role adapters → stage-2 halves on DIR/trunk.gguf
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


def split_stage2(role_path: Path, trunk_path: Path, dest: Path) -> dict:
    """Write the stage-2 half of a whole role adapter (stage 1 + stage 2 concatenated by train.combine: the
    first r ranks are stage 1, already scaled) to `dest`, after checking those r ranks are the trunk adapter's.
    The half gets alpha = its rank (scale 1), as the whole had."""
    import gguf
    import numpy as np

    if not Path(trunk_path).is_file():
        raise train.RecipeError(f"{trunk_path} is missing; ship the trunk with the roles (--only ...,trunk)")
    trunk_file, whole = gguf.GGUFReader(trunk_path), gguf.GGUFReader(role_path)
    t_field = trunk_file.get_field("adapter.lora.alpha")
    if whole.get_field("adapter.lora.alpha") is None or t_field is None:
        raise train.RecipeError(f"{role_path} or {trunk_path} is not a LoRA adapter (no adapter.lora.alpha)")
    t_alpha = float(t_field.contents())
    trunk = {t.name: np.array(t.data, dtype=np.float32) for t in trunk_file.tensors}
    halves, ranks = {}, set()     # ranks: (trunk rank, stage-2 rank) of each lora_a
    for t in whole.tensors:
        a = np.array(t.data)
        if t.name not in trunk:
            raise train.RecipeError(f"{role_path}: {t.name} is not in the trunk adapter {trunk_path}")
        is_a = t.name.endswith(".lora_a")
        r = trunk[t.name].shape[0 if is_a else 1]
        head, tail = (a[:r], a[r:]) if is_a else (a[:, :r], a[:, r:])
        want = trunk[t.name] if is_a else trunk[t.name] * (t_alpha / r)
        if tail.size == 0 or not np.allclose(head.astype(np.float32), want, rtol=1e-3, atol=1e-6):
            raise train.RecipeError(f"{role_path}: {t.name} does not start with the trunk adapter's ranks; "
                                    "it is not a whole (stage 1 + stage 2) role adapter")
        if is_a:
            ranks.add((r, tail.shape[0]))
        halves[t.name] = np.ascontiguousarray(tail)
    if len(ranks) != 1:   # one alpha for the file: llama.cpp scales each pair by alpha / its rank
        raise train.RecipeError(f"{role_path}: its matrices have different ranks {sorted(ranks)}; only a "
                                "uniform-rank adapter is split")
    ((trunk_rank, tail_rank),) = ranks
    arch = whole.get_field("general.architecture").contents()
    name = whole.get_field("general.name")
    w = gguf.GGUFWriter(dest, arch=arch)
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    if name is not None:
        w.add_name(f"{name.contents()} (stage 2)")
    w.add_float32("adapter.lora.alpha", float(tail_rank))
    for key, array in halves.items():
        w.add_tensor(key, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"rank": tail_rank, "trunk_rank": trunk_rank, "size_bytes": dest.stat().st_size}


def split_shipped(folder: Path, roles=train.TEAM) -> dict:
    """Replace the whole role adapters in `folder` by their stage-2 halves (each checked against trunk.gguf)."""
    from umi_edge.fetch import sha256_file

    out = {}
    for role in roles:
        path = folder / f"{role}.gguf"
        tmp = path.with_suffix(".split.part")
        try:
            info = split_stage2(path, folder / "trunk.gguf", tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)
        out[role] = {**info, "path": str(path), "sha256": sha256_file(path)}
    return out


def main(argv: list[str] | None = None) -> int:
    from umi_edge.errors import ConvertError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "out"), help="train.py's output folder")
    ap.add_argument("--dest", default=str(ROOT / "umi_edge" / "adapters"))
    ap.add_argument("--outtype", default="f16", help="GGUF adapter type (f32, f16, bf16, q8_0)")
    ap.add_argument("--force", action="store_true", help="overwrite adapters already in --dest")
    ap.add_argument("--only", default="", help="a comma list of the adapters to ship (planner, caller, summarizer, "
                                                "trunk, backbone), e.g. the team before the baseline has finished")
    ap.add_argument("--split", default=None, metavar="DIR",
                    help="only rewrite DIR's whole role adapters as stage-2 halves on DIR/trunk.gguf")
    args = ap.parse_args(argv)
    try:
        if args.split:
            print(json.dumps(split_shipped(Path(args.split)), indent=2))
            return 0
        shipped = ship(Path(args.out), Path(args.dest), args.outtype, args.force,
                       [x for x in args.only.split(",") if x] or None)
    except (train.RecipeError, ConvertError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(shipped, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
