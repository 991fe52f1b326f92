"""The llama.cpp engine on tiny random-weight GGUFs built here: one model shared by several role contexts,
prefix reuse accounting, LoRA on one context only, grammar-constrained output, cancel, overflow, bad files."""
from __future__ import annotations

import json
import os
import re
import threading

import pytest

pytest.importorskip("llama_cpp")
gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

from umi_edge.engine.base import Sampling  # noqa: E402
from umi_edge.engine.llama import LlamaBackend  # noqa: E402
from umi_edge.errors import ModelError  # noqa: E402
from tiny_gguf import byte_unicode, write_llama_gguf, write_tiny_lora  # noqa: E402

# multi-character tokens (with merges) so tokenization is not just bytes
WORDS = ["Action", ": ", "calc", "ulator", "\nAction Input: ", '{"', '": "', '"}', "country", "_info", "hello", " world"]


def write_tiny_llama(path, *, n_embd: int = 64, n_layer: int = 2, seed: int = 0, out_scale: float = 0.5) -> None:
    """A random-weight Llama GGUF (F32) with a byte-level BPE vocab: bytes + WORDS + BOS/EOS."""
    bu = byte_unicode()
    words = ["".join(bu[b] for b in w.encode()) for w in WORDS]
    tokens = ["<s>", "</s>"] + [bu[b] for b in range(256)] + words
    merges = []
    for w in words:     # left-to-right merges building each word, each intermediate a token too
        for i in range(2, len(w) + 1):
            if w[:i] not in tokens:
                tokens.append(w[:i])
            merges.append(f"{w[:i - 1]} {w[i - 1]}")
    merges = list(dict.fromkeys(merges))
    write_llama_gguf(path, tokens, merges, n_embd=n_embd, n_layer=n_layer, n_head=4, n_head_kv=2, n_ff=2 * n_embd,
                     n_ctx=4096, seed=seed, scale=0.2, embd_scale=1.0, out_scale=out_scale)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    write_tiny_llama(d / "tiny.gguf")
    write_tiny_llama(d / "other.gguf", n_embd=32, seed=3)
    write_tiny_llama(d / "flat.gguf", seed=5, out_scale=0.02)   # near-uniform next-token distributions
    write_tiny_lora(d / "lora.gguf")
    return d


@pytest.fixture(scope="module")
def backend(files):
    with LlamaBackend() as be:
        yield be


@pytest.fixture(scope="module")
def model(backend, files):
    return backend.load_model(files / "tiny.gguf")


_n = iter(range(10**6))


def new_role(backend, model, **kw):
    kw.setdefault("n_ctx", 512)
    kw.setdefault("n_threads", 1)
    return backend.new_role(model, name=f"r{next(_n)}", **kw)


def prompt(model, text: str) -> list[int]:
    return [model.bos_id] + model.tokenize(text)


# -- sharing ----------------------------------------------------------------------------------------------

def _mapped_bytes(path) -> int:
    real = os.path.realpath(path)
    total = 0
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].strip() == real:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                total += hi - lo
    return total


def test_three_roles_share_one_model_mapped_once(files, tmp_path):
    link = tmp_path / "link.gguf"
    link.symlink_to(files / "tiny.gguf")
    with LlamaBackend() as be:
        m = be.load_model(files / "tiny.gguf")
        assert be.load_model(link) is m          # same real path: loaded once
        roles = [be.new_role(m, name=n, n_ctx=256, n_threads=1) for n in ("planner", "caller", "summarizer")]
        assert len(be.models) == 1
        assert {r.model.ptr for r in roles} == {m.ptr}
        assert len({r.ctx for r in roles}) == 3      # each role its own context (own KV cache)
        size = os.path.getsize(files / "tiny.gguf")
        mapped = _mapped_bytes(files / "tiny.gguf")
        assert 0 < mapped < 2 * size, "the GGUF should be memory-mapped exactly once"
        for r in roles:
            r.generate(prompt(m, "hello world"), max_tokens=3)
        assert _mapped_bytes(files / "tiny.gguf") == mapped
    assert _mapped_bytes(files / "tiny.gguf") == 0   # closing the backend unmaps it


def test_a_freed_model_refuses_instead_of_crashing(files):
    with LlamaBackend() as be:
        m = be.load_model(files / "tiny.gguf")
        assert m.tokenize("hello")
    with pytest.raises(ModelError, match="was freed: its LlamaBackend is closed"):
        m.tokenize("hello")
    with pytest.raises(ModelError, match="was freed"):
        m.detokenize([5])


def test_closed_role_refuses(files):
    with LlamaBackend() as be:
        m = be.load_model(files / "tiny.gguf")
        r = be.new_role(m, name="x", n_ctx=128, n_threads=1)
    with pytest.raises(ModelError, match="closed"):
        r.generate([m.bos_id], max_tokens=1)


# -- prefix reuse -----------------------------------------------------------------------------------------

def test_prefix_reuse_counts(backend, model):
    r = new_role(backend, model)
    p1 = prompt(model, "hello world, Action: calc")
    g1 = r.generate(p1, max_tokens=6)
    assert (g1.n_prompt, g1.n_reused, g1.n_evaluated) == (len(p1), 0, len(p1))
    assert g1.n_generated == len(g1.tokens) == 6 and g1.stop_reason == "length"
    # the KV holds the prompt and every generated token but the last (never decoded)
    assert r.cached_tokens == tuple(p1) + g1.tokens[:-1]

    p2 = p1 + list(g1.tokens) + model.tokenize(" world")
    g2 = r.generate(p2, max_tokens=4)
    assert g2.n_reused == len(p1) + len(g1.tokens) - 1
    assert g2.n_evaluated == len(p2) - g2.n_reused

    g3 = r.generate(p2, max_tokens=4)       # the same prompt again: only the last token is re-evaluated
    assert (g3.n_reused, g3.n_evaluated) == (len(p2) - 1, 1)
    assert g3.tokens == g2.tokens

    p4 = p2[:5] + model.tokenize("country")  # diverges after 5 tokens
    g4 = r.generate(p4, max_tokens=2)
    assert (g4.n_reused, g4.n_evaluated) == (5, len(p4) - 5)

    r.reset()
    assert r.generate(p4, max_tokens=1).n_reused == 0


def test_reuse_on_and_off_give_the_same_greedy_output(backend, model):
    on, off = new_role(backend, model), new_role(backend, model, prefix_reuse=False)
    history = prompt(model, "hello")
    for step in range(4):
        a = on.generate(history, max_tokens=8)
        b = off.generate(history, max_tokens=8)
        assert a.tokens == b.tokens, f"step {step}"
        assert b.n_reused == 0 and b.n_evaluated == len(history)
        if step:
            assert a.n_evaluated < len(history) // 2
        history = history + list(a.tokens) + model.tokenize(" world")


# -- sampling ---------------------------------------------------------------------------------------------

def test_seeded_sampling_is_reproducible(backend, model):
    p = prompt(model, "hello")
    s = Sampling(temperature=1.0, top_p=0.95, top_k=50, min_p=0.01, seed=42)
    a = new_role(backend, model, sampling=s).generate(p, max_tokens=24)
    b = new_role(backend, model, sampling=s).generate(p, max_tokens=24)
    c = new_role(backend, model, sampling=Sampling(temperature=1.0, seed=43)).generate(p, max_tokens=24)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


def test_first_eos_is_kept_and_generation_continues(backend, model, monkeypatch):
    """The reference's force_generate: an EOS sampled first is fed back; a later EOS stops."""
    r = new_role(backend, model)
    script = iter([model.eos_id, 10, 11, model.eos_id, 12])
    monkeypatch.setattr(r._sampler, "sample", lambda ctx, g: next(script))
    g = r.generate(prompt(model, "hello"), max_tokens=10)
    assert g.tokens == (model.eos_id, 10, 11)
    assert g.stop_reason == "eos"
    assert g.text == model.detokenize([10, 11])
    assert r.cached_tokens[-3:] == (model.eos_id, 10, 11)


# -- LoRA -------------------------------------------------------------------------------------------------

def test_lora_changes_only_its_own_context(backend, model, files):
    adapter = backend.load_adapter(model, files / "lora.gguf")
    assert backend.load_adapter(model, files / "lora.gguf") is adapter
    base1 = new_role(backend, model)
    tuned = new_role(backend, model, adapter=adapter)
    base2 = new_role(backend, model)
    p = prompt(model, "hello world")
    logits = {}
    for name, r in (("base1", base1), ("tuned", tuned), ("base2", base2)):
        r.generate(p, max_tokens=0)
        logits[name] = r.last_logits()
    assert np.array_equal(logits["base1"], logits["base2"])      # bit-identical
    assert np.abs(logits["tuned"] - logits["base1"]).max() > 1e-3
    base1.reset()
    base1.generate(p, max_tokens=0)
    assert np.array_equal(base1.last_logits(), logits["base2"])  # the adapter never leaked into base contexts


def test_stacked_adapters_equal_their_concatenation(backend, model, files, tmp_path):
    """Two adapters set on one context act as one LoRA of rank r1+r2 (A stacked, B side by side), on this
    float32 model. (On the Q4_1 SmolLM2 base llama.cpp 0.3.36 did not match the concatenation: see
    recipes/glpft/ship.py.)"""
    write_tiny_lora(tmp_path / "b.gguf", seed=11)
    a, b = (gguf.GGUFReader(str(p)) for p in (files / "lora.gguf", tmp_path / "b.gguf"))
    w = gguf.GGUFWriter(str(tmp_path / "ab.gguf"), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 8.0)   # scale alpha/rank = 1, as each of the two (rank 4, alpha 4)
    ta, tb = ({t.name: np.array(t.data) for t in r.tensors} for r in (a, b))
    for name in ta:
        axis = 0 if name.endswith("lora_a") else 1
        w.add_tensor(name, np.concatenate([ta[name], tb[name]], axis=axis).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    one, two = backend.load_adapter(model, files / "lora.gguf"), backend.load_adapter(model, tmp_path / "b.gguf")
    stacked = new_role(backend, model, adapter=[one, two])
    combined = new_role(backend, model, adapter=backend.load_adapter(model, tmp_path / "ab.gguf"))
    single = new_role(backend, model, adapter=one)
    p = prompt(model, "hello world")
    logits = {}
    for name, r in (("stacked", stacked), ("combined", combined), ("single", single)):
        r.generate(p, max_tokens=0)
        logits[name] = r.last_logits()
    assert np.abs(logits["stacked"] - logits["combined"]).max() < 1e-3
    assert np.abs(logits["stacked"] - logits["single"]).max() > 1e-2


def test_roles_sharing_one_context_match_their_own_contexts(backend, model, files, tmp_path):
    """A view borrows the host's context with its own adapter: every output equals a dedicated context's,
    the KV cache is cleared when the user changes and reused while it does not."""
    write_tiny_lora(tmp_path / "c.gguf", seed=13)
    one, two = backend.load_adapter(model, files / "lora.gguf"), backend.load_adapter(model, tmp_path / "c.gguf")
    host = new_role(backend, model, adapter=one)
    guest = host.view(name="guest", adapter=two)
    alone_one, alone_two = new_role(backend, model, adapter=one), new_role(backend, model, adapter=two)
    p1, p2 = prompt(model, "hello world"), prompt(model, "hello there world")
    g = host.generate(p1, max_tokens=6)
    assert g.tokens == alone_one.generate(p1, max_tokens=6).tokens
    v = guest.generate(p1, max_tokens=6)
    assert v.n_reused == 0 and v.tokens == alone_two.generate(p1, max_tokens=6).tokens
    assert np.array_equal(guest.last_logits(), alone_two.last_logits())
    v2 = guest.generate(p1 + list(v.tokens) + [7], max_tokens=4)     # same user: the prefix is reused
    assert v2.n_reused > len(p1) and guest.cached_tokens and not host.cached_tokens
    back = host.generate(p2, max_tokens=6)                              # host again: cleared, its adapter back
    assert back.n_reused == 0
    alone_one.reset()
    assert back.tokens == alone_one.generate(p2, max_tokens=6).tokens
    assert np.array_equal(host.last_logits(), alone_one.last_logits())


def test_roles_with_the_same_weights_on_one_context_reuse_each_others_prefix(backend, model):
    host = new_role(backend, model)
    guest = host.view(name="guest")
    alone = new_role(backend, model)
    head = prompt(model, "hello world hello world")
    host.generate(head + [5, 6], max_tokens=3)
    g = guest.generate(head + [7, 8], max_tokens=5)
    assert g.n_reused == len(head)                                     # the host's prefix, no clearing
    assert g.tokens == alone.generate(head + [7, 8], max_tokens=5).tokens
    assert np.array_equal(guest.last_logits(), alone.last_logits())


def test_a_trunk_adapter_lets_roles_with_different_adapters_share_the_trunk_kv(backend, model, files, tmp_path):
    """With trunk_adapter, a prompt's first `trunk` tokens are computed under it and the rest under the role's
    own adapter: roles with different adapters on one context reuse the trunk exactly, and a position is
    reused only under the adapters it was computed with."""
    write_tiny_lora(tmp_path / "p.gguf", seed=21)
    write_tiny_lora(tmp_path / "c.gguf", seed=22)
    write_tiny_lora(tmp_path / "t.gguf", seed=23)
    planner_a, caller_a, trunk_a = (backend.load_adapter(model, tmp_path / f"{n}.gguf") for n in "pct")
    planner = new_role(backend, model, adapter=planner_a, trunk_adapter=trunk_a)
    caller = planner.view(name="caller", adapter=caller_a)
    assert planner.has_trunk and caller.has_trunk and not new_role(backend, model).has_trunk
    alone = new_role(backend, model, adapter=caller_a, trunk_adapter=trunk_a)
    head = prompt(model, "hello world hello there world hello")
    n = len(head)
    p_plan, p_call = head + model.tokenize(" plan it"), head + model.tokenize(" call it now")

    g = planner.generate(p_plan, max_tokens=4, trunk=n)
    assert (g.n_reused, g.n_evaluated) == (0, len(p_plan))
    c = caller.generate(p_call, max_tokens=4, trunk=n)
    assert c.n_reused == n and c.n_evaluated == len(p_call) - n       # the trunk KV, across adapters
    ref = alone.generate(p_call, max_tokens=4, trunk=n)                  # the same prompt from scratch
    assert ref.n_reused == 0 and ref.tokens == c.tokens
    assert np.array_equal(caller.last_logits(), alone.last_logits())
    # the next step: the planner's prompt extends the caller's trunk; only the new part and its tail run
    longer = p_call + list(c.tokens)
    tail = model.tokenize(" next")
    g2 = planner.generate(longer + tail, max_tokens=0, trunk=len(longer))
    assert g2.n_reused == n and g2.n_evaluated == len(longer) + len(tail) - n

    # the split matters: the whole prompt under the role's adapter, or under the trunk's, gives other logits
    mixed = alone.last_logits()
    own = new_role(backend, model, adapter=caller_a)
    own.generate(p_call, max_tokens=0)
    under_trunk = new_role(backend, model, adapter=trunk_a)
    under_trunk.generate(p_call, max_tokens=0)
    assert np.abs(own.last_logits() - mixed).max() > 1e-3
    assert np.abs(under_trunk.last_logits() - mixed).max() > 1e-3
    # without a trunk adapter, `trunk` changes nothing and roles with other adapters share no KV
    plain = new_role(backend, model, adapter=caller_a)
    plain.generate(p_call, max_tokens=0, trunk=n)
    assert np.array_equal(plain.last_logits(), own.last_logits())
    guest = plain.view(name="guest", adapter=planner_a)
    assert guest.generate(p_call, max_tokens=0, trunk=n).n_reused == 0


def test_adapter_for_another_base_is_refused(backend, files):
    other = backend.load_model(files / "other.gguf")
    with pytest.raises(ModelError, match="refused adapter") as e:
        backend.load_adapter(other, files / "lora.gguf")
    assert "\n" not in str(e.value)


def test_adapter_must_match_the_roles_model(backend, model, files):
    other = backend.load_model(files / "other.gguf")
    adapter = backend.load_adapter(model, files / "lora.gguf")
    with pytest.raises(ModelError, match="was loaded for"):
        backend.new_role(other, name="mismatch", adapter=adapter)


# -- grammar ----------------------------------------------------------------------------------------------

GRAMMAR = r'''root ::= "Action: " ( calc | country )
calc ::= "calculator\nAction Input: {\"expression\": \"" [0-9+*/ ]{1,12} "\"}"
country ::= "country_info\nAction Input: {\"country\": \"" [A-Za-z]{1,10} "\"}"
'''
GRAMMAR_RE = re.compile(r'Action: (calculator\nAction Input: \{"expression": "[0-9+*/ ]{1,12}"\}'
                        r'|country_info\nAction Input: \{"country": "[A-Za-z]{1,10}"\})')


def test_grammar_output_always_matches_even_at_random(backend, files):
    model = backend.load_model(files / "flat.gguf")
    roles = [new_role(backend, model, sampling=Sampling(temperature=1.0, seed=s)) for s in range(3)]
    p = prompt(model, "hello world")
    seen = set()
    for i in range(12):
        g = roles[i % 3].generate(p, max_tokens=120, grammar=GRAMMAR)
        assert GRAMMAR_RE.fullmatch(g.text), g.text
        assert g.stop_reason == "eos"
        assert g.n_forced > 0 and g.n_forced < g.n_generated
        json.loads(g.text.split("Action Input: ", 1)[1])
        seen.add(g.text.split("\n")[0])
    assert len(seen) == 2   # both branches reachable: forcing never takes a choice away from the model


def test_grammar_forces_fixed_text_in_one_batch(backend, model, monkeypatch):
    one_tool = 'root ::= "Action: calculator\\nAction Input: {\\"expression\\": \\"" [0-9]{1,3} "\\"}"'
    r = new_role(backend, model, sampling=Sampling(temperature=1.0, seed=1))
    calls = []
    real = r._decode
    monkeypatch.setattr(r, "_decode", lambda ids, adapters: (calls.append(len(ids)), real(ids, adapters))[1])
    p = prompt(model, "hello")
    r.generate(p, max_tokens=0)
    calls.clear()
    g = r.generate(p, max_tokens=60, grammar=one_tool)
    assert re.fullmatch(r'Action: calculator\nAction Input: \{"expression": "[0-9]{1,3}"\}', g.text), g.text
    prefix = 'Action: calculator\nAction Input: {"expression": "'
    # all but the last token of the fixed prefix are forced, and go to llama.cpp in a single decode
    n_prefix = len(model.tokenize(prefix)) - 1
    assert g.n_forced >= n_prefix > 5
    assert calls[0] == 1                        # the prompt's last token, re-evaluated for fresh logits
    assert calls[1] >= n_prefix


def test_bad_grammar_is_a_clear_error(backend, model):
    from umi_edge.errors import ToolError

    r = new_role(backend, model)
    with pytest.raises(ToolError, match="grammar"):
        r.generate(prompt(model, "hello"), max_tokens=4, grammar="root ::= (")


# -- cancel and overflow ----------------------------------------------------------------------------------

class CancelAfter(threading.Event):
    """Reports set after `n` checks: a deterministic stand-in for a cancel from another thread."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_cancel_between_tokens(backend, model):
    r = new_role(backend, model)
    p = prompt(model, "hello")
    g = r.generate(p, max_tokens=50, cancel=CancelAfter(1 + 5))   # 1 prompt batch check, then 5 tokens
    assert g.stop_reason == "cancelled"
    assert 0 < g.n_generated <= 6


def test_cancel_between_prompt_batches_keeps_kv_consistent(backend, model):
    r = new_role(backend, model, n_batch=8)
    p = prompt(model, "hello world " * 12)
    assert len(p) > 24
    g = r.generate(p, max_tokens=5, cancel=CancelAfter(2))
    assert (g.stop_reason, g.n_evaluated, g.n_generated) == ("cancelled", 16, 0)
    assert r.cached_tokens == tuple(p[:16])
    g2 = r.generate(p, max_tokens=3)
    assert (g2.n_reused, g2.n_evaluated) == (16, len(p) - 16)
    fresh = new_role(backend, model, n_batch=8)
    assert fresh.generate(p, max_tokens=3).tokens == g2.tokens


def test_already_cancelled(backend, model):
    ev = threading.Event()
    ev.set()
    g = new_role(backend, model).generate(prompt(model, "hello"), max_tokens=5, cancel=ev)
    assert (g.stop_reason, g.n_generated, g.n_evaluated) == ("cancelled", 0, 0)


def test_overflow_keeps_the_last_tokens(backend, model):
    r = new_role(backend, model, n_ctx=256)
    n_ctx = r.n_ctx
    p = prompt(model, "hello world " * 200)
    assert len(p) > n_ctx
    g = r.generate(p, max_tokens=16)
    keep = n_ctx - 16 - 8
    assert g.n_truncated == len(p) - keep and g.n_prompt == keep
    assert r.cached_tokens[:keep] == tuple(p[-keep:])
    assert g.n_generated == 16
    # max_tokens beyond the context is capped (half the context), never a crash
    g = r.generate(p, max_tokens=10_000)
    assert g.n_prompt + g.n_generated <= n_ctx and g.n_generated == n_ctx // 2


# -- threads ----------------------------------------------------------------------------------------------

def test_roles_generate_in_parallel_threads(backend, model):
    a, b = new_role(backend, model), new_role(backend, model)
    pa, pb = prompt(model, "hello"), prompt(model, "country")
    want = (a.generate(pa, max_tokens=12).tokens, b.generate(pb, max_tokens=12).tokens)
    a.reset(), b.reset()
    got = {}
    threads = [threading.Thread(target=lambda k, r, p: got.__setitem__(k, r.generate(p, max_tokens=12).tokens),
                                args=(k, r, p)) for k, r, p in ((0, a, pa), (1, b, pb))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (got[0], got[1]) == want


# -- bad input --------------------------------------------------------------------------------------------

def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_bad_model_files(backend, files, tmp_path):
    with pytest.raises(ModelError, match="not found") as e:
        backend.load_model(tmp_path / "missing.gguf")
    assert "missing.gguf" in _one_line(e)

    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model\n")
    with pytest.raises(ModelError, match="not a GGUF") as e:
        backend.load_model(text)
    assert "notes.gguf" in _one_line(e)

    with pytest.raises(ModelError, match="LoRA adapter") as e:
        backend.load_model(files / "lora.gguf")
    _one_line(e)

    cut = tmp_path / "cut.gguf"
    cut.write_bytes((files / "tiny.gguf").read_bytes()[:6000])
    with pytest.raises(ModelError, match="cut.gguf") as e:
        backend.load_model(cut)
    _one_line(e)


def test_bad_adapter_files(backend, model, files, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        backend.load_adapter(model, tmp_path / "nope.gguf")
    with pytest.raises(ModelError, match="not a LoRA adapter") as e:
        backend.load_adapter(model, files / "tiny.gguf")
    _one_line(e)


def test_bad_role_settings(backend, model):
    with pytest.raises(ModelError, match="type_k"):
        backend.new_role(model, name="kv", type_k="q3")
    with pytest.raises(ModelError, match="flash_attn"):
        backend.new_role(model, name="kv", type_v="q8_0")
    r = new_role(backend, model)
    with pytest.raises(ModelError, match="already exists"):
        backend.new_role(model, name=r.name)


def test_constrained_roles_in_parallel_threads(backend, files):
    """Two roles on one model decode under grammars at the same time (the forced-text probe is shared)."""
    model = backend.load_model(files / "flat.gguf")
    roles = [new_role(backend, model, sampling=Sampling(temperature=1.0, seed=s)) for s in (11, 12)]
    p = prompt(model, "hello")
    texts: list[str] = []

    def work(r):
        for _ in range(4):
            texts.append(r.generate(p, max_tokens=120, grammar=GRAMMAR).text)

    threads = [threading.Thread(target=work, args=(r,)) for r in roles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(texts) == 8 and all(GRAMMAR_RE.fullmatch(t) for t in texts), texts


def test_llama_cpp_logs_are_quiet_unless_asked(files, capfd, monkeypatch):
    monkeypatch.delenv("UMI_EDGE_LLAMA_LOGS", raising=False)
    with LlamaBackend() as be:
        m = be.load_model(files / "tiny.gguf")
        be.new_role(m, name="q", n_ctx=128, n_threads=1).generate(prompt(m, "hello"), max_tokens=2)
    assert capfd.readouterr().err == ""
    monkeypatch.setenv("UMI_EDGE_LLAMA_LOGS", "1")
    with LlamaBackend() as be:
        be.load_model(files / "tiny.gguf")
    assert "llama" in capfd.readouterr().err


def test_llama_cpp_loads_only_with_the_engine_and_before_numpy():
    """`umi_edge`, its Team and CLI import no llama.cpp; the llama engine loads llama.cpp's libraries before
    numpy, the order that a CUDA build needs (numpy first segfaulted at model load; see _native.preload)."""
    import subprocess
    import sys

    code = ("import sys, umi_edge, umi_edge.team, umi_edge.cli, umi_edge.loop; "
            "assert 'llama_cpp' not in sys.modules, 'eager import'; "
            "assert 'numpy' not in sys.modules, 'numpy before llama.cpp'; "
            "import umi_edge.engine.llama; assert 'llama_cpp.llama_cpp' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- SentencePiece vocab (the α-UMi checkpoints' kind) ----------------------------------------------------

@pytest.fixture(scope="module")
def spm_model(backend, tmp_path_factory, spm_tokenizer_dir):
    """A random-weight Llama with a Llama-2 style SentencePiece vocab (dummy prefix, byte fallback)."""
    spm = pytest.importorskip("sentencepiece")
    from umi_convert.vocab import write_vocab

    n_vocab = spm.SentencePieceProcessor(model_file=str(spm_tokenizer_dir / "tokenizer.model")).vocab_size()
    path = tmp_path_factory.mktemp("spm") / "spm.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    n_embd = 32
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(2 * n_embd)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_rope_dimension_count(n_embd // 2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    write_vocab(w, spm_tokenizer_dir, {}, gguf.MODEL_ARCH.LLAMA)
    rng = np.random.default_rng(2)
    for name, shape in (("token_embd.weight", (n_vocab, n_embd)), ("output.weight", (n_vocab, n_embd)),
                        ("blk.0.attn_q.weight", (n_embd, n_embd)), ("blk.0.attn_k.weight", (n_embd, n_embd)),
                        ("blk.0.attn_v.weight", (n_embd, n_embd)), ("blk.0.attn_output.weight", (n_embd, n_embd)),
                        ("blk.0.ffn_gate.weight", (2 * n_embd, n_embd)), ("blk.0.ffn_up.weight", (2 * n_embd, n_embd)),
                        ("blk.0.ffn_down.weight", (n_embd, 2 * n_embd))):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))
    for name in ("output_norm.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight"):
        w.add_tensor(name, np.ones(n_embd, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return backend.load_model(path)


def test_grammar_forcing_with_a_sentencepiece_vocab(backend, spm_model):
    """SentencePiece adds a dummy-prefix space when tokenizing a fresh string; forced text mid-output must
    not get it, and must still be appended without sampling."""
    m = spm_model
    from umi_edge.engine.forced import ForcedText

    assert ForcedText(m)._pieces(m.tokenize("Action")).startswith(b" ")    # the dummy prefix this test is about
    r = new_role(backend, m, sampling=Sampling(temperature=1.0, seed=4))
    p = prompt(m, "hello")
    for _ in range(3):
        g = r.generate(p, max_tokens=120, grammar=GRAMMAR)
        assert GRAMMAR_RE.fullmatch(g.text), g.text
        assert g.n_forced >= 5


def test_measure_script_reports_positive_ratios(files):
    """engine/measure.py (the side-by-side figures the bench reuses) runs end to end on a tiny model."""
    from umi_edge.engine import measure

    path = str(files / "flat.gguf")
    d = measure.decode(path, n_tokens=8, n_ctx=512, n_threads=1, repeats=1, prompt="hello world")
    c = measure.constrained(path, grammar=GRAMMAR, max_tokens=100, n_ctx=512, n_threads=1, repeats=1,
                            prompt="hello world")
    assert d["ratio_vs_llama_cpp_python"] > 0 and d["umi_edge_tok_s"] > 0 and d["llama_cpp_python_tok_s"] > 0
    assert c["ratio"] > 0 and 0 < c["forced_tokens"] < c["constrained_tokens"]
    assert GRAMMAR_RE.fullmatch(c["constrained_text"])


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_no_native_leak_over_many_generations(backend, files):
    """Grammar clones, candidate arrays and batches are reused or freed: RSS stays flat over many calls."""
    model = backend.load_model(files / "flat.gguf")
    r = new_role(backend, model, sampling=Sampling(temperature=1.0, seed=9))
    p = prompt(model, "hello world")

    def burst(n):
        for i in range(n):
            r.generate(p + [2 + i % 50], max_tokens=120, grammar=GRAMMAR)
            r.generate(p, max_tokens=16)

    burst(50)
    before = _rss_mb()
    burst(400)
    assert _rss_mb() - before < 4.0


def test_n_gpu_layers_passes_through_on_a_cpu_build(files, caplog):
    with LlamaBackend() as be:
        m = be.load_model(files / "tiny.gguf", n_gpu_layers=99)    # CPU build: llama.cpp keeps it on CPU
        g = be.new_role(m, name="g", n_ctx=128, n_threads=1).generate(prompt(m, "hello"), max_tokens=2)
        assert g.n_generated == 2
        with caplog.at_level("WARNING"):
            assert be.load_model(files / "tiny.gguf", n_gpu_layers=0) is m
        assert "already loaded with n_gpu_layers=99" in caplog.text


def test_auto_key_cache_type_follows_the_head_size(backend, model):
    """q8_0 keys need head sizes that 32-value blocks divide; the tiny model's 16 falls back to f16,
    giving the same logits as an explicit f16 cache."""
    assert model.head_dim_k == 16
    auto, f16 = new_role(backend, model, type_k="auto"), new_role(backend, model)
    assert auto.type_k == "f16"
    p = prompt(model, "hello world")
    auto.generate(p, max_tokens=0)
    f16.generate(p, max_tokens=0)
    assert np.array_equal(auto.last_logits(), f16.last_logits())
