"""Real-model round trip (slow): SmolLM2-135M-Instruct's GGUF -> transformers -> a real HF checkpoint ->
umi_convert q8_0 -> llama.cpp, top-1 agreement with transformers over a few hundred positions of prose.
Plus a fast smoke test of the conversion benchmark."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TEXT = (
    "The history of the lighthouse is a history of people trying to make the sea a little less dangerous. "
    "Long before electric lamps, coastal communities lit fires on hills and cliffs to warn ships away from "
    "rocks and shoals. The most famous ancient example stood at Alexandria, in Egypt, where a tall stone tower "
    "guided sailors into the harbour for many centuries. In later times, towers were built from brick, iron "
    "and concrete, and their lights were improved with mirrors and lenses. A French engineer named Augustin "
    "Fresnel designed a lens made of many rings of glass, which could throw a beam of light much farther than "
    "earlier designs while using less fuel. Keepers lived in small houses beside the towers, trimming wicks, "
    "polishing glass and winding the clockwork that turned the lamps through the night. Their work was lonely "
    "and often dangerous, especially during storms, when waves could reach the windows of the lantern room. "
    "Today most lighthouses are automated, and satellite navigation tells ships exactly where they are, yet "
    "many towers still shine every night, and people travel a long way to visit them, climb their stairs and "
    "look out over the water from the top."
)


@pytest.fixture(scope="module")
def smollm2_hf(smollm2_gguf, tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a real HF checkpoint (f32 safetensors + its BPE tokenizer), rebuilt from the
    GGUF through transformers' GGUF loader."""
    import torch
    from transformers import AutoModelForCausalLM

    from tiny_tokenizers import real_bpe_tokenizer

    folder = tmp_path_factory.mktemp("smollm2-hf")
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name,
                                                 dtype=torch.float32)
    model.save_pretrained(folder)
    real_bpe_tokenizer(folder, smollm2_gguf, "smollm2")
    return folder


@pytest.mark.slow
def test_smollm2_round_trip_q8_0_top1(smollm2_hf, tmp_path):
    import llama_cpp
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from umi_convert import convert

    out = tmp_path / "smollm2-q8_0.gguf"
    summary = convert(smollm2_hf, out, outtype="q8_0", role="backbone", progress=False)
    assert summary["architecture"] == "llama" and summary["parameters"] > 100_000_000

    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    ids = tok(TEXT + " " + TEXT)["input_ids"][:320]
    assert len(ids) >= 300
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32).eval()
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=512, n_batch=512, logits_all=True, verbose=False)
    try:
        # the GGUF tokenizes the text like the HF tokenizer (the vocab converter's bar; checked here too)
        assert llm.tokenize((TEXT + " " + TEXT).encode(), add_bos=False, special=False)[:len(ids)] == ids
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()
    agree = float((got.argmax(-1) == want.argmax(-1)).mean())
    print(f"SmolLM2-135M q8_0 top-1 agreement with transformers f32: {agree:.4f} over {len(ids)} positions")
    assert agree >= 0.99


def test_bench_smoke(tiny_model):
    from umi_convert.bench import bench_convert

    src = tiny_model("LlamaForCausalLM")
    r = bench_convert(src, outtype="q8_0")
    assert r["ours"]["seconds"] > 0 and r["ours"]["peak_rss_mb"] > 0 and r["ours"]["size_bytes"] > 0
    assert r["reference"] is None
