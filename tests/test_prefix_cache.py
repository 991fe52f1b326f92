"""Warm start from disk (engine/prefix_cache.py, warm.py) on tiny random-weight GGUFs built here: a saved prefix
KV restores exactly what evaluating it gives; any other model, adapter, layout or token, and a corrupt or
truncated file, is a miss that evaluates the prefix (never a wrong hit); a team saves its tool-doc head once."""
from __future__ import annotations

import logging
import textwrap

import pytest

pytest.importorskip("llama_cpp")
np = pytest.importorskip("numpy")

from umi_edge.engine.llama import LlamaBackend  # noqa: E402
from umi_edge.engine.prefix_cache import PrefixCache  # noqa: E402
from tiny_gguf import byte_unicode, write_llama_gguf, write_tiny_lora  # noqa: E402

TEXT = ("You have assess to the following apis: calculator, country facts, unit conversion, the weather, "
        "a clock. The conversation history is: ")


def _write_model(path, *, seed: int = 0) -> None:
    bu = byte_unicode()
    tokens = ["<s>", "</s>"] + [bu[b] for b in range(256)] + ["th", "the"]
    write_llama_gguf(path, tokens, ["t h", "th e"], n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128, n_ctx=4096,
                     seed=seed,
                     scale=0.2, embd_scale=1.0, out_scale=0.5)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("prefix")
    _write_model(d / "tiny.gguf")
    _write_model(d / "other.gguf", seed=3)
    write_tiny_lora(d / "a.gguf", seed=11)
    write_tiny_lora(d / "b.gguf", seed=12)
    return d


_n = iter(range(10**6))


def _role(be, model, **kw):
    kw.setdefault("n_ctx", 512)
    kw.setdefault("n_threads", 1)
    return be.new_role(model, name=f"r{next(_n)}", **kw)


def _ids(model, text):
    return [model.bos_id] + model.tokenize(text)


def _kv_files(root):
    return sorted(root.rglob("*.kv"))


def test_a_restored_prefix_gives_the_logits_evaluating_it_gives(files, tmp_path):
    """Run 1 evaluates the prefix and saves it; a new backend (a new process, as far as llama.cpp is concerned)
    restores it, evaluates only the rest, and its logits and greedy tokens equal run 1's exactly."""
    cache = PrefixCache(tmp_path / "kv")
    with LlamaBackend() as be:
        model = be.load_model(files / "tiny.gguf")
        prefix = _ids(model, TEXT)
        prompt = prefix + model.tokenize("user: what is 2+2?")
        cold = _role(be, model)
        cold.use_prefix_cache(cache, prefix)
        g1 = cold.generate(prompt, max_tokens=6)
        logits1 = cold.last_logits()
        plain = _role(be, model)             # no cache: the prefix is not split off; same numbers up to rounding
        g0 = plain.generate(prompt, max_tokens=6)
    assert (g1.n_reused, g1.n_evaluated) == (0, len(prompt))
    assert len(_kv_files(tmp_path / "kv")) == 1 and cache.saves == 1
    assert g0.tokens == g1.tokens
    with LlamaBackend() as be:
        model = be.load_model(files / "tiny.gguf")
        warm = _role(be, model)
        warm.use_prefix_cache(PrefixCache(tmp_path / "kv"), prefix)
        g2 = warm.generate(prompt, max_tokens=6)
        assert (g2.n_reused, g2.n_evaluated) == (len(prefix), len(prompt) - len(prefix))
        assert g2.tokens == g1.tokens
        assert np.array_equal(warm.last_logits(), logits1)
        assert warm.cached_tokens[:len(prefix)] == tuple(prefix)
        # in-memory reuse still comes first: the next prompt reuses what the context holds
        g3 = warm.generate(prompt, max_tokens=1)
        assert g3.n_reused == len(prompt) - 1


def test_another_prefix_model_adapter_or_layout_is_a_miss(files, tmp_path):
    """One changed token (a tool description edited), another model, adapter or n_ctx: nothing is restored."""
    root = tmp_path / "kv"
    with LlamaBackend() as be:
        model = be.load_model(files / "tiny.gguf")
        lora_a = be.load_adapter(model, files / "a.gguf")
        lora_b = be.load_adapter(model, files / "b.gguf")
        prefix = _ids(model, TEXT)
        prompt = prefix + model.tokenize("user: hi")
        first = _role(be, model, adapter=lora_a)
        first.use_prefix_cache(PrefixCache(root), prefix)
        first.generate(prompt, max_tokens=0)
        assert len(_kv_files(root)) == 1

        edited = _ids(model, TEXT.replace("the weather", "the Weather"))
        assert len(edited) == len(prefix) and edited != prefix
        cases = {
            "one token of the prefix": (dict(adapter=lora_a), edited),
            "another adapter": (dict(adapter=lora_b), prefix),
            "no adapter": ({}, prefix),
            "another n_ctx": (dict(adapter=lora_a, n_ctx=1024), prefix),
            "q8_0 keys": (dict(adapter=lora_a, type_k="q8_0"), prefix),
        }
        for why, (kw, head) in cases.items():
            cache = PrefixCache(root)
            role = _role(be, model, **kw)
            role.use_prefix_cache(cache, head)
            p = head + model.tokenize("user: hi")
            g = role.generate(p, max_tokens=0)
            assert (g.n_reused, g.n_evaluated) == (0, len(p)), why
            assert (cache.hits, cache.saves) == (0, 1), why
            ref = _role(be, model, **kw)
            ref.generate(p, max_tokens=0)
            assert np.allclose(role.last_logits(), ref.last_logits(), atol=1e-4), why
        # the same settings again: a hit
        again = PrefixCache(root)
        role = _role(be, model, adapter=lora_a)
        role.use_prefix_cache(again, prefix)
        assert role.generate(prompt, max_tokens=0).n_reused == len(prefix) and again.hits == 1
        other = be.load_model(files / "other.gguf")      # another model with the same vocab
        role = _role(be, other)
        role.use_prefix_cache(PrefixCache(root), prefix)
        assert role.generate(prompt, max_tokens=0).n_reused == 0


@pytest.mark.parametrize("damage", ["flip a payload byte", "truncate", "flip a token id", "empty", "garbage"])
def test_a_corrupt_or_truncated_file_is_a_miss_and_is_rewritten(files, tmp_path, damage, caplog):
    root = tmp_path / "kv"
    with LlamaBackend() as be:
        model = be.load_model(files / "tiny.gguf")
        prefix = _ids(model, TEXT)
        prompt = prefix + model.tokenize("user: hi")
        role = _role(be, model)
        role.use_prefix_cache(PrefixCache(root), prefix)
        role.generate(prompt, max_tokens=0)
        good = role.last_logits()
        (path,) = _kv_files(root)
        data = bytearray(path.read_bytes())
        if damage == "flip a payload byte":
            data[-100] ^= 0x40
        elif damage == "truncate":
            data = data[:len(data) // 2]
        elif damage == "flip a token id":
            i = data.index(b"}") + 1 + 4 * 5      # inside the token ids, after the JSON header
            data[i] ^= 1
        elif damage == "empty":
            data = bytearray()
        else:
            data = bytearray(b"\x00" * 64)
        path.write_bytes(bytes(data))

        cache = PrefixCache(root)
        role = _role(be, model)
        role.use_prefix_cache(cache, prefix)
        with caplog.at_level(logging.WARNING, logger="umi_edge.engine.prefix_cache"):
            g = role.generate(prompt, max_tokens=0)
        assert (g.n_reused, g.n_evaluated) == (0, len(prompt))
        assert np.allclose(role.last_logits(), good, atol=1e-5)
        assert cache.misses == 1 and cache.saves == 1
        assert damage == "empty" or "evaluating the prefix" in caplog.text
        # rewritten whole: the next context restores it
        role = _role(be, model)
        cache = PrefixCache(root)
        role.use_prefix_cache(cache, prefix)
        assert role.generate(prompt, max_tokens=0).n_reused == len(prefix) and cache.hits == 1
        assert np.array_equal(role.last_logits(), good)


def test_a_trunk_adapter_prefix_is_keyed_by_the_trunk_adapter(files, tmp_path):
    """With a trunk adapter the prefix (inside the trunk) is computed under it; a context with the same role
    adapter but another trunk adapter restores nothing, one with the same trunk adapter restores it."""
    root = tmp_path / "kv"
    with LlamaBackend() as be:
        model = be.load_model(files / "tiny.gguf")
        lora_a = be.load_adapter(model, files / "a.gguf")
        lora_b = be.load_adapter(model, files / "b.gguf")
        prefix = _ids(model, TEXT)
        trunk = prefix + model.tokenize("user: hi")
        prompt = trunk + model.tokenize(" plan:")
        role = _role(be, model, adapter=lora_a, trunk_adapter=lora_b)
        role.use_prefix_cache(PrefixCache(root), prefix)
        role.generate(prompt, max_tokens=0, trunk=len(trunk))
        want = role.last_logits()
        same = _role(be, model, adapter=lora_b, trunk_adapter=lora_b)   # same trunk, other own adapter
        same.use_prefix_cache(PrefixCache(root), prefix)
        assert same.generate(prompt, max_tokens=0, trunk=len(trunk)).n_reused == len(prefix)
        again = _role(be, model, adapter=lora_a, trunk_adapter=lora_b)
        again.use_prefix_cache(PrefixCache(root), prefix)
        assert again.generate(prompt, max_tokens=0, trunk=len(trunk)).n_reused == len(prefix)
        assert np.array_equal(again.last_logits(), want)
        swapped = _role(be, model, adapter=lora_a, trunk_adapter=lora_a)
        swapped.use_prefix_cache(PrefixCache(root), prefix)
        assert swapped.generate(prompt, max_tokens=0, trunk=len(trunk)).n_reused == 0
        # a prompt whose trunk ends inside the prefix would mix adapters there: no disk cache at all
        mixed = _role(be, model, adapter=lora_a, trunk_adapter=lora_b)
        cache = PrefixCache(tmp_path / "kv2")
        mixed.use_prefix_cache(cache, prefix)
        mixed.generate(prompt, max_tokens=0, trunk=4)
        assert (cache.hits, cache.misses, cache.saves) == (0, 0, 0)


def test_cache_folder_is_bounded(files, tmp_path):
    root = tmp_path / "kv"
    with LlamaBackend() as be:
        model = be.load_model(files / "tiny.gguf")
        for i in range(6):
            prefix = _ids(model, TEXT + "x" * i)
            role = _role(be, model)
            role.use_prefix_cache(PrefixCache(root, max_entries=3), prefix)
            role.generate(prefix + model.tokenize("user: hi"), max_tokens=0)
    assert len(_kv_files(root)) == 3


# -- the team: which head is cached ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory, smollm2_gguf):
    folder = tmp_path_factory.mktemp("warm")
    write_llama_gguf(folder / "tiny.gguf", vocab_from=smollm2_gguf, n_embd=64, n_layer=2, n_head=4, n_head_kv=2,
                     n_ff=128, n_ctx=4096, seed=0, scale=0.05, embd_scale=0.05, out_scale=0.05)
    (folder / "models.toml").write_text(textwrap.dedent("""
        [models.tiny]
        path = "tiny.gguf"
        [sets.tiny]
        model = "tiny"
        max_tokens = 8
        max_steps = 1
        n_ctx = 2048
        caller = { share_context = "planner" }
    """))
    return folder / "models.toml"


def _first_plan(team, query):
    for e in team.run(query):
        if e.kind == "plan":
            return e.usage
    raise AssertionError("no plan event")


def test_a_team_saves_its_tool_doc_head_once_and_restores_it_in_the_next_process(tiny_set, umi_home):
    import dataclasses

    from umi_edge.protocol import Turn
    from umi_edge.team import Team
    from umi_edge.tools import ToolSet
    from umi_edge.tools.demo import TOOLS
    from umi_edge.warm import static_prefix

    with Team.load("tiny", models=tiny_set) as team:
        planner = team.roles["planner"]
        head = static_prefix(team.protocol, team.tools, team.tool_top_k, planner)
        assert len(head) > 200
        for query in ("What is 2+2?", " leading space", "1,000 in words", "ü"):   # every query: the same head
            ids = team.protocol.encode(team.protocol.planner_prompt(team.tools.docs(team.protocol.doc_chars),
                                                                     [Turn("user", query)]),
                                       planner.tokenize, planner.bos_id, planner.eos_id)
            assert ids[:len(head)] == head, query
        cold = _first_plan(team, "What is 2+2?")    # the planner's calls of step 1 (a route re-ask reuses)
    assert len(list((umi_home / "kv").rglob("*.kv"))) == 1
    with Team.load("tiny", models=tiny_set) as team:        # the next `umi-edge run`: same greedy output
        warm = _first_plan(team, "What is 2+2?")
    assert (warm.reused, warm.evaluated) == (cold.reused + len(head), cold.evaluated - len(head))
    # one tool description changed: another head, so nothing restored (and a second file saved)
    tools = list(TOOLS)
    tools[0] = dataclasses.replace(tools[0], description=tools[0].description + " Exact.")
    with Team.load("tiny", models=tiny_set, tools=ToolSet(tools, keep_order=True)) as team:
        edited = _first_plan(team, "What is 2+2?")
    assert edited.evaluated >= cold.evaluated       # a longer head, evaluated in full again
    assert len(list((umi_home / "kv").rglob("*.kv"))) == 2
    with Team.load("tiny", models=tiny_set, prefix_cache=False) as team:      # the set key turns it off
        off = _first_plan(team, "What is 2+2?")
    assert (off.reused, off.evaluated) == (cold.reused, cold.evaluated)


def test_no_static_head_when_retrieval_picks_the_tools(tiny_set):
    from umi_edge.team import Team
    from umi_edge.warm import static_prefix

    with Team.load("tiny", models=tiny_set, tool_top_k=2) as team:
        assert static_prefix(team.protocol, team.tools, team.tool_top_k, team.roles["planner"]) == []


def test_no_static_head_when_the_query_orders_the_tools(tiny_set):
    """Tools listed by relevance (any set without keep_order) open each task's prompt in another order; the
    demo tools, or tool_order = "given", keep one head."""
    from umi_edge.team import Team
    from umi_edge.tools import ToolSet
    from umi_edge.tools.demo import TOOLS
    from umi_edge.warm import static_prefix

    plain = ToolSet(list(TOOLS))
    with Team.load("tiny", models=tiny_set, tools=plain) as team:
        assert static_prefix(team.protocol, team.tools, 0, team.roles["planner"], "relevance") == []
        assert len(static_prefix(team.protocol, team.tools, 0, team.roles["planner"], "given")) > 200
        assert len(static_prefix(team.protocol, TOOLS, 0, team.roles["planner"], "relevance")) > 200
        assert len(static_prefix(team.protocol, ToolSet(list(TOOLS)[:1]), 0, team.roles["planner"])) > 50
