"""`umi-edge bench` in a tiny configuration: the JSON report's structure, and every headline figure is a
positive number. No timing is asserted: the figures are for people to read."""
from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from umi_edge.cli import cli
from tiny_gguf import write_llama_gguf, write_tiny_lora

REQUIRED = ("memory.team_vs_single", "memory.team_vs_separate", "prefill.ratio", "decode.ratio_vs_llama_cpp_python",
            "decode.ratio_vs_bandwidth_limit", "constrained.ratio", "cold_start.seconds", "warm_start.warm_seconds",
            "warm_start.cold_seconds")
SECTIONS = ("machine", "memory", "prefill", "decode", "constrained", "cold_start", "warm_start")


def make_tiny_gguf(path: Path, vocab_gguf: Path, *, n_embd: int = 64, n_layer: int = 2, seed: int = 0) -> Path:
    """A random-weight Llama GGUF with the real SmolLM2 BPE vocab (so prompts tokenize as they would)."""
    write_llama_gguf(path, vocab_from=vocab_gguf, model_name="tiny-bench", n_embd=n_embd, n_layer=n_layer, n_head=4,
                     n_head_kv=2, n_ff=2 * n_embd, n_ctx=4096, seed=seed, scale=0.05, embd_scale=0.05, out_scale=0.05)
    return path


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory, smollm2_gguf) -> Path:
    folder = tmp_path_factory.mktemp("bench")
    make_tiny_gguf(folder / "tiny.gguf", smollm2_gguf)
    (folder / "models.toml").write_text(textwrap.dedent("""
        [models.tiny]
        path = "tiny.gguf"
        [sets.tiny]
        model = "tiny"
        max_tokens = 48
    """))
    return folder / "models.toml"


def _get(report: dict, dotted: str):
    section, key = dotted.split(".")
    return report[section][key]


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def test_bench_tiny_json(tiny_set):
    args = ["bench", "--set", "tiny", "--models", str(tiny_set), "--n-ctx", "2048", "--tokens", "16",
            "--repeats", "1", "--slow-repeats", "1", "--bandwidth-mb", "32", "--json"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    for name in SECTIONS:
        assert isinstance(report[name], dict), name
    for key in REQUIRED:
        assert _positive(_get(report, key)), (key, _get(report, key))
    # every headline figure (numbers at a section's top level) is a positive number
    for name in SECTIONS:
        for key, v in report[name].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                assert _positive(v), (name, key, v)
    assert report["machine"]["threads"] >= 1 and report["machine"]["llama_system_info"]
    assert report["memory"]["team_models_loaded"] == 1     # three roles, one shared base
    # three Llamas hold three copies of the weights; a child's peak must not inherit the parent's
    assert report["memory"]["separate_mb"] > report["memory"]["team_mb"]
    # the replay is the real loop on the scripted task: every role call is accounted, step 1 starts cold
    steps = report["prefill"]["per_step"]
    assert [s["role"] for s in steps] == ["planner", "caller"] * 4 + ["planner", "summarizer"]
    assert steps[0]["reused"] == 0 and steps[0]["evaluated"] == steps[0]["prompt"]
    assert all(s["evaluated_without_reuse"] == s["prompt"] for s in steps)
    assert report["prefill"]["evaluated_with_reuse"] < report["prefill"]["evaluated_without_reuse"]
    assert report["constrained"]["constrained_text"].startswith("Action: ")
    # warm start: the priming run saved the tool-doc head, every warm run restored it
    assert report["warm_start"]["primed"] and report["warm_start"]["prefix_tokens"] > 200
    assert report["warm_start"]["warm_runs_restored"] == 1
    assert "stderr" not in r.stdout and r.stderr.count("bench:") >= 6    # progress on stderr only


def test_bench_decode_gives_the_stock_llama_the_roles_adapter(tiny_set):
    """A role with one LoRA is timed against a llama_cpp.Llama that loads the same adapter (lora_path)."""
    write_tiny_lora(tiny_set.parent / "lora.gguf", scale=0.1)
    tuned = tiny_set.parent / "tuned.toml"
    tuned.write_text(tiny_set.read_text() + textwrap.dedent("""
        [sets.tuned]
        model = "tiny"
        max_tokens = 48
        planner = { adapter = "lora.gguf" }
    """))
    args = ["bench", "--set", "tuned", "--models", str(tuned), "--only", "decode,memory", "--tokens", "16",
            "--repeats", "1", "--bandwidth-mb", "32", "--json"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    decode = report["decode"]
    assert Path(decode["adapter"]) == (tiny_set.parent / "lora.gguf").resolve()
    assert _positive(decode["ratio_vs_llama_cpp_python"])
    # the memory section names what the team holds beyond one Llama: the adapter, counted once
    lora_mb = (tiny_set.parent / "lora.gguf").stat().st_size / (1 << 20)
    assert report["memory"]["adapters_mb"] == round(lora_mb, 3) > 0


def test_bench_table_and_bad_section(tiny_set):
    r = CliRunner().invoke(cli, ["bench", "--set", "tiny", "--models", str(tiny_set), "--only", "constrained",
                                 "--repeats", "1"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "[constrained]" in r.stdout and "with ÷ without" in r.stdout and "[memory]" not in r.stdout
    r = CliRunner().invoke(cli, ["bench", "--only", "speed"])
    assert r.exit_code == 1 and "unknown bench section(s) speed" in r.stderr


def test_bench_convert_json_and_table(tiny_model):
    from umi_edge.bench.render import convert_table

    src = tiny_model("LlamaForCausalLM")
    r = CliRunner().invoke(cli, ["bench", "convert", str(src), "--outtype", "f16", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["outtype"] == "f16" and result["reference"] is None
    assert all(_positive(result["ours"][k]) for k in ("seconds", "peak_rss_mb", "size_bytes"))
    text = convert_table(result)
    assert "umi-edge convert" in text and "--reference PATH" in text
    r = CliRunner().invoke(cli, ["bench", "convert", str(src / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.stderr
