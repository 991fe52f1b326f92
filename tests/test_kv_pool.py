"""One KV pool for the team (kv_layout = "pool"): roles on one llama context, a sequence each, in one unified pool
of n_ctx cells; checked on tiny random-weight GGUFs against roles on contexts of their own."""
from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("llama_cpp")
np = pytest.importorskip("numpy")

from umi_edge.engine.llama import LlamaBackend, RoleView  # noqa: E402
from umi_edge.errors import ConfigError, ModelError  # noqa: E402
from tiny_gguf import byte_unicode, write_llama_gguf, write_tiny_lora  # noqa: E402

DOCS = "You have assess to the following apis: calculator, country facts, unit conversion. History: "


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    bu = byte_unicode()
    tokens = ["<s>", "</s>"] + [bu[b] for b in range(256)] + ["th", "the"]
    write_llama_gguf(d / "tiny.gguf", tokens, ["t h", "th e"], n_embd=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128,
                     n_ctx=4096, seed=0, scale=0.2, embd_scale=1.0, out_scale=0.5)
    for i, n in enumerate(("planner", "caller", "summarizer", "trunk")):
        write_tiny_lora(d / f"{n}.gguf", seed=30 + i)
    return d


@pytest.fixture(scope="module")
def backend():
    with LlamaBackend() as be:
        yield be


@pytest.fixture(scope="module")
def model(backend, files):
    return backend.load_model(files / "tiny.gguf")


@pytest.fixture(scope="module")
def loras(backend, model, files):
    return {n: backend.load_adapter(model, files / f"{n}.gguf") for n in ("planner", "caller", "summarizer", "trunk")}


_n = iter(range(10**6))


def _role(be, model, **kw):
    kw.setdefault("n_ctx", 512)
    kw.setdefault("n_threads", 1)
    return be.new_role(model, name=f"r{next(_n)}", **kw)


def _ids(model, text):
    return [model.bos_id] + model.tokenize(text)


def test_each_sequence_computes_what_a_context_of_its_own_computes(backend, model, loras):
    """Planner + caller on sequence 0 (trunk adapter shared), the summarizer on sequence 1 with its adapter:
    every role's greedy output and logits match the contexts layout, and the summarizer leaves the trunk cached."""
    L = loras
    pool = _role(backend, model, adapter=L["planner"], trunk_adapter=L["trunk"], n_seq=2)
    caller = pool.view(name="caller", adapter=L["caller"])
    summ = pool.sequence(name="summarizer", adapter=L["summarizer"])
    ref = _role(backend, model, adapter=L["planner"], trunk_adapter=L["trunk"])
    ref_caller = ref.view(name="caller", adapter=L["caller"])
    ref_summ = _role(backend, model, adapter=L["summarizer"])

    trunk = _ids(model, DOCS + "user: what is 2+2?")
    p_plan, p_call = trunk + model.tokenize(" plan:"), trunk + model.tokenize(" call:")
    p_summ = _ids(model, "Make a conclusion: user: what is 2+2? the answer is 4")
    for ours, theirs, p, kw in ((pool, ref, p_plan, {"trunk": len(trunk)}),
                                (caller, ref_caller, p_call, {"trunk": len(trunk)}),
                                (summ, ref_summ, p_summ, {})):
        a = ours.generate(p, max_tokens=5, **kw)
        b = theirs.generate(p, max_tokens=5, **kw)
        assert (a.tokens, a.n_reused, a.n_evaluated) == (b.tokens, b.n_reused, b.n_evaluated)
        assert np.allclose(ours.last_logits(), theirs.last_logits(), atol=1e-4)
    # the summarizer ran on its own sequence: the trunk is still there for the next planner step
    nxt = trunk + model.tokenize(" then: 4") + model.tokenize(" plan:")
    g = pool.generate(nxt, max_tokens=0, trunk=len(trunk) + 3)
    assert g.n_reused >= len(trunk)
    assert summ.cached_tokens[:len(p_summ)] == tuple(p_summ) and pool.cached_tokens[:len(trunk)] == tuple(trunk)
    assert isinstance(summ, RoleView) and summ.seq == 1 and caller.seq == 0


def test_a_sequence_that_needs_room_drops_the_others_newest_first(backend, model):
    """n_ctx 256 shared by three sequences: a prompt that does not fit beside the others drops whole sequences,
    the highest-numbered (the summarizer's) first, and never its own."""
    host = _role(backend, model, n_ctx=256, n_seq=3)
    mid = host.sequence(name="mid")
    last = host.sequence(name="last")
    a, b, c = (_ids(model, ch * 70) for ch in "abc")
    host.generate(a, max_tokens=0)
    mid.generate(b, max_tokens=0)
    last.generate(c, max_tokens=0)
    assert host._used() == len(a) + len(b) + len(c) <= 256
    # 40 more prompt tokens + 8 to generate for sequence 0 do not fit beside 213 cells: "last" goes, "mid" stays
    g = host.generate(a + model.tokenize("d" * 40), max_tokens=8)
    assert g.n_reused == len(a)
    assert last.cached_tokens == () and mid.cached_tokens[:len(b)] == tuple(b)
    again = last.generate(c, max_tokens=0)
    assert again.n_reused == 0 and again.n_evaluated == len(c)
    # and its numbers are those of a fresh context
    ref = _role(backend, model, n_ctx=256)
    ref.generate(c, max_tokens=0)
    assert np.allclose(last.last_logits(), ref.last_logits(), atol=1e-4)


def test_sequences_are_bounded_by_n_seq(backend, model):
    host = _role(backend, model, n_seq=2)
    host.sequence(name="one")
    with pytest.raises(ModelError, match="n_seq=3"):
        host.sequence(name="two")
    with pytest.raises(ModelError, match="n_seq must be"):
        _role(backend, model, n_seq=0)


def test_reset_and_the_disk_cache_work_per_pool(backend, model, tmp_path):
    from umi_edge.engine.prefix_cache import PrefixCache

    head = _ids(model, DOCS)
    prompt = head + model.tokenize("user: hi")
    host = _role(backend, model, n_seq=2)
    other = host.sequence(name="summ")
    host.use_prefix_cache(PrefixCache(tmp_path), head)
    other.generate(_ids(model, "a conclusion"), max_tokens=0)
    host.generate(prompt, max_tokens=0)              # evaluated beside sequence 1, saved
    host2 = _role(backend, model, n_seq=2)
    other2 = host2.sequence(name="summ")
    other2.generate(_ids(model, "something else first"), max_tokens=0)
    host2.use_prefix_cache(PrefixCache(tmp_path), head)
    g = host2.generate(prompt, max_tokens=0)          # restored into sequence 0 of a pool already in use
    assert g.n_reused == len(head)
    assert np.allclose(host2.last_logits(), host.last_logits(), atol=1e-5)
    other2.reset()                                    # a sequence's reset drops that sequence only
    assert other2.cached_tokens == () and host2.cached_tokens[:len(head)] == tuple(head)
    assert host2.generate(prompt, max_tokens=0).n_reused == len(prompt) - 1
    other2.generate(_ids(model, "a conclusion"), max_tokens=0)
    host2.reset()                                     # the host's drops them all
    assert host2.cached_tokens == () and other2.cached_tokens == ()
    assert host2.generate(prompt, max_tokens=0).n_reused == len(head)    # from disk again


# -- the set key ---------------------------------------------------------------------------------------------

def _set(tmp_path, files, body: str):
    (tmp_path / "tiny.gguf").symlink_to(files / "tiny.gguf")
    for n in ("planner", "caller", "summarizer", "trunk"):
        (tmp_path / f"{n}.gguf").symlink_to(files / f"{n}.gguf")
    (tmp_path / "models.toml").write_text(textwrap.dedent("""
        [models.tiny]
        path = "tiny.gguf"
        [sets.t]
        model = "tiny"
        max_tokens = 6
        max_steps = 2
        n_ctx = 1024
        planner = { adapter = "planner.gguf", trunk_adapter = "trunk.gguf" }
        caller = { adapter = "caller.gguf", share_context = "planner" }
        summarizer = { adapter = "summarizer.gguf" }
    """) + body)
    return tmp_path / "models.toml"


def test_kv_layout_is_checked_with_the_set(tmp_path, files):
    from umi_edge.registry import load_registry, resolve_set

    models = _set(tmp_path, files, '[sets.bad]\nmodel = "tiny"\nkv_layout = "one"\n'
                                   '[sets.mixed]\nmodel = "tiny"\nkv_layout = "pool"\nsummarizer = { n_ctx = 512 }\n')
    reg = load_registry(models)
    with pytest.raises(ConfigError, match="kv_layout must be one of contexts, pool"):
        resolve_set("bad", registry=reg)
    with pytest.raises(ConfigError, match="summarizer: kv_layout = \"pool\" puts it on 'planner'"):
        resolve_set("mixed", registry=reg)
    assert resolve_set("t", registry=reg).kv_layout == "contexts"
    assert resolve_set("t", registry=reg, overrides={"kv_layout": "pool"}).kv_layout == "pool"


def test_a_pool_team_runs_the_same_task_as_the_contexts_team(tmp_path, files):
    from umi_edge.team import Team

    models = _set(tmp_path, files, "")
    runs = {}
    for layout in ("contexts", "pool"):
        with Team.load("t", models=models, kv_layout=layout, prefix_cache=False) as team:
            hosts = {id(getattr(e, "host", e)) for e in team.roles.values()}
            assert len(hosts) == (1 if layout == "pool" else 2)
            runs[layout] = [(e.kind, e.text) for e in team.run("What is 2+2?") if e.kind != "token"]
    assert runs["pool"] == runs["contexts"] and runs["pool"][-1][0] == "outcome"
