"""Constrained decoding grammars: they compile in llama.cpp, and every string llama.cpp's grammar sampler
lets through — sampled at random over a byte-level vocabulary, the worst case for call length — is a
parseable call naming a registered tool with schema-valid JSON arguments, finished within the budget."""
from __future__ import annotations

import ctypes
import functools
import json
import random

import pytest

L = pytest.importorskip("llama_cpp")
gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

from umi_edge.protocol import alpha_umi as au  # noqa: E402
from umi_edge.protocol.grammar import caller_grammar, literal, route_grammar, worst_case_bytes  # noqa: E402
from umi_edge.tools import Tool, ToolSet, parse_arguments  # noqa: E402
from umi_edge.tools.demo import TOOLS  # noqa: E402
from tiny_gguf import byte_unicode, write_llama_gguf  # noqa: E402

# Multi-character tokens that straddle grammar boundaries, on top of the 256 single bytes.
EXTRA = ["Action", "Action:", ": ", " Input", "\nAction Input: ", '{"', '":', '": ', '", "', '"}', ", ",
         "calculator", "convert", "_units", "country", " Next", ": caller.", ": give up.", "\n Next", "true",
         "null", "12", "3.5", "e+", "\\u00", "\\n", "é", " \"", "\"\n"]


def write_byte_vocab(path, *, n_embd: int = 0, seed: int = 0) -> None:
    """A GGUF with a byte-level BPE vocab (the 256 bytes, EXTRA, BOS/EOS); with n_embd > 0, also the
    random weights of a one-layer Llama, so llama.cpp can run it."""
    bu = byte_unicode()
    tokens = ["<s>", "</s>"] + [bu[b] for b in range(256)] + ["".join(bu[b] for b in t.encode()) for t in EXTRA]
    assert len(set(tokens)) == len(tokens), "llama.cpp aborts on duplicate tokens"
    dim = n_embd or 8
    write_llama_gguf(path, tokens, [f"{bu[ord('A')]} {bu[ord('c')]}"], n_embd=dim, n_layer=1, n_head=2, n_head_kv=2,
                     n_ff=2 * dim, n_ctx=8192, seed=seed, scale=0.3, embd_scale=1.0,
                     out_scale=0.05,   # near-uniform next-token distributions
                     vocab_only=not n_embd)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    """The byte vocabulary loaded with llama.cpp (vocab only: no weights)."""
    path = tmp_path_factory.mktemp("vocab") / "bytes.gguf"
    write_byte_vocab(path)
    L.llama_backend_init()
    params = L.llama_model_default_params()
    params.vocab_only = True
    model = L.llama_model_load_from_file(str(path).encode(), params)
    assert model, "llama.cpp refused the test vocabulary"
    yield L.llama_model_get_vocab(model)
    L.llama_model_free(model)


class GrammarSampler:
    """Random sampling under a grammar with llama.cpp's own grammar sampler (no model weights needed)."""

    def __init__(self, vocab, grammar: str, seed: int):
        self.vocab = vocab
        self.g = L.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        assert self.g, f"llama.cpp rejected the grammar:\n{grammar[:2000]}"
        self.n = L.llama_vocab_n_tokens(vocab)
        self.eos = L.llama_vocab_eos(vocab)
        self.data = (L.llama_token_data * self.n)()
        self.view = np.ctypeslib.as_array(self.data)
        self.rng = np.random.default_rng(seed)
        self.buf = ctypes.create_string_buffer(64)

    def close(self):
        L.llama_sampler_free(self.g)

    def sample(self, max_tokens: int) -> tuple[bytes, bool]:
        """(text, finished): sample until the grammar lets EOS win or max_tokens pass."""
        out = bytearray()
        for _ in range(max_tokens):
            self.view["id"] = np.arange(self.n)
            self.view["logit"] = self.rng.normal(size=self.n)
            arr = L.llama_token_data_array(data=self.data, size=self.n, selected=-1, sorted=False)
            L.llama_sampler_apply(self.g, ctypes.byref(arr))
            logits = self.view["logit"][: arr.size]
            allowed = np.flatnonzero(np.isfinite(logits))
            assert allowed.size, f"grammar dead end after {bytes(out)!r}"
            tok = int(self.view["id"][self.rng.choice(allowed)])
            if tok == self.eos:
                return bytes(out), True
            L.llama_sampler_accept(self.g, tok)
            n = L.llama_token_to_piece(self.vocab, tok, self.buf, len(self.buf), 0, False)
            out += self.buf.raw[:n]
        return bytes(out), False


def _awkward_tools() -> ToolSet:
    schema = {"type": "object", "properties": {
        "query": {"type": "string", "description": "free text"},
        "mode": {"type": "string", "enum": ["fast", "exact"]},
        "limit": {"type": "integer"}, "ratio": {"type": "number"}, "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "range": {"type": "object", "properties": {"lo": {"type": "integer"}, "hi": {"type": "integer"}},
                  "required": ["lo", "hi"], "additionalProperties": False},
        "maybe": {"type": ["string", "null"]}},
        "required": ["query", "mode"], "additionalProperties": False}
    return ToolSet([Tool.from_openai({"name": "search.v2", "parameters": schema}, lambda **kw: kw),
                    Tool.from_openai({"name": "ping"}, lambda: "pong"),
                    Tool.from_toolbench({"Name": "quiz_for_moodring", "function": "", "input": {"quizid": "string, "}},
                                        dispatcher=lambda n, a: a)])


def _check_call(text: bytes, tools: ToolSet, errors: str = "strict"):
    s = text.decode("utf-8", errors)                  # ASCII strings: always valid UTF-8
    call = au.parse_call(au.postprocess(s), tools.names)   # as the loop parses constrained output
    assert call.action in tools.names, s
    args = json.loads(call.arguments)                 # strict: no raw control characters in strings
    assert parse_arguments(call.arguments, tools[call.action].parameters) == (args, None), s


@pytest.mark.parametrize("tools", [TOOLS, _awkward_tools()], ids=["demo", "awkward"])
@pytest.mark.parametrize("pretty,unicode", [(False, False), (True, False), (False, True)],
                         ids=["compact", "pretty", "unicode"])
def test_random_sampling_yields_valid_calls_within_budget(vocab, tools, pretty, unicode):
    budget = 512   # the default caller budget; every tool here provably fits it (test below)
    grammar = caller_grammar(tools, max_tokens=budget, pretty=pretty, unicode=unicode)
    for seed in range(40):
        s = GrammarSampler(vocab, grammar, seed)
        try:
            text, finished = s.sample(budget + 1)
        finally:
            s.close()
        assert finished and len(text) <= budget, text   # every token is >= 1 byte: the bound holds in tokens
        # with raw non-ASCII admitted, malformed bytes decode to U+FFFD as the engine's detokenizer does
        _check_call(text, tools, "replace" if unicode else "strict")


def admits(vocab, grammar: str, text: str) -> bool:
    """Walk `text` through `grammar` one byte token at a time (ids 2..257 are the 256 bytes): False when the
    grammar masks a byte, or masks EOS at the end (the text is unfinished)."""
    g = L.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    assert g, f"llama.cpp rejected the grammar:\n{grammar[:2000]}"
    try:
        data = (L.llama_token_data * 1)()
        for b in text.encode():
            data[0].id, data[0].logit, data[0].p = 2 + b, 0.0, 0.0
            arr = L.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
            L.llama_sampler_apply(g, ctypes.byref(arr))
            if data[0].logit == float("-inf"):
                return False
            L.llama_sampler_accept(g, 2 + b)
        data[0].id, data[0].logit = L.llama_vocab_eos(vocab), 0.0
        arr = L.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
        L.llama_sampler_apply(g, ctypes.byref(arr))
        return data[0].logit != float("-inf")
    finally:
        L.llama_sampler_free(g)


def test_grammar_rejects_what_it_must(vocab):
    """Walk fixed strings through the grammar: registered names and valid JSON only."""
    grammar = caller_grammar(TOOLS, max_tokens=512)
    accepts = functools.partial(admits, vocab, grammar)

    assert accepts('Action: calculator\nAction Input: {"expression": "1+2"}')
    assert accepts(' Action: weekday\nAction Input: {"date": "2024-01-01"}')
    assert accepts('Action: list_countries\nAction Input: {}')
    assert accepts('Action: convert_units\nAction Input: {"value": 1.5, "from_unit": "km", "to_unit": "mi"}')
    assert not accepts('Action: calculator\nAction Input: {"expression": "1+2"')           # unfinished
    assert not accepts('Action: rm_rf\nAction Input: {}')                                   # unregistered
    assert not accepts('Action: calculator\nAction Input: {"expr": "1"}')                   # unknown key
    assert not accepts('Action: calculator\nAction Input: {}')                              # missing required
    assert not accepts('Action: date_add\nAction Input: {"date": "x", "days": "2"}')        # wrong type
    assert not accepts('Action: calculator\nAction Input: {"expression": "a\nb"}')          # raw control char
    assert accepts('Action: calculator\nAction Input: {"expression": "a\\nb"}')             # escaped is fine
    units = 'Action: convert_units\nAction Input: {"value": %s, "from_unit": "a", "to_unit": "b"}'
    assert accepts(units % "-12.5e99") and not accepts(units % "1e308")            # always a finite float


def test_route_grammar_admits_exactly_the_three_markers(vocab):
    seen = set()
    for seed in range(40):
        s = GrammarSampler(vocab, route_grammar(), seed)
        try:
            text, finished = s.sample(64)
        finally:
            s.close()
        assert finished
        r = au.route("I think so" + text.decode())
        assert r.marker and r.plan == "I think so" + text.decode()
        seen.add(r.kind)
    assert seen == {"caller", "conclusion", "give_up"}


def test_worst_case_bound_and_literals():
    assert worst_case_bytes({"type": "object"}) == float("inf")                     # free-form: no guarantee
    assert worst_case_bytes({"type": "string", "maxLength": 10}) == 2 + 60 + 1
    assert worst_case_bytes({"type": "array", "items": {"type": "boolean"}, "maxItems": 2}) == 2 + 2 * (6 + 2) + 1
    assert literal('a"b\\c\nd\x01') == '"a\\"b\\\\c\\nd\\x01"'
    from umi_edge.protocol.grammar import _fit

    for t in [*TOOLS, *_awkward_tools()]:   # every tool's longest admitted call fits the budget
        for space in (1, 5):
            fitted = _fit(t.name, t.parameters, 512, 256, 16, space)
            assert worst_case_bytes(fitted, space) + len(f" Action: {t.name}\nAction Input: ") <= 512
    # bounds shrink with the budget
    small = caller_grammar(TOOLS, max_tokens=128)
    big = caller_grammar(TOOLS, max_tokens=4096)
    assert len(small) < len(big)
    with pytest.raises(ValueError):
        caller_grammar([])
    random.seed(0)
