"""Random-weight tiny Llama GGUFs (F32) written with gguf.GGUFWriter, and GPT-2's byte → unicode table."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def byte_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table (how byte-level BPE vocabularies store bytes)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


def write_llama_gguf(path, tokens: Sequence[str] = (), merges: Sequence[str] = (), *, n_embd: int, n_layer: int,
                     n_head: int, n_head_kv: int, n_ff: int, n_ctx: int, seed: int, scale: float, embd_scale: float,
                     out_scale: float, vocab_only: bool = False, vocab_from: Path | None = None,
                     model_name: str | None = None) -> None:
    """A Llama GGUF with a gpt2-style vocab: `tokens` (first two are BOS/EOS controls) and `merges`, or every
    tokenizer.ggml.* field copied from the GGUF `vocab_from`. Weights are N(0, 1) draws times `scale`
    (`embd_scale` for token_embd, `out_scale` for output), in a fixed order from `seed`; none if `vocab_only`."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(vocab_from)) if vocab_from is not None else None
    if reader is not None:
        assert not tokens and not merges, "tokens/merges come from vocab_from"
        n_vocab = len(reader.fields["tokenizer.ggml.tokens"].contents())
    else:
        n_vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    if model_name is not None:
        w.add_name(model_name)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    if reader is not None:
        w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if reader is not None:
        for key, field in reader.fields.items():
            if key.startswith("tokenizer.ggml."):
                sub = field.types[1] if len(field.types) > 1 else None
                w.add_key_value(key, field.contents(), field.types[0], sub)
    else:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(list(tokens))
        w.add_token_types([gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.NORMAL] * (n_vocab - 2))
        w.add_token_merges(list(merges))
        w.add_bos_token_id(0)
        w.add_eos_token_id(1)
    if not vocab_only:
        rng = np.random.default_rng(seed)
        kv = n_embd // n_head * n_head_kv

        def t(name, *shape, scale=scale):
            w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

        t("token_embd.weight", n_vocab, n_embd, scale=embd_scale)
        w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
        t("output.weight", n_vocab, n_embd, scale=out_scale)
        for i in range(n_layer):
            w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
            w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
            t(f"blk.{i}.attn_q.weight", n_embd, n_embd)
            t(f"blk.{i}.attn_k.weight", kv, n_embd)
            t(f"blk.{i}.attn_v.weight", kv, n_embd)
            t(f"blk.{i}.attn_output.weight", n_embd, n_embd)
            t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
            t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
            t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_tiny_lora(path, *, n_embd: int = 64, n_layer: int = 2, rank: int = 4, seed: int = 7,
                    scale: float = 0.5) -> None:
    """A random LoRA adapter GGUF on attn_q of every layer (llama.cpp layout: lora_a (r, in), lora_b (out, r))."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(rank))
    rng = np.random.default_rng(seed)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_a", (rng.standard_normal((rank, n_embd)) * scale).astype(np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_b", (rng.standard_normal((n_embd, rank)) * scale).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
