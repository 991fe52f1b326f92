"""The human form of a bench report: a compact table of the headline figures against their bars."""
from __future__ import annotations

# (section, key, label, bar text, passes(value) or None)
ROWS = (
    ("memory", "single_mb", "peak RSS, one llama_cpp.Llama (MB)", "", None),
    ("memory", "separate_mb", "peak RSS, one Llama per role (MB)", "", None),
    ("memory", "team_mb", "peak RSS, umi-edge team (MB)", "", None),
    ("memory", "adapters_mb", "the team's LoRA adapters, files (MB)", "", None),
    ("memory", "kv_cache_mb_per_context", "f16 KV cache per context (MB)", "", None),
    ("memory", "team_vs_single", "team ÷ single", "<= 1.5", lambda v: v <= 1.5),
    ("memory", "team_vs_separate", "team ÷ separate", "", None),
    ("prefill", "evaluated_without_reuse", "prompt tokens evaluated, reuse off", "", None),
    ("prefill", "evaluated_with_reuse", "prompt tokens evaluated, reuse on", "", None),
    ("prefill", "ratio", "evaluated on ÷ off (whole task)", "<= 0.15", lambda v: v <= 0.15),
    ("prefill", "ratio_after_first_step", "evaluated on ÷ off (steps 2+)", "<= 0.15", lambda v: v <= 0.15),
    ("prefill", "ratio_next_task", "evaluated on ÷ off (next task)", "", None),
    ("prefill", "seconds_ratio", "prefill seconds on ÷ off", "", None),
    ("decode", "umi_edge_tok_s", "decode tok/s, umi-edge", "", None),
    ("decode", "llama_cpp_python_tok_s", "decode tok/s, llama_cpp.Llama", "", None),
    ("decode", "ratio_vs_llama_cpp_python", "umi-edge ÷ llama_cpp.Llama", ">= 0.95", lambda v: v >= 0.95),
    ("decode", "bandwidth_limit_tok_s", "bandwidth limit tok/s", "", None),
    ("decode", "ratio_vs_bandwidth_limit", "umi-edge ÷ bandwidth limit", "", None),
    ("constrained", "constrained_tok_s", "caller tok/s with grammar", "", None),
    ("constrained", "unconstrained_tok_s", "caller tok/s without grammar", "", None),
    ("constrained", "ratio", "with ÷ without", ">= 1.0", lambda v: v >= 1.0),
    ("cold_start", "seconds", "cold start to first planner token (s)", "", None),
    ("warm_start", "cold_seconds", "run to first planner token, cold (s)", "", None),
    ("warm_start", "warm_seconds", "same, KV of the tool docs from disk (s)", "<= 1.5", lambda v: v <= 1.5),
    ("warm_start", "ratio", "warm ÷ cold", "", None),
    ("warm_start", "prefix_tokens", "prompt head restored (tokens)", "", None),
)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(report: dict) -> str:
    """Rows of `label  value  bar  ok/MISS`, grouped by section, with a header naming set, model and machine."""
    cfg, m = report.get("config", {}), report.get("machine", {})
    lines = [f"umi-edge bench: set {cfg.get('set')!r}, n_ctx {cfg.get('n_ctx')}, "
             f"threads {m.get('threads')}/{m.get('threads_batch')} (decode/batch), {m.get('cores')} cores, "
             f"{m.get('cpu', '?')}, load average {m.get('load_average')}"]
    if cfg.get("model"):
        lines.append(f"model: {cfg['model']}")
    width = max(len(r[2]) for r in ROWS)
    section = None
    for sec, key, label, bar, ok in ROWS:
        data = report.get(sec)
        if not isinstance(data, dict) or key not in data:
            continue
        if sec != section:
            section = sec
            lines.append(f"[{sec}]")
        v = data[key]
        verdict = "" if ok is None else ("ok" if ok(v) else "MISS")
        lines.append(f"  {label:<{width}}  {_fmt(v):>10}  {bar:>7}  {verdict}".rstrip())
    for sec, key in (("memory", "team_vs_single"), ("prefill", "ratio_next_task")):
        for layout, row in (report.get(sec) or {}).get("by_layout", {}).items():
            lines.append(f"  [{sec}, kv_layout {layout}] " + ", ".join(f"{k} {_fmt(v)}" for k, v in row.items()))
    if "decode" in report:
        lines.append(f"  (bandwidth {report['decode']['bandwidth_gb_s']} GB/s, model "
                     f"{report['decode']['model_bytes'] / 1e6:.1f} MB, {report['decode']['tokens']} tokens)")
    return "\n".join(lines)


def convert_table(r: dict) -> str:
    """`umi-edge bench convert`: time and peak RSS of our converter and llama.cpp's, with ratios."""
    lines = [f"{r['source']} -> {r['outtype']} ({r.get('checkpoint_bytes', 0) / 1e6:.0f} MB of weights)"]
    for who, name in (("ours", "umi-edge convert"), ("reference", "convert_hf_to_gguf.py")):
        if r.get(who):
            lines.append(f"  {name:<22} {r[who]['seconds']:8.2f} s  peak RSS {r[who]['peak_rss_mb']:8.1f} MB"
                         f"  output {r[who].get('size_bytes', 0) / 1e6:.1f} MB")
    if r.get("ratios"):
        lines.append(f"  ours ÷ llama.cpp: time {r['ratios']['time']:.2f}, peak RSS {r['ratios']['peak_rss']:.2f}")
    elif not r.get("reference"):
        lines.append("  (no llama.cpp converter given: --reference PATH or $UMI_EDGE_LLAMA_CPP_CONVERTER)")
    return "\n".join(lines)
