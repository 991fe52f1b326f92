"""Decode speed (ours vs `llama_cpp.Llama`, and vs the memory-bandwidth limit) and constrained decoding."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def decode(role, path, *, n_ctx: int, threads: tuple[int, int], n_batch: int, prompt: str, tokens: int,
           repeats: int, bandwidth_gb_s: float, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Greedy tokens/s of `role.generate` vs `llama_cpp.Llama.generate`, same prompt, threads and token count,
    interleaved A B A B; medians. Both evaluate the prompt outside the timed part. A role with one LoRA
    adapter is compared with a `Llama` that loads the same adapter (`lora_path`); with a stack of them the
    stock side runs without (one `lora_path` only), and the report's `adapter` says which."""
    from .baseline import stock_llama

    ids = [role.bos_id] + role.tokenize(prompt)

    def ours(n: int) -> tuple[float, int]:
        role.reset()
        role.generate(ids, max_tokens=1)        # prompt evaluated here, outside the timed decode
        g = role.generate(ids, max_tokens=n)
        return g.n_generated / g.decode_seconds, g.n_generated

    # the count both sides time: what our greedy run produces before any EOS
    _, n = ours(tokens)
    if n < 2:
        raise RuntimeError(f"the model stopped after {n} token(s) on the decode prompt")

    adapters = tuple(getattr(role, "adapters", ()))
    lora = adapters[0].path if len(adapters) == 1 else None
    llm = stock_llama(path, n_ctx=n_ctx, threads=threads, n_batch=n_batch, lora_path=lora)
    try:
        def theirs() -> float:
            llm.reset()
            llm.eval(ids)
            gen = llm.generate(ids, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
            next(gen)           # re-evaluates the last prompt token and samples the first token
            t0 = time.perf_counter()
            for _ in zip(range(n - 1), gen):
                pass
            return (n - 1) / (time.perf_counter() - t0)

        theirs()
        a, b = [], []
        for i in range(max(repeats, 1)):
            progress(f"decode: pair {i + 1}/{repeats}")
            a.append(ours(n)[0])
            b.append(theirs())
    finally:
        llm.close()
    ta, tb = statistics.median(a), statistics.median(b)
    model_bytes = role.model.size_bytes
    limit = bandwidth_gb_s * 1e9 / model_bytes      # every weight read once per token
    return {
        "tokens": n,
        "adapter": None if lora is None else str(lora),   # the LoRA both sides ran with
        "umi_edge_tok_s": round(ta, 2),
        "llama_cpp_python_tok_s": round(tb, 2),
        "ratio_vs_llama_cpp_python": round(ta / tb, 4),
        "model_bytes": model_bytes,
        "bandwidth_gb_s": bandwidth_gb_s,
        "bandwidth_limit_tok_s": round(limit, 2),
        "ratio_vs_bandwidth_limit": round(ta / limit, 4),
        "runs": {"umi_edge_tok_s": [round(x, 2) for x in a], "llama_cpp_python_tok_s": [round(x, 2) for x in b]},
    }


def constrained(role, prompt_ids: list[int], grammar: str, *, max_tokens: int, repeats: int,
                progress: Callable[[str], None] = lambda s: None) -> dict:
    """The caller under its tool-call grammar vs the same prompt without it, same max tokens: output tokens
    (forced ones included: they are tokens of the call) ÷ decode seconds; A B interleaved, medians."""
    role.reset()
    role.generate(prompt_ids, max_tokens=1)        # the prompt is cached: both sides time decoding only
    last = {}

    def run(g: str | None) -> float:
        gen = role.generate(prompt_ids, max_tokens=max_tokens, grammar=g)
        last[g is not None] = gen
        return gen.n_generated / gen.decode_seconds

    run(grammar), run(None)     # warm-up: grammar compiled, forced-text probe built
    a, b = [], []
    for i in range(max(repeats, 1)):
        progress(f"constrained: pair {i + 1}/{repeats}")
        a.append(run(grammar))
        b.append(run(None))
    ta, tb = statistics.median(a), statistics.median(b)
    c, u = last[True], last[False]
    return {
        "constrained_tok_s": round(ta, 2),
        "unconstrained_tok_s": round(tb, 2),
        "ratio": round(ta / tb, 4),
        "max_tokens": max_tokens,
        "constrained_tokens": c.n_generated,
        "forced_tokens": c.n_forced,
        "unconstrained_tokens": u.n_generated,
        "constrained_text": c.text,
        "unconstrained_text": u.text,
    }
