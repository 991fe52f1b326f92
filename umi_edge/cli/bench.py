"""`umi-edge bench` and its subcommands: measurements side by side, as ratios."""
from __future__ import annotations

import os

import click

from ..engine.context import MIN_N_CTX
from . import _Group, cli, emit_json


@cli.group("bench", cls=_Group, invoke_without_command=True)
@click.option("--set", "set_name", metavar="NAME", default="default", show_default=True,
              help="Model set from models.toml to measure.")
@click.option("--models", "models_path", type=click.Path(dir_okay=False), default=None,
              help="A models.toml overlaid on the bundled one.")
@click.option("--n-ctx", type=click.IntRange(min=MIN_N_CTX), default=2048, show_default=True,
              help="Context size of every role and every baseline llama_cpp.Llama.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for both sides (default: the engine's, half the cores for decoding).")
@click.option("--tokens", type=click.IntRange(min=2), default=128, show_default=True,
              help="Greedy tokens per timed decode run.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved A B pairs per timed figure (decode, constrained).")
@click.option("--slow-repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Prefill replays and cold starts (medians).")
@click.option("--only", "sections", metavar="SECTION[,...]", default=None,
              help="Measure only these: decode, constrained, prefill, memory, cold_start, warm_start (machine always).")
@click.option("--bandwidth-mb", type=click.IntRange(min=1), default=512, show_default=True,
              help="Array size of the memory read-bandwidth probe.")
@click.option("--kv-layout", "kv_layouts", metavar="LAYOUT[,...]", default=None,
              help="Also measure memory and prefill with the set's roles in these KV layouts (contexts, pool).")
@click.option("--scale", type=click.Choice(["7b"]), default=None,
              help="Instead: peak RSS and speed of each team layout on a random-weight model of this shape "
                   "(n_ctx 4096; the GGUF is written once into the cache, 3.5 GiB for 7b).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.pass_context
def bench_cmd(ctx, set_name, models_path, n_ctx, threads, tokens, repeats, slow_repeats, sections, bandwidth_mb,
              as_json, kv_layouts=None, scale=None):
    """Measure a model set side by side with stock llama-cpp-python: memory, prefix reuse, decode speed,
    constrained decoding and cold start, as ratios (progress on stderr, the table or JSON on stdout)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..bench import SECTIONS, BenchConfig, run_bench
    from ..bench.render import table

    if scale is not None:
        from ..bench.scale import run_scale, scale_table

        report = run_scale(scale, threads=threads, progress=lambda s: click.echo(f"bench: {s}", err=True))
        if as_json:
            emit_json(report)
        else:
            click.echo(scale_table(report))
        return
    chosen = tuple(s.strip() for s in sections.split(",") if s.strip()) if sections else SECTIONS
    layouts = tuple(x.strip() for x in kv_layouts.split(",") if x.strip()) if kv_layouts else ()
    from ..layout import LAYOUTS

    if any(x not in LAYOUTS for x in layouts):
        raise click.BadParameter(f"{kv_layouts!r}: valid layouts are {', '.join(LAYOUTS)}", param_hint="--kv-layout")
    config = BenchConfig(set=set_name, models=models_path, n_ctx=n_ctx, threads=threads, tokens=tokens,
                         repeats=repeats, slow_repeats=slow_repeats, bandwidth_mb=bandwidth_mb, sections=chosen,
                         kv_layouts=layouts)
    report = run_bench(config, progress=lambda s: click.echo(f"bench: {s}", err=True))
    if as_json:
        emit_json(report)
    else:
        click.echo(table(report))


@bench_cmd.command("convert")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.option("--outtype", default="q8_0", show_default=True, help="GGUF type both converters write.")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="llama.cpp's convert_hf_to_gguf.py (default: $UMI_EDGE_LLAMA_CPP_CONVERTER); it ships in "
                   "the llama-cpp-python sdist under vendor/llama.cpp/.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def bench_convert_cmd(src, outtype, reference, as_json):
    """Time and peak RSS of `umi-edge convert` on SRC (a local HF checkpoint folder), and of llama.cpp's
    converter when available, with ratios (ours ÷ llama.cpp)."""
    from umi_convert.bench import bench_convert

    from ..bench.render import convert_table

    result = bench_convert(src, outtype=outtype, reference=reference)
    if as_json:
        emit_json(result)
    else:
        click.echo(convert_table(result))


@bench_cmd.command("remote")
@click.option("--model", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The GGUF both sides run (default: the default set's model).")
@click.option("--llama-server", type=click.Path(dir_okay=False), default=None,
              help="llama.cpp's llama-server binary (default: $UMI_EDGE_LLAMA_SERVER, else llama-cpp-python's "
                   "server, which runs one request at a time).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads of the server and of the local role alike.")
@click.option("--jobs", default="1,2,4", show_default=True, help="eval tasks --jobs values (server slots: the max).")
@click.option("--tasks", default="demo", show_default=True, help="The eval suite of the throughput section.")
@click.option("--limit", type=click.IntRange(min=1), default=8, show_default=True, help="Tasks per throughput run.")
@click.option("--max-steps", type=click.IntRange(min=1), default=2, show_default=True, help="Planner turns per task.")
@click.option("--steps", type=click.IntRange(min=1), default=6, show_default=True,
              help="Planner steps replayed in the overhead section.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="A B passes of the overhead section (after one warm-up pass).")
@click.option("--only", "sections", metavar="SECTION[,...]", default=None, help="overhead, throughput.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
def bench_remote_cmd(model, llama_server, threads, jobs, tasks, limit, max_steps, steps, repeats, sections, as_json):
    """Remote roles on one machine: per-step overhead of a role on a server on 127.0.0.1 vs the same role local,
    and eval throughput (tasks/s) with --jobs 1/2/4 against one server, as ratios."""
    from ..bench.remote import RemoteBenchConfig, remote_table, run_remote_bench

    try:
        jobs_list = tuple(int(j) for j in jobs.split(",") if j.strip())
    except ValueError:
        raise click.BadParameter(f"{jobs!r} is not a comma-separated list of numbers", param_hint="--jobs") from None
    if not jobs_list or min(jobs_list) < 1:
        raise click.BadParameter("give one or more positive numbers", param_hint="--jobs")
    config = RemoteBenchConfig(
        model=model, llama_server=llama_server or os.environ.get("UMI_EDGE_LLAMA_SERVER") or None, threads=threads,
        jobs=jobs_list, tasks=tasks, limit=limit, max_steps=max_steps, steps=steps, repeats=repeats,
        sections=tuple(x.strip() for x in sections.split(",")) if sections else RemoteBenchConfig.sections)
    report = run_remote_bench(config, progress=lambda s: click.echo(f"bench remote: {s}", err=True))
    if as_json:
        emit_json(report)
    else:
        click.echo(remote_table(report))


@bench_cmd.command("serve")
@click.option("--set", "set_name", metavar="NAME", default="default", show_default=True, help="Model set to serve.")
@click.option("--models", "models_path", type=click.Path(dir_okay=False), default=None,
              help="A models.toml overlaid on the bundled one.")
@click.option("--tasks", "tasks_path", metavar="TASKS", default="demo", show_default=True,
              help="A JSONL task suite, or demo / heldout for the bundled ones.")
@click.option("--limit", type=click.IntRange(min=1), default=6, show_default=True, help="Tasks to run.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True, help="Rounds per task.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads per role.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def bench_serve_cmd(set_name, models_path, tasks_path, limit, repeats, threads, as_json):
    """Per-task latency through `umi-edge serve` (plain and streamed chat completions) ÷ the same tasks run
    in process with team.run, on one loaded team, side by side (progress on stderr)."""
    try:
        from ..bench.serve import ServeBenchConfig, bench_serve, table
        from ..serve.app import background  # noqa: F401  (the extra's packages, checked before anything loads)
    except ImportError as e:
        from ..serve import EXTRA_HINT

        raise click.ClickException(f"{EXTRA_HINT} ({e})") from None
    config = ServeBenchConfig(set=set_name, models=models_path, tasks=tasks_path, limit=limit, repeats=repeats,
                              threads=threads)
    report = bench_serve(config, progress=lambda s: click.echo(f"bench serve: {s}", err=True))
    if as_json:
        emit_json(report)
    else:
        click.echo(table(report))
