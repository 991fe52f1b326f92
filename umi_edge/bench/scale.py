"""`umi-edge bench --scale 7b`: peak RSS and speed of a team at a published model's size, on a random-weight GGUF
with Llama-2-7B's exact shapes (bench/shapes.py, written once into the cache), one layout per fresh process:

- single:    one stock `llama_cpp.Llama` at n_ctx 4096 (the baseline, its defaults: the model mmapped)
- single_read: the same with use_mmap=False, which is how umi-edge loads a model whose weights llama.cpp's CPU
             backend repacks (engine/llama.py): the layouts compared with the same weight memory
- published: the published α-UMi layout, three full models with three contexts (three stock Llamas; here the
             same file three times, so RSS counts each mapping as three distinct files would)
- contexts:  one base + the default set's adapters (planner, caller, summarizer, trunk) in today's layout
             (planner + caller on one context, the summarizer on its own)
- pool:      the same in one context, a sequence per role (kv_layout = "pool")

A layout whose memory (from the shape's formulas) does not fit in what is available now is not run; its row
gives the formula's figure, marked as an estimate. 13B is always a paper estimate from the same formulas, with
the per-context and per-process overheads measured at 7B.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

LAYOUTS = ("single", "single_read", "published", "contexts", "pool")
MiB = 1 << 20
# before anything is measured: a stock Llama's compute + output buffers, one of our contexts' (n_ubatch 64, one
# output row) and the Python process; replaced by what the 7B rows imply once measured
DEFAULT_OVERHEAD = {"llama": 400 * MiB, "ctx": 60 * MiB, "process": 150 * MiB}


def estimate(shape, layout: str, n_ctx: int, overhead: dict, *, repack: bool) -> dict:
    """{"rss": bytes a process's RSS reaches, "physical": bytes the machine needs} for `layout` of `shape`.
    `repack`: llama.cpp's CPU backend keeps its own repacked copy of the weights, so an mmapped model (a stock
    Llama's default) holds them twice; umi-edge then reads the model instead of mapping it (engine/llama.py)."""
    from .shapes import ROLE_RANKS

    W, KV = shape.weight_bytes(), shape.kv_bytes(n_ctx)
    R = W if repack else 0
    A = sum(shape.adapter_bytes(r) for r in ROLE_RANKS.values())
    ll, ctx, proc = overhead["llama"], overhead["ctx"], overhead["process"]
    if layout == "single":
        rss = phys = W + R + KV + ll + proc
    elif layout == "single_read":
        rss = phys = W + KV + ll + proc
    elif layout == "published":
        rss, phys = 3 * (W + R + KV + ll) + proc, W + 3 * (R + KV + ll) + proc   # one file mapped three times here
    elif layout == "contexts":
        rss = phys = W + A + 2 * (KV + ctx) + proc
    else:
        rss = phys = W + A + KV + ctx + proc
    return {"rss": int(rss), "physical": int(phys)}


def _set_toml(files: dict, n_ctx: int, n_gpu_layers: int = 0) -> str:
    roles = ('planner = {{ adapter = "{planner}", trunk_adapter = "{trunk}" }}\n'
             'caller = {{ adapter = "{caller}", share_context = "planner" }}\n'
             'summarizer = {{ adapter = "{summarizer}" }}\n').format(**{k: str(v) for k, v in files.items()})
    text = f'[models.scale]\npath = "{files["model"]}"\n'
    for layout in ("contexts", "pool"):
        text += (f'[sets.scale-{layout}]\nmodel = "scale"\nn_ctx = {n_ctx}\nmax_tokens = 64\n'
                 f'kv_layout = "{layout}"\nn_gpu_layers = {n_gpu_layers}\n{roles}')
    return text


def run_scale(name="7b", *, n_ctx: int = 4096, threads: int | None = None, prompt_tokens: int = 32,
              decode_tokens: int = 8, layouts=LAYOUTS, root: Path | None = None, n_gpu_layers: int = 0,
              progress: Callable[[str], None] = lambda s: None) -> dict:
    from ..engine.kv import available_memory
    from ..fetch import home
    from .shapes import SHAPES, cached_files

    from ..engine.llama import _extra_bufts_default, _repacked

    shape = SHAPES[name] if isinstance(name, str) else name     # a Shape: tests use tiny ones
    name = name if isinstance(name, str) else shape.name
    files = cached_files(shape, Path(root) if root else home() / "shapes", progress=progress)
    repack = not n_gpu_layers and _extra_bufts_default() and _repacked(files["model"])
    if threads is None:
        from ..engine.llama import _default_threads

        threads = _default_threads()[0]     # both sides: the stock Llama would otherwise batch on every core
    report: dict = {"shape": {k: getattr(shape, k) for k in shape.__dataclass_fields__}, "n_ctx": n_ctx,
                    "files_mb": {k: round(v.stat().st_size / MiB, 1) for k, v in files.items()},
                    "prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens, "threads": threads,
                    "cpu_repack": bool(repack), "layouts": {}}
    overhead = dict(DEFAULT_OVERHEAD)
    with tempfile.TemporaryDirectory(prefix="umi-scale-") as tmp:
        models = Path(tmp) / "models.toml"
        models.write_text(_set_toml(files, n_ctx, n_gpu_layers))
        args = {"model": str(files["model"]), "models": str(models), "n_ctx": n_ctx, "threads": threads,
                "prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens, "n_gpu_layers": n_gpu_layers}
        report["n_gpu_layers"] = n_gpu_layers
        for layout in layouts:
            est = estimate(shape, layout, n_ctx, overhead, repack=repack)
            avail = available_memory()
            row: dict = {"estimate_rss_mb": round(est["rss"] / MiB),
                         "estimate_physical_mb": round(est["physical"] / MiB),
                         "available_mb": None if avail is None else round(avail / MiB)}
            margin = max(2 << 30, est["physical"] // 4)    # the machine's other jobs keep some headroom
            if avail is not None and est["physical"] + margin > avail and not n_gpu_layers:
                row["measured"] = False
                row["why"] = (f"needs about {est['physical'] / 2**30:.1f} GiB + {margin / 2**30:.1f} GiB margin, "
                              f"{avail / 2**30:.1f} GiB available")
                progress(f"{name} {layout}: not run ({row['why']}); formula estimate {row['estimate_rss_mb']} MB")
            else:
                progress(f"{name} {layout}: measuring in a child process")
                row.update(_child(layout, args))
                row["measured"] = True
                progress(f"{name} {layout}: peak RSS {row['peak_rss_mb']} MB, prompt {row['prompt_tok_s']} tok/s, "
                         f"decode {row['decode_tok_s']} tok/s")
            report["layouts"][layout] = row
            overhead = _overheads(shape, n_ctx, report["layouts"], overhead, repack)
    report["overhead_mb"] = {k: round(v / MiB, 1) for k, v in overhead.items()}
    _ratios(report)
    report["estimate_13b"] = _paper(SHAPES["13b"], n_ctx, overhead, repack)
    report[f"estimate_{name}"] = _paper(shape, n_ctx, overhead, repack)
    return report


def _overheads(shape, n_ctx: int, rows: dict, overhead: dict, repack: bool) -> dict:
    """Per-instance overheads implied by the measured rows (what the formulas cannot know: buffers, Python)."""
    from .shapes import ROLE_RANKS

    W, KV = shape.weight_bytes(), shape.kv_bytes(n_ctx)
    A = sum(shape.adapter_bytes(r) for r in ROLE_RANKS.values())
    got = {k: r["peak_rss_mb"] * MiB for k, r in rows.items() if r.get("measured")}
    out = dict(overhead)
    if "contexts" in got and "pool" in got:
        out["ctx"] = max(got["contexts"] - got["pool"] - KV, 0)
    if "pool" in got:
        out["process"] = max(got["pool"] - W - A - KV - out["ctx"], 0)
    if "single_read" in got:
        out["llama"] = max(got["single_read"] - W - KV - out["process"], 0)
    elif "single" in got:
        out["llama"] = max(got["single"] - W * (2 if repack else 1) - KV - out["process"], 0)
    return out


def _ratios(report: dict) -> None:
    rows = report["layouts"]
    base = rows.get("single", {})

    def rss_of(row):
        return row.get("peak_rss_mb") if row.get("measured") else row.get("estimate_rss_mb")

    for layout, row in rows.items():
        rss, ref, read = rss_of(row), rss_of(base), rss_of(rows.get("single_read", {}))
        row["rss_vs_single"] = round(rss / ref, 4) if ref else None
        # the same weight memory on both sides: only the layout differs
        row["rss_vs_single_read"] = round(rss / read, 4) if read else None
        row["rss_vs_single_is_estimate"] = not (row.get("measured") and base.get("measured"))
        for k in ("prompt_tok_s", "decode_tok_s"):
            if row.get(k) and base.get(k):
                row[k.replace("_tok_s", "_vs_single")] = round(row[k] / base[k], 4)


def _paper(shape, n_ctx: int, overhead: dict, repack: bool) -> dict:
    """RSS (MB) of every layout from the shape's byte counts and the overheads, and the ratios to one Llama."""
    est = {layout: estimate(shape, layout, n_ctx, overhead, repack=repack)["rss"] / MiB for layout in LAYOUTS}
    # the published three models each read rather than mapped: the same weight memory as single_read's
    est["published_read"] = estimate(shape, "published", n_ctx, overhead, repack=False)["rss"] / MiB
    return {"weights_mb": round(shape.weight_bytes() / MiB), "kv_per_context_mb": round(shape.kv_bytes(n_ctx) / MiB),
            **{f"{k}_mb": round(v) for k, v in est.items()},
            **{f"{k}_vs_single": round(v / est["single"], 4) for k, v in est.items() if k != "single"},
            **{f"{k}_vs_single_read": round(v / est["single_read"], 4) for k in ("pool", "contexts", "published_read")
               for v in (est[k],)}}


def _child(layout: str, args: dict, *, timeout: float = 1800) -> dict:
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "umi_edge.bench.scale", layout, json.dumps(args)],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1]
        raise RuntimeError(f"scale workload {layout!r} failed: {tail}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["seconds"] = round(time.time() - t0, 1)
    return out


# -- the child side ------------------------------------------------------------------------------------------

def _prompt(n: int) -> str:
    return " ".join(["the tool docs say"] * n)


def _stock(args: dict, copies: int, use_mmap: bool = True) -> dict:
    from .baseline import stock_llama

    threads = (args["threads"], args["threads"]) if args["threads"] else None
    llms = [stock_llama(args["model"], n_ctx=args["n_ctx"], threads=threads, n_gpu_layers=args.get("n_gpu_layers", 0),
                        use_mmap=use_mmap) for _ in range(copies)]
    speed = {}
    for i, llm in enumerate(llms):
        ids = llm.tokenize(_prompt(args["prompt_tokens"]).encode(), add_bos=True)[:args["prompt_tokens"]]
        llm.eval(ids[:2])     # warm-up (first-call allocations), as the team side gets
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        t_prompt = time.perf_counter() - t
        n = args["decode_tokens"] if i == 0 else 2
        gen = llm.generate(ids, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
        next(gen)     # the prompt is cached: its last token again, and the first sample
        t = time.perf_counter()
        for _ in zip(range(n - 1), gen):
            pass
        if i == 0:
            speed = {"prompt_tok_s": round(len(ids) / t_prompt, 3),
                     "decode_tok_s": round((n - 1) / (time.perf_counter() - t), 3)}
    return {**speed, "instances": copies, **_gpu_used(args)}


def _team(args: dict, layout: str) -> dict:
    from ..team import Team

    with Team.load(f"scale-{layout}", models=args["models"], threads=args["threads"], prefix_cache=False) as team:
        speed = {}
        for role, engine in team.roles.items():
            ids = ([engine.bos_id] + engine.tokenize(_prompt(args["prompt_tokens"])))[:args["prompt_tokens"]]
            n = args["decode_tokens"] if role == "planner" else 2
            engine.generate(ids[:2], max_tokens=1)      # warm-up, as the stock side gets
            engine.reset()
            g = engine.generate(ids, max_tokens=n)
            if role == "planner":
                speed = {"prompt_tok_s": round(g.n_evaluated / g.prompt_seconds, 3),
                         "decode_tok_s": (round((g.n_generated - 1) / g.decode_seconds, 3)
                                          if g.n_generated > 1 else None)}
        contexts = len({id(getattr(e, "host", e)) for e in team.roles.values()})
        gpu = _gpu_used(args)
    return {**speed, "contexts": contexts, **gpu}


def _gpu_used(args: dict) -> dict:
    """GPU memory taken since the child started, read while the layout is still loaded (offloaded runs only)."""
    free0 = args.get("gpu_free0_mb")
    return {} if free0 is None else {"gpu_used_mb": round(free0 - gpu_free_mib(), 1)}


def gpu_free_mib() -> float | None:
    """Free memory of the first GPU as CUDA reports it to ggml (this process's view); None on CPU builds."""
    import ctypes

    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml.so"))
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                            ctypes.POINTER(ctypes.c_size_t)]
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(dev) in (1, 2):      # GGML_BACKEND_DEVICE_TYPE_GPU / IGPU
            free, total = ctypes.c_size_t(), ctypes.c_size_t()
            lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
            return free.value / MiB
    return None


def _child_main(layout: str, args: dict) -> None:
    from ..engine._native import lib
    from .child import peak_rss_mb

    lib()
    if args.get("n_gpu_layers"):
        args = {**args, "gpu_free0_mb": gpu_free_mib()}
    if layout == "single":
        out = _stock(args, 1)
    elif layout == "single_read":
        out = _stock(args, 1, use_mmap=False)
    elif layout == "published":
        out = _stock(args, 3)
    else:
        out = _team(args, layout)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    sys.stdout.write(json.dumps(out) + "\n")


def scale_table(report: dict) -> str:
    s = report["shape"]
    lines = [f"{s['name']}: {s['n_layer']} layers, n_embd {s['n_embd']}, n_ff {s['n_ff']}, vocab {s['n_vocab']}, "
             f"q4_0 weights {report['files_mb']['model']} MB, n_ctx {report['n_ctx']}, f16 KV",
             f"  {'layout':<11} {'peak RSS MB':>12} {'÷ single':>9} {'÷ read':>7} {'prompt ÷':>9} {'decode ÷':>9}"]
    for layout, r in report["layouts"].items():
        rss = f"{r['peak_rss_mb']:.0f}" if r.get("measured") else f"~{r['estimate_rss_mb']} (est.)"
        ratio = "" if r.get("rss_vs_single") is None else (
            f"{r['rss_vs_single']:.3f}" + ("*" if r["rss_vs_single_is_estimate"] else ""))
        read = "" if r.get("rss_vs_single_read") is None else f"{r['rss_vs_single_read']:.3f}"
        speed = f"{r.get('prompt_vs_single', ''):>9} {r.get('decode_vs_single', ''):>9}"
        lines.append(f"  {layout:<11} {rss:>12} {ratio:>9} {read:>7} {speed}")
    e = report["estimate_13b"]
    lines.append("  13B (paper estimate, MB): " + ", ".join(f"{k} {e[k + '_mb']}" for k in (*LAYOUTS, "published_read"))
                 + f"; pool ÷ single {e['pool_vs_single']}, ÷ single_read {e['pool_vs_single_read']}; published "
                 f"(read) ÷ single_read {e['published_read_vs_single_read']}")
    if any(r.get("rss_vs_single_is_estimate") for r in report["layouts"].values()):
        lines.append("  * from the formulas, not measured (not enough memory available for that layout)")
    return "\n".join(lines)


if __name__ == "__main__":
    import llama_cpp  # noqa: F401  (llama.cpp's libraries before numpy's: engine/_native.preload)

    _child_main(sys.argv[1], json.loads(sys.argv[2]))
