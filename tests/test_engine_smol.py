"""The llama.cpp engine on the real SmolLM2-135M-Instruct (Q4_1, BPE vocab): prefix reuse does not change
greedy output, and the constrained caller emits a valid call with its fixed text forced, not sampled."""
from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("llama_cpp")

from umi_edge.engine.base import Sampling  # noqa: E402
from umi_edge.engine.llama import LlamaBackend  # noqa: E402
from umi_edge.engine.measure import CALLER_GRAMMAR, DEFAULT_PROMPT  # noqa: E402

CALL_RE = re.compile(r'Action: (calculator\nAction Input: \{"expression": "[0-9+*/(). %-]{1,40}"\}'
                     r'|country_info\nAction Input: \{"country": "[A-Za-z ]{1,30}"\})')


@pytest.fixture(scope="module")
def smol(smollm2_gguf):
    with LlamaBackend() as be:
        yield be, be.load_model(smollm2_gguf)


def test_reuse_does_not_change_greedy_text(smol):
    be, model = smol
    on = be.new_role(model, name="reuse-on", n_ctx=1024, n_threads=1)
    off = be.new_role(model, name="reuse-off", n_ctx=1024, n_threads=1, prefix_reuse=False)
    history = [model.bos_id] + model.tokenize(
        "<|im_start|>user\nName three capitals of Europe, one per line.<|im_end|>\n<|im_start|>assistant\n")
    evaluated = 0
    for step in range(3):
        a = on.generate(history, max_tokens=12)
        b = off.generate(history, max_tokens=12)
        assert a.text == b.text, f"step {step}"
        if step:
            evaluated += a.n_evaluated
        history = history + list(a.tokens) + model.tokenize("\nAnd another one?")
    assert evaluated < 40     # only the new turns, not the whole history


def test_constrained_caller_on_smollm2(smol):
    be, model = smol
    caller = be.new_role(model, name="caller", n_ctx=1024, n_threads=1, sampling=Sampling(temperature=0.5, seed=3))
    ids = [model.bos_id] + model.tokenize(DEFAULT_PROMPT)
    for _ in range(2):
        g = caller.generate(ids, max_tokens=64, grammar=CALLER_GRAMMAR)
        assert CALL_RE.fullmatch(g.text), g.text
        assert g.stop_reason == "eos"
        json.loads(g.text.split("Action Input: ", 1)[1])
        # "Action:" and the fixed JSON key text are appended without sampling
        assert g.n_forced >= 5


def test_three_roles_map_the_weights_once(smol, smollm2_gguf):
    import os

    from test_engine import _mapped_bytes

    be, m = smol
    assert be.load_model(smollm2_gguf) is m
    roles = [be.new_role(m, name=f"map-{n}", n_ctx=512, n_threads=1) for n in ("planner", "caller", "summarizer")]
    assert len({r.ctx for r in roles}) == 3 and {r.model.ptr for r in roles} == {m.ptr}
    size = os.path.getsize(smollm2_gguf)
    assert 0.5 * size < _mapped_bytes(smollm2_gguf) < 1.5 * size


def test_smollm2_gets_q8_0_keys(smol):
    be, m = smol
    assert m.head_dim_k == 64
    assert be.new_role(m, name="kq", n_ctx=256, n_threads=1, type_k="auto").type_k == "q8_0"
    assert be.new_role(m, name="kf", n_ctx=256, n_threads=1).type_k == "f16"     # the default
