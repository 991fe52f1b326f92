"""Side-by-side engine measurements (memory, decode speed, constrained decode) as ratios, for `umi-edge bench`.

Timed figures interleave the two sides (A B A B) and report medians; memory is measured in child
processes so each figure is a clean peak RSS. Run `python -m umi_edge.engine.measure MODEL.gguf`.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import sys
import time

DEFAULT_PROMPT = (
    "You have assess to the following apis:\n"
    '{"Name": "calculator", "function": "Evaluate an arithmetic expression.", "input": {"expression": "string"}}\n'
    '{"Name": "country_info", "function": "Facts about a country.", "input": {"country": "string"}}\n'
    "The conversation history is:\nuser: What is 15% of 2,480 plus the population of France?\n"
    "The thought of this step is:\nI should compute 15% of 2480 first.\n"
    "Base on the thought make an api call in the following format:\n"
    "Action: the name of api that should be called in this step, should be exactly in [calculator, country_info],\n"
    "Action Input: the api call request. caller: "
)

CALLER_GRAMMAR = r'''root ::= "Action: " ( calc | country )
calc ::= "calculator\nAction Input: {\"expression\": \"" [0-9+*/(). %-]{1,40} "\"}"
country ::= "country_info\nAction Input: {\"country\": \"" [A-Za-z ]{1,30} "\"}"
'''


def llama_cpp_python(path: str, *, n_ctx: int, n_threads: int | None = None, **kw):
    """A stock `llama_cpp.Llama` (the baseline), with the same buffer-type choice as our engine."""
    import llama_cpp
    import llama_cpp.llama_cpp as L

    from ._native import lib
    from .llama import _extra_bufts_default

    lib()
    orig = L.llama_model_default_params

    def params():
        p = orig()
        p.use_extra_bufts = _extra_bufts_default()
        return p

    L.llama_model_default_params = params   # llama.py reads its defaults from this module
    try:
        return llama_cpp.Llama(path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                               verbose=False, **kw)
    finally:
        L.llama_model_default_params = orig


def _peak_rss_mb() -> float:
    """VmHWM: the peak of this exec'd image only (ru_maxrss would carry the forking parent's peak over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _memory_child(kind: str, path: str, n_ctx: int, n_threads: int | None, role_kw: dict, q) -> None:
    prompt = DEFAULT_PROMPT * 3
    if kind == "single" or kind == "separate":
        llms = [llama_cpp_python(path, n_ctx=n_ctx, n_threads=n_threads) for _ in range(1 if kind == "single" else 3)]
        for llm in llms:
            toks = llm.tokenize(prompt.encode(), add_bos=True)
            for i, _ in zip(range(16), llm.generate(toks, temp=0.0)):
                pass
    else:
        from .llama import LlamaBackend

        be = LlamaBackend()
        model = be.load_model(path)
        for name in ("planner", "caller", "summarizer"):
            role = be.new_role(model, name=name, n_ctx=n_ctx, n_threads=n_threads, **role_kw)
            role.generate([model.bos_id] + role.tokenize(prompt), max_tokens=16)
        be.close()
    q.put(_peak_rss_mb())


def memory(path: str, *, n_ctx: int = 2048, n_threads: int | None = None, role_kw: dict | None = None) -> dict:
    """Peak RSS (MB) of one Llama, three Llamas, and our three roles on one model, each in its own process."""
    ctx = mp.get_context("spawn")
    out = {}
    for kind in ("single", "separate", "team"):
        q = ctx.Queue()
        p = ctx.Process(target=_memory_child, args=(kind, path, n_ctx, n_threads, role_kw or {}, q))
        p.start()
        out[f"{kind}_mb"] = round(q.get(timeout=600), 1)
        p.join()
    out["team_vs_single"] = round(out["team_mb"] / out["single_mb"], 3)
    out["team_vs_separate"] = round(out["team_mb"] / out["separate_mb"], 3)
    return out


def decode(path: str, *, n_tokens: int = 64, n_ctx: int = 2048, n_threads: int | None = None,
           repeats: int = 5, prompt: str = DEFAULT_PROMPT, role_kw: dict | None = None) -> dict:
    """tokens/s of our generation loop vs `llama_cpp.Llama.generate`, greedy, same prompt, threads and count."""
    from .base import Sampling
    from .llama import LlamaBackend, _default_threads

    n_threads = n_threads or _default_threads()[0]
    llm = llama_cpp_python(path, n_ctx=n_ctx, n_threads=n_threads)
    with LlamaBackend() as be:
        model = be.load_model(path)
        role = be.new_role(model, name="bench", n_ctx=n_ctx, n_threads=n_threads, sampling=Sampling(),
                           **(role_kw or {}))
        ids = [model.bos_id] + role.tokenize(prompt)

        def ours() -> float:
            role.reset()
            role.generate(ids, max_tokens=1)       # prompt evaluated outside the timed part, like theirs
            g = role.generate(ids, max_tokens=n_tokens)
            if g.n_generated < n_tokens:
                raise RuntimeError("the model stopped early; pick another prompt")
            return g.n_generated / g.decode_seconds

        def theirs() -> float:
            llm.reset()
            llm.eval(ids)
            gen = llm.generate(ids, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
            next(gen)                               # the prompt (already cached) and first sample
            t0 = time.perf_counter()
            for i, _ in zip(range(n_tokens - 1), gen):
                pass
            return (n_tokens - 1) / (time.perf_counter() - t0)

        a, b = [], []
        ours(), theirs()    # warm-up
        for _ in range(repeats):
            a.append(ours())
            b.append(theirs())
    llm.close()
    ta, tb = statistics.median(a), statistics.median(b)
    return {"tokens": n_tokens, "threads": n_threads, "umi_edge_tok_s": round(ta, 2),
            "llama_cpp_python_tok_s": round(tb, 2), "ratio_vs_llama_cpp_python": round(ta / tb, 3)}


def constrained(path: str, *, grammar: str = CALLER_GRAMMAR, max_tokens: int = 48, n_ctx: int = 2048,
                n_threads: int | None = None, repeats: int = 5, prompt: str = DEFAULT_PROMPT) -> dict:
    """The caller under its grammar vs the same prompt without one: tokens of the output ÷ decode seconds."""
    from .base import Sampling
    from .llama import LlamaBackend

    with LlamaBackend() as be:
        model = be.load_model(path)
        role = be.new_role(model, name="caller", n_ctx=n_ctx, n_threads=n_threads, sampling=Sampling())
        ids = [model.bos_id] + role.tokenize(prompt)
        role.generate(ids, max_tokens=1)
        last = {}

        def run(g) -> float:
            gen = role.generate(ids, max_tokens=max_tokens, grammar=g)   # prompt cached: decode only
            last[g is not None] = gen
            return gen.n_generated / gen.decode_seconds

        run(grammar), run(None)
        a, b = [], []
        for _ in range(repeats):
            a.append(run(grammar))
            b.append(run(None))
    ta, tb = statistics.median(a), statistics.median(b)
    c = last[True]
    return {"constrained_tok_s": round(ta, 2), "unconstrained_tok_s": round(tb, 2), "ratio": round(ta / tb, 3),
            "constrained_tokens": c.n_generated, "forced_tokens": c.n_forced, "constrained_text": c.text,
            "unconstrained_tokens": last[False].n_generated}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m umi_edge.engine.measure MODEL.gguf [n_ctx] [threads]")
    path = argv[0]
    n_ctx = int(argv[1]) if len(argv) > 1 else 2048
    threads = int(argv[2]) if len(argv) > 2 else None
    from ..protocol.grammar import caller_grammar
    from ..tools.demo import TOOLS

    report = {
        "decode": decode(path, n_ctx=n_ctx, n_threads=threads),
        "constrained": constrained(path, n_ctx=n_ctx, n_threads=threads),
        "constrained_demo_tools": constrained(path, grammar=caller_grammar(TOOLS, max_tokens=128),
                                              max_tokens=128, n_ctx=n_ctx, n_threads=threads),
        "memory": memory(path, n_ctx=n_ctx, n_threads=threads),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
