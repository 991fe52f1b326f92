"""Tokenizer conversion (umi_convert.vocab): GGUF vocab metadata equals llama.cpp's, and llama.cpp's
tokenization of the converted vocab equals the HF reference ids (SentencePiece α-UMi legacy segmentation,
SmolLM2 and Llama-3 byte-level BPE)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import tiny_tokenizers as tt
from golden_prompts import CALLER_37, PLANNER_37, SUMMARIZER_37
from umi_convert.vocab import CHECK_TEXT
from shared_data import TRAIN as TRAIN_EXAMPLES
from shared_data import needs
from umi_edge.errors import ConvertError

CACHE = Path(__file__).parent / ".cache"

# the worked-example prompts (protocol.md §3.7), verbatim
GOLDEN_PROMPTS = {"planner": PLANNER_37, "caller": CALLER_37, "summarizer": SUMMARIZER_37}

EDGE_CASES = [
    "a</s>caller: x", " leading space", "trailing spaces  ", "\n\nnew\nlines\n", "  </s>  ", "</s></s>x",
    "</s>", "x</s> conclusion: ", "tab\tseparated\tvalues", "Unicode: naïve café, 日本語, 🦙🚀, Ελληνικά",
    "digits 1234567890 3.14159 -42", "{\n  \"city\": \"Paris\"\n}", "observation: {'temp_c': 18}assistant: ",
    "Next: caller.</s>caller: Action: get_time_for_timeapi\nAction Input: {}", "   ", "\u2581literal block",
    "observation: <p>old <s>price</s> new</p><unk> tag",  # HTML <s> in a tool response: HF makes it BOS
]

BPE_TEXTS = tt.corpus() + [
    CHECK_TEXT, "Hello world! 123 4567 89", "  two  spaces   three",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<|begin_of_text|>hi<|eot_id|>",
    "def f(x):\n    return x ** 2\n\n\n", "Ünïcödé ñ 中文 العربية हिन्दी 🦙🦙 ✅", "I've 'RE 'll 'D We'Ve a'lL",
    "tabs\t\tand\r\nCRLF", "...!!!???---===", "",
]


def vocab_gguf(folder: Path, out: Path, config: dict | None = None) -> Path:
    """A vocab-only llama GGUF (minimal hparams + our tokenizer keys, no tensors), enough for a
    `Llama(vocab_only=True)` load."""
    import gguf

    from umi_convert.vocab import write_vocab

    if config is None:
        path = folder / "config.json"
        config = json.loads(path.read_text()) if path.is_file() else {}
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_block_count(1)
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(16)
    write_vocab(w, folder, config, gguf.MODEL_ARCH.LLAMA)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def load_vocab(path: Path):
    import llama_cpp

    return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)


def tokenizer_fields(path: Path) -> dict:
    """tokenizer.* keys of a GGUF as plain Python values."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


SPECIALS = {"<unk>": 0, "<s>": 1, "</s>": 2}


def alpha_umi_ids(llm, prompt: str) -> list[int]:
    """The runtime procedure of protocol.md §4.3: BOS, then the prompt split at special-token text, each
    non-empty segment tokenized on its own (no BOS, no special parsing), joined by the special ids.
    Splitting at <s>/<unk> as well as </s> is what the HF slow tokenizer does."""
    import re

    ids = [1]
    for part in re.split("(</s>|<s>|<unk>)", prompt):
        if part in SPECIALS:
            ids.append(SPECIALS[part])
        elif part:
            ids += llm.tokenize(part.encode("utf-8"), add_bos=False, special=False)
    return ids


def slow_reference_ids(model_file: Path, prompt: str) -> list[int]:
    """transformers' slow LlamaTokenizer(legacy=True) without transformers: BOS, split at the special
    tokens (AddedToken lstrip/rstrip False keeps the spaces), SentencePiece on each segment with its own
    dummy prefix. transformers 5 has no slow tokenizer, and its converted fast one folds the dummy prefix
    into a leading space (' conclusion' -> '▁conclusion' instead of '▁', '▁conclusion'), so it is not the
    reference; under transformers 4.x the test also checks the real slow tokenizer."""
    import re

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    ids = [1]
    for part in re.split("(</s>|<s>|<unk>)", prompt):
        if part in SPECIALS:
            ids.append(SPECIALS[part])
        elif part:
            ids += sp.encode(part)
    return ids


def alpha_umi_prompts(train: bool = True) -> list[str]:
    """The in-repo prompts, plus every third train-example input when `train` and ../shared/data is there."""
    prompts = list(GOLDEN_PROMPTS.values()) + tt.corpus() + EDGE_CASES
    names = ("train_planner.json", "train_caller.json", "train_summarizer.json", "train_backbone.json")
    for name in names if train else ():
        path = TRAIN_EXAMPLES / name
        if path.is_file():
            prompts += [r["input"] for r in json.loads(path.read_text(encoding="utf-8"))[::3]]
    return prompts


# --- SentencePiece (α-UMi) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("spm")
    tt.make_spm_tokenizer(folder)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "vocab_size": 600, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0,
    }))
    return folder


@pytest.fixture(scope="module")
def spm_gguf(spm_dir, tmp_path_factory) -> Path:
    return vocab_gguf(spm_dir, tmp_path_factory.mktemp("spm-gguf") / "vocab.gguf")


def test_spm_metadata(spm_dir, spm_gguf):
    import gguf
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_dir / "tokenizer.model"))
    f = tokenizer_fields(spm_gguf)
    assert f["tokenizer.ggml.model"] == "llama" and f["tokenizer.ggml.pre"] == "default"
    assert f["tokenizer.ggml.tokens"] == [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    assert f["tokenizer.ggml.scores"] == pytest.approx([sp.get_score(i) for i in range(sp.vocab_size())])
    types = f["tokenizer.ggml.token_type"]
    assert types[:3] == [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    assert set(types[3:259]) == {gguf.TokenType.BYTE} and set(types[259:]) == {gguf.TokenType.NORMAL}
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert f["tokenizer.ggml.padding_token_id"] == 0
    assert f["tokenizer.ggml.add_bos_token"] is True and f["tokenizer.ggml.add_eos_token"] is False


def test_spm_pads_to_config_vocab_size(spm_dir, tmp_path):
    """Embedding rows beyond the SentencePiece vocab become [PAD<i>] UNUSED tokens, as llama.cpp writes."""
    import gguf

    f = tokenizer_fields(vocab_gguf(spm_dir, tmp_path / "v.gguf", {"vocab_size": 604}))
    assert f["tokenizer.ggml.tokens"][600:] == ["[PAD600]", "[PAD601]", "[PAD602]", "[PAD603]"]
    assert f["tokenizer.ggml.token_type"][600:] == [gguf.TokenType.UNUSED] * 4


def test_spm_literal_eos_minimal(spm_dir, spm_gguf):
    """protocol.md §4.3 minimal check: exactly one id 2, followed by the ▁-prefixed pieces of 'caller'."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_dir / "tokenizer.model"))
    ids = alpha_umi_ids(load_vocab(spm_gguf), "a</s>caller: x")
    assert ids.count(2) == 1
    after = [sp.id_to_piece(i) for i in ids[ids.index(2) + 1:]]
    assert after[0].startswith("\u2581") and "".join(after).startswith("\u2581caller:")


@pytest.mark.parametrize("train", [False, pytest.param(True, marks=needs(TRAIN_EXAMPLES))],
                         ids=["in-repo", "train-examples"])
def test_spm_token_exact_alpha_umi(spm_dir, spm_gguf, train):
    """The bar: protocol.md §3.7 prompts and edge cases (and the train-example inputs) give the slow-tokenizer ids."""
    llm = load_vocab(spm_gguf)
    prompts = alpha_umi_prompts(train)
    assert len(prompts) > (100 if train else 30)
    slow = _slow_llama_tokenizer(spm_dir)
    for prompt in prompts:
        want = slow_reference_ids(spm_dir / "tokenizer.model", prompt)
        assert alpha_umi_ids(llm, prompt) == want, prompt[:200]
        if slow is not None:
            assert slow(prompt).input_ids == want, prompt[:200]


def test_spm_whole_prompt_special_parsing(spm_dir, spm_gguf):
    """llama.cpp's parse_special over the whole prompt gives the same ids as the per-segment split (its
    SPM tokenizer re-adds the space prefix after a special token): a simpler equivalent for this build."""
    llm = load_vocab(spm_gguf)
    for prompt in list(GOLDEN_PROMPTS.values()) + EDGE_CASES:
        want = slow_reference_ids(spm_dir / "tokenizer.model", prompt)
        assert llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True) == want, prompt[:200]


def test_spm_without_special_parsing_is_wrong(spm_gguf):
    """Tokenizing the whole prompt as plain text turns </s> into characters (why the split exists)."""
    llm = load_vocab(spm_gguf)
    assert 2 not in llm.tokenize(GOLDEN_PROMPTS["summarizer"].encode(), add_bos=True, special=False)


@pytest.fixture(scope="module")
def real_llama2(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(folder with the real Llama-2 tokenizer.model rebuilt from llama.cpp's ggml-vocab-llama-spm.gguf in
    the α-UMi layout, our converted vocab GGUF, llama.cpp's own GGUF)."""
    try:
        source = tt.llama_cpp_vocab_gguf(CACHE, "llama-spm")
    except Exception as e:  # no network and no cache
        pytest.skip(f"llama-cpp-python sdist unavailable: {e}")
    folder = tmp_path_factory.mktemp("real-llama2")
    tt.real_spm_tokenizer(folder, source)
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 0,
    }))
    return folder, vocab_gguf(folder, folder / "vocab.gguf"), source


def test_real_llama2_rebuild_passes_llama_cpp_cases(real_llama2):
    """The rebuilt tokenizer.model reproduces llama.cpp's own expected ids for its Llama-SPM test strings
    (models/ggml-vocab-llama-spm.gguf.inp/.out), so it is the real Llama-2 tokenizer."""
    import sentencepiece as spm

    folder, _, source = real_llama2
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    inputs = source.with_name(source.name + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    outputs = source.with_name(source.name + ".out").read_text(encoding="utf-8").strip("\n").split("\n")
    assert len(inputs) - 1 == len(outputs) > 20
    for text, ids in zip(inputs, outputs):
        assert sp.encode(text) == [int(i) for i in ids.split()], repr(text)


def test_real_llama2_metadata_equals_llama_cpp(real_llama2):
    """Our tokenizer keys for the α-UMi (Llama-2) tokenizer equal llama.cpp's own Llama-SPM vocab file, plus
    the pad id α-UMi's config.json adds. That file was made from a folder with tokenizer.json, which names
    <unk>; the α-UMi layout has none, so (like llama.cpp's converter on it) no unknown id is written and
    llama.cpp uses its SPM default, the same id 0."""
    _, ours, source = real_llama2
    want = {**tokenizer_fields(source), "tokenizer.ggml.padding_token_id": 0}
    assert want.pop("tokenizer.ggml.unknown_token_id") == 0
    assert tokenizer_fields(ours) == want
    assert load_vocab(ours).tokenize(b"<unk>", add_bos=False, special=True) == [0]


def test_real_llama2_token_exact_alpha_umi(real_llama2):
    """The bar on the real α-UMi vocabulary: protocol.md §3.7 prompts, train-example inputs and edge cases."""
    from umi_edge.protocol.alpha_umi import encode

    folder, ours, _ = real_llama2
    llm = load_vocab(ours)

    def segment(text: str) -> list[int]:
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    for prompt in alpha_umi_prompts():
        want = slow_reference_ids(folder / "tokenizer.model", prompt)
        assert alpha_umi_ids(llm, prompt) == want, prompt[:200]
        assert llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True) == want, prompt[:200]
        if "<s>" not in prompt and "<unk>" not in prompt:  # the protocol's encode splits at </s> only
            assert encode(prompt, segment, 1, 2) == want, prompt[:200]


def _slow_llama_tokenizer(folder: Path):
    """transformers' slow LlamaTokenizer(legacy=True) where it still exists (transformers < 5)."""
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) >= 5:
        return None
    return transformers.LlamaTokenizer.from_pretrained(str(folder), use_fast=False, legacy=True)


# --- byte-level BPE -------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["smollm2", "llama3", "qwen2"])
def tiny_bpe(request, tmp_path_factory) -> tuple[str, Path, Path]:
    folder = tmp_path_factory.mktemp(f"bpe-{request.param}")
    tt.make_bpe_tokenizer(folder, request.param)
    return request.param, folder, vocab_gguf(folder, folder / "vocab.gguf", {})


def hf_fast(folder: Path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(folder))


def assert_bpe_token_exact(llm, hf, texts, *, add_special: bool) -> None:
    for text in texts:
        want = hf(text, add_special_tokens=add_special).input_ids
        got = llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)
        assert got == want, text[:200]


def test_tiny_bpe_pre_type_by_definition(tiny_bpe, caplog):
    """A trained tokenizer has a hash llama.cpp does not know; its pre-tokenizer definition decides."""
    style, folder, gguf_path = tiny_bpe
    f = tokenizer_fields(gguf_path)
    assert f["tokenizer.ggml.model"] == "gpt2"
    assert f["tokenizer.ggml.pre"] == {"smollm2": "smollm", "llama3": "llama-bpe", "qwen2": "qwen2"}[style]
    assert len(f["tokenizer.ggml.merges"]) > 0 and "tokenizer.chat_template" in f


def test_tiny_bpe_token_exact(tiny_bpe):
    style, folder, gguf_path = tiny_bpe
    llm, hf = load_vocab(gguf_path), hf_fast(folder)
    assert_bpe_token_exact(llm, hf, BPE_TEXTS, add_special=False)
    if style == "llama3":  # add_bos_token comes from its TemplateProcessing
        assert_bpe_token_exact(llm, hf, BPE_TEXTS, add_special=True)


@pytest.fixture(scope="module")
def published_smollm2(smollm2_gguf):
    """The published SmolLM2 GGUF, opened once (parsing its 49k-token vocabulary takes seconds)."""
    import gguf

    return gguf.GGUFReader(str(smollm2_gguf))


@pytest.fixture(scope="module")
def real_smollm2(published_smollm2, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("real-smollm2")
    tt.real_bpe_tokenizer(folder, published_smollm2, "smollm2")
    return folder, vocab_gguf(folder, folder / "vocab.gguf", {"vocab_size": 49152})


def test_real_smollm2_metadata_equals_published_gguf(real_smollm2, published_smollm2):
    """Every tokenizer key we write for the rebuilt SmolLM2 tokenizer equals the published GGUF's, plus the
    explicit add_eos_token=False that llama.cpp's current converter writes for a ByteLevel post-processor
    (the published file predates that rule; llama.cpp's default is the same False)."""
    folder, ours = real_smollm2
    published = {k: f.contents() for k, f in published_smollm2.fields.items() if k.startswith("tokenizer.")}
    assert tokenizer_fields(ours) == {**published, "tokenizer.ggml.add_eos_token": False}


def test_real_smollm2_token_exact(real_smollm2):
    """llama.cpp on our vocab == the HF fast tokenizer of the rebuilt tokenizer.json."""
    folder, ours = real_smollm2
    assert_bpe_token_exact(load_vocab(ours), hf_fast(folder), BPE_TEXTS, add_special=True)


@pytest.mark.slow
def test_real_smollm2_token_exact_vs_transformers_gguf(real_smollm2, smollm2_gguf):
    """... and == transformers' own tokenizer read from the published GGUF (`gguf_file=`)."""
    transformers = pytest.importorskip("transformers")
    _, ours = real_smollm2
    from_gguf = transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    assert_bpe_token_exact(load_vocab(ours), from_gguf, BPE_TEXTS, add_special=False)


@pytest.fixture(scope="module")
def real_llama3(tmp_path_factory) -> tuple[Path, Path]:
    try:
        source = tt.llama_cpp_vocab_gguf(CACHE, "llama-bpe")
    except Exception as e:  # no network and no cache
        pytest.skip(f"llama-cpp-python sdist unavailable: {e}")
    folder = tmp_path_factory.mktemp("real-llama3")
    tt.real_bpe_tokenizer(folder, source, "llama3")
    return folder, vocab_gguf(folder, folder / "vocab.gguf", {"vocab_size": 128256})


@pytest.mark.slow
def test_real_llama3_token_exact(real_llama3):
    """The real Llama-3 vocabulary: llama.cpp's hash table gives llama-bpe, and ids match HF."""
    folder, ours = real_llama3
    assert tokenizer_fields(ours)["tokenizer.ggml.pre"] == "llama-bpe"
    llm, hf = load_vocab(ours), hf_fast(folder)
    assert_bpe_token_exact(llm, hf, BPE_TEXTS, add_special=True)


@pytest.mark.slow
def test_real_qwen2_token_exact(tmp_path, llama_cpp_converter):
    """The real Qwen2 vocabulary (llama.cpp's ggml-vocab-qwen2.gguf): llama.cpp's hash table gives qwen2,
    the vocabulary round-trips, ids match HF, and a Qwen2 model's tokenizer keys equal llama.cpp's
    converter's (the non-llama vocab path)."""
    try:
        source = tt.llama_cpp_vocab_gguf(CACHE, "qwen2")
    except Exception as e:  # no network and no cache
        pytest.skip(f"llama-cpp-python sdist unavailable: {e}")
    tt.real_bpe_tokenizer(tmp_path, source, "qwen2")
    ours = tokenizer_fields(vocab_gguf(tmp_path, tmp_path / "vocab.gguf", {"vocab_size": 151936}))
    theirs = tokenizer_fields(source)
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
        assert ours[key] == theirs[key], key
    # ids past the tokenizer (151646..151935) are [PAD<i>]: UNUSED now, USER_DEFINED when that file was made
    n = 151646
    assert ours["tokenizer.ggml.token_type"][:n] == theirs["tokenizer.ggml.token_type"][:n]
    assert set(ours["tokenizer.ggml.token_type"][n:]) == {5}
    llm, hf = load_vocab(tmp_path / "vocab.gguf"), hf_fast(tmp_path)
    # llama.cpp forces EOG-looking NORMAL tokens such as Qwen's "</s>" (128247) to CONTROL when it loads a
    # vocabulary, so parse_special matches them where HF sees plain text: a runtime rule, not the file's
    assert llm.tokenize(b"</s>", add_bos=False, special=True) == [128247]
    assert len(hf("</s>").input_ids) == 3
    assert_bpe_token_exact(llm, hf, [t for t in BPE_TEXTS if "</s>" not in t], add_special=True)

    config = dict(_LLAMA_CONFIG, architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=151936,
                  bos_token_id=151643, eos_token_id=151645, pad_token_id=None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    import gguf

    from umi_convert.vocab import write_vocab

    w = gguf.GGUFWriter(str(tmp_path / "qwen.gguf"), "qwen2")
    write_vocab(w, tmp_path, config, gguf.MODEL_ARCH.QWEN2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    ref = llama_cpp_vocab(llama_cpp_converter, tmp_path, tmp_path / "ref.gguf")
    assert tokenizer_fields(tmp_path / "qwen.gguf") == ref


# --- bad input ------------------------------------------------------------------------------------------


def test_unreadable_tokenizer_model(spm_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (bad / name).write_bytes((spm_dir / name).read_bytes())
    (bad / "tokenizer.model").write_bytes((spm_dir / "tokenizer.model").read_bytes()[:100])
    with pytest.raises(ConvertError, match=r"tokenizer\.model"):
        vocab_gguf(bad, tmp_path / "v.gguf", {})


def test_unreadable_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')
    with pytest.raises(ConvertError, match=r"tokenizer\.json"):
        vocab_gguf(tmp_path, tmp_path / "v.gguf", {})


def test_no_tokenizer(tmp_path):
    with pytest.raises(ConvertError, match="no tokenizer.model or tokenizer.json"):
        vocab_gguf(tmp_path, tmp_path / "v.gguf", {})


def test_unknown_pre_tokenizer(tmp_path):
    """A BPE whose pre-tokenizer llama.cpp has no implementation for is refused, naming the file."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(tt.corpus(), trainer=trainers.BpeTrainer(vocab_size=300, show_progress=False))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ConvertError, match=r"tokenizer\.json: BPE pre-tokenizer not recognized"):
        vocab_gguf(tmp_path, tmp_path / "v.gguf", {})


def test_token_ids_beyond_vocab_size(tiny_bpe, tmp_path):
    _, folder, _ = tiny_bpe
    with pytest.raises(ConvertError, match="vocab_size"):
        vocab_gguf(folder, tmp_path / "v.gguf", {"vocab_size": 100})


# --- parity with llama.cpp's converter (--vocab-only) ---------------------------------------------------

_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 1, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 4096, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}


def llama_cpp_vocab(converter: Path, folder: Path, out: Path) -> dict:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(converter.parent / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(converter), str(folder), "--vocab-only", "--outfile", str(out)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return tokenizer_fields(out)


def _spm_variant(spm_dir: Path, folder: Path, variant: str) -> Path:
    folder.mkdir()
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((spm_dir / name).read_bytes())
    config = dict(_LLAMA_CONFIG, vocab_size=600)
    if variant == "modern":
        # transformers >= 4.34 layout: added_tokens_decoder flags, an added token, a user-defined piece,
        # add_prefix_space, and ids beyond vocab_size (ignored by both)
        config["vocab_size"] = 603
        tc = json.loads((folder / "tokenizer_config.json").read_text())
        tc["add_prefix_space"] = True
        tc["added_tokens_decoder"] = {
            "0": {"content": "<unk>", "special": True, "normalized": False, "lstrip": False, "rstrip": False},
            "1": {"content": "<s>", "special": True, "normalized": False, "lstrip": False, "rstrip": False},
            "2": {"content": "</s>", "special": True, "normalized": False, "lstrip": False, "rstrip": False},
            "601": {"content": "\u2581tool", "special": False, "normalized": False, "lstrip": False, "rstrip": False},
            "602": {"content": "<|tool|>", "special": False, "normalized": False, "lstrip": False, "rstrip": False},
            "700": {"content": "<late>", "special": True, "normalized": False, "lstrip": False, "rstrip": False},
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(tc))
        (folder / "added_tokens.json").write_text(json.dumps({"<pad>": 600, "<far>": 650}))
    elif variant == "alpha-umi-13b-summarizer":
        (folder / "added_tokens.json").write_text(json.dumps({"<pad>": 600}))   # outside the embedding
    elif variant == "codellama":
        config["vocab_size"] = 32016   # llama.cpp keys its infill-token ids on this size
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("variant", [
    pytest.param("alpha-umi", marks=pytest.mark.slow),   # also covered by test_convert_parity's tiny Llama
    pytest.param("alpha-umi-13b-summarizer", marks=pytest.mark.slow),
    pytest.param("codellama", marks=pytest.mark.slow),
    "modern",
])
def test_spm_vocab_equals_llama_cpp(variant, spm_dir, tmp_path, llama_cpp_converter):
    folder = _spm_variant(spm_dir, tmp_path / "src", variant)
    ref = llama_cpp_vocab(llama_cpp_converter, folder, tmp_path / "ref.gguf")
    ours = tokenizer_fields(vocab_gguf(folder, tmp_path / "ours.gguf"))
    assert ours == ref


@pytest.mark.slow
def test_real_bpe_vocab_equals_llama_cpp(real_smollm2, tmp_path, llama_cpp_converter):
    folder, ours = real_smollm2
    (folder / "config.json").write_text(json.dumps(dict(_LLAMA_CONFIG, vocab_size=49152, bos_token_id=1,
                                                        eos_token_id=2, pad_token_id=None)))
    ref = llama_cpp_vocab(llama_cpp_converter, folder, tmp_path / "ref.gguf")
    assert tokenizer_fields(vocab_gguf(folder, tmp_path / "ours.gguf")) == ref


def _bpe_variants(tmp_path: Path) -> list[Path]:
    """Tiny BPE folders that exercise the special-token rules: post-processor vs tokenizer_config flags,
    a template BOS the config does not name, no tokenizer_config at all."""
    folders = []
    for style in ("smollm2", "llama3"):
        base = tmp_path / style
        tt.make_bpe_tokenizer(base, style)
        (base / "config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 2}))
        folders.append(base)
        for variant, edit in (
            ("flags", lambda c: c.update(add_bos_token=True, add_eos_token=True)),
            ("nobos", lambda c: [c.pop(k, None) for k in ("bos_token", "unk_token")]),
            ("noconfig", None),
        ):
            folder = tmp_path / f"{style}-{variant}"
            folder.mkdir()
            (folder / "tokenizer.json").write_bytes((base / "tokenizer.json").read_bytes())
            if edit is not None:
                config = json.loads((base / "tokenizer_config.json").read_text())
                edit(config)
                (folder / "tokenizer_config.json").write_text(json.dumps(config))
            folders.append(folder)
    return folders


def test_special_vocab_rules_equal_llama_cpp(tmp_path, llama_cpp_converter):
    """Our SpecialVocab (gguf 0.19.0 + llama.cpp's newer post-processor rules) gives the ids, add-flags,
    merges and chat template of the gguf-py that llama.cpp's converter vendors."""
    import subprocess
    import sys

    from umi_convert import vocab

    import gguf

    folders = _bpe_variants(tmp_path)
    probe = (
        "import gguf, json, sys\n"
        "out = []\n"
        "for f in sys.argv[1:]:\n"
        "    v = gguf.SpecialVocab(f, load_merges=True)\n"
        "    out.append([v.special_token_ids, v.add_special_token, len(v.merges), v.chat_template])\n"
        "print(json.dumps(out))\n"
    )
    env = {"PYTHONPATH": str(llama_cpp_converter.parent / "gguf-py"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", probe, *map(str, folders)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    for folder, want in zip(folders, json.loads(r.stdout)):
        v = vocab._special_vocab(gguf, folder, load_merges=True)
        got = [v.special_token_ids, v.add_special_token, len(v.merges), v.chat_template]
        assert json.loads(json.dumps(got)) == want, folder.name


def test_sentencepiece_style_tokenizer_json_needs_tokenizer_model(tmp_path):
    """A byte-fallback BPE tokenizer.json (SentencePiece exported by transformers) without tokenizer.model:
    llama.cpp reads it through transformers; we ask for the tokenizer.model instead."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.train_from_iterator(tt.corpus(), trainer=trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                                     special_tokens=["<unk>", "<s>", "</s>"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ConvertError, match="needs its tokenizer.model"):
        vocab_gguf(tmp_path, tmp_path / "v.gguf", {})


@pytest.mark.parametrize("name, text", [
    ("added_tokens.json", '{"<tool>": "six hundred"}'),
    ("tokenizer_config.json", '{"added_tokens_decoder": {"600": {"special": true}}}'),
])
def test_malformed_added_tokens(name, text, spm_dir, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes((spm_dir / "tokenizer.model").read_bytes())
    (folder / name).write_text(text)
    with pytest.raises(ConvertError, match=name.replace(".", r"\.")):
        vocab_gguf(folder, tmp_path / "v.gguf", {"vocab_size": 610})
