"""Random-weight GGUFs with a published model's exact shapes (Llama-2 7B / 13B), written with gguf-py one tensor
at a time (q4_0 blocks written directly with finite scales, F32 norms), and random LoRA adapters for them; plus
the byte counts those shapes imply, for estimates where a layout does not fit in memory."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

Q4_0_BLOCK, Q4_0_BYTES = 32, 18      # 32 weights: one f16 scale + 16 bytes of 4-bit quants
LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class Shape:
    name: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def linear(self, kind: str) -> tuple[int, int]:
        """(n_in, n_out) of one layer's linear weight."""
        kv = self.head_dim * self.n_head_kv
        return {"attn_q": (self.n_embd, self.n_embd), "attn_k": (self.n_embd, kv), "attn_v": (self.n_embd, kv),
                "attn_output": (self.n_embd, self.n_embd), "ffn_gate": (self.n_embd, self.n_ff),
                "ffn_up": (self.n_embd, self.n_ff), "ffn_down": (self.n_ff, self.n_embd)}[kind]

    def matrices(self) -> list[tuple[str, int, int]]:
        """(GGUF name, rows, cols) of every 2-D weight; cols is the dimension llama.cpp's rows run along."""
        out = [("token_embd.weight", self.n_vocab, self.n_embd)]
        for i in range(self.n_layer):
            for kind in LINEARS:
                n_in, n_out = self.linear(kind)
                out.append((f"blk.{i}.{kind}.weight", n_out, n_in))
        out.append(("output.weight", self.n_vocab, self.n_embd))
        return out

    def norms(self) -> list[str]:
        layers = [f"blk.{i}.{n}_norm.weight" for i in range(self.n_layer) for n in ("attn", "ffn")]
        return layers + ["output_norm.weight"]

    def weight_bytes(self) -> int:
        q = sum(r * c for _, r, c in self.matrices()) // Q4_0_BLOCK * Q4_0_BYTES
        return q + 4 * self.n_embd * len(self.norms())

    def kv_bytes(self, n_ctx: int, bytes_per_value: float = 2.0) -> int:
        """One context's K + V cache (f16 by default)."""
        return int(2 * self.n_layer * n_ctx * self.n_head_kv * self.head_dim * bytes_per_value)

    def adapter_bytes(self, rank: int) -> int:
        """An F16 LoRA on every linear weight of every layer: rank × (n_in + n_out) values per matrix."""
        return 2 * rank * self.n_layer * sum(sum(self.linear(k)) for k in LINEARS)


SHAPES = {
    "7b": Shape("llama-2-7b-shape", n_embd=4096, n_layer=32, n_head=32, n_head_kv=32, n_ff=11008, n_vocab=32000,
                n_ctx_train=4096),
    "13b": Shape("llama-2-13b-shape", n_embd=5120, n_layer=40, n_head=40, n_head_kv=40, n_ff=13824, n_vocab=32000,
                 n_ctx_train=4096),
}


def _vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocab of n_vocab pieces: <unk> <s> </s>, the 256 byte pieces, then words."""
    import gguf

    T = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [T.UNKNOWN, T.CONTROL, T.CONTROL] + [T.BYTE] * 256
    chars = [chr(c) for c in range(33, 127)]
    words = ["▁"] + [f"▁{c}" for c in chars] + chars
    words += [f"▁{a}{b}" for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"]
    i = 0
    while len(tokens) + len(words) < n_vocab:
        words.append(f"▁w{i}")
        i += 1
    tokens += words[:n_vocab - len(tokens)]
    types += [T.NORMAL] * (n_vocab - len(types))
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(n_vocab - 259)]
    return tokens, scores, types


def write_model(shape: Shape, path: Path, *, seed: int = 0, progress: Callable[[str], None] = lambda s: None) -> Path:
    """A Llama GGUF of `shape` (general.file_type MOSTLY_Q4_0) with random q4_0 weights: scales drawn in
    [0.002, 0.006) (weights of about ±0.03), F32 norms of ones. Written through a temporary file, then renamed."""
    import gguf
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(shape.name)
    w.add_context_length(shape.n_ctx_train)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_rope_dimension_count(shape.head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    tokens, scores, types = _vocab(shape.n_vocab)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    Q = gguf.GGMLQuantizationType
    mats = shape.matrices()
    for name, rows, cols in mats:
        w.add_tensor_info(name, (rows, cols), np.dtype(np.float32), rows * cols // Q4_0_BLOCK * Q4_0_BYTES,
                          raw_dtype=Q.Q4_0)
    for name in shape.norms():
        w.add_tensor_info(name, (shape.n_embd,), np.dtype(np.float32), 4 * shape.n_embd)
    block = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
    rng = np.random.default_rng(seed)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for i, (name, rows, cols) in enumerate(mats):
            n = rows * cols // Q4_0_BLOCK
            data = np.empty(n, dtype=block)
            data["d"] = rng.uniform(0.002, 0.006, n).astype(np.float16)
            data["qs"] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
            w.write_tensor_data(data.view(np.uint8))
            if i % 32 == 0:
                progress(f"{path.name}: tensor {i + 1}/{len(mats)}")
        ones = np.ones(shape.n_embd, dtype=np.float32)
        for _ in shape.norms():
            w.write_tensor_data(ones)
        w.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_adapter(shape: Shape, path: Path, *, rank: int, seed: int) -> Path:
    """A random F16 LoRA adapter GGUF on every linear weight of `shape` (lora_a (rank, n_in), lora_b (n_out, rank))."""
    import gguf
    import numpy as np

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    pairs = [(f"blk.{i}.{k}.weight", *shape.linear(k)) for i in range(shape.n_layer) for k in LINEARS]
    for name, n_in, n_out in pairs:
        w.add_tensor_info(name + ".lora_a", (rank, n_in), np.dtype(np.float16), 2 * rank * n_in)
        w.add_tensor_info(name + ".lora_b", (n_out, rank), np.dtype(np.float16), 2 * rank * n_out)
    rng = np.random.default_rng(seed)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for name, n_in, n_out in pairs:
            w.write_tensor_data((rng.standard_normal((rank, n_in), dtype=np.float32) * 0.01).astype(np.float16))
            w.write_tensor_data((rng.standard_normal((n_out, rank), dtype=np.float32) * 0.01).astype(np.float16))
        w.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


ROLE_RANKS = {"planner": 16, "caller": 16, "summarizer": 16, "trunk": 8}   # as the shipped default set's adapters


def cached_files(shape: Shape, root: Path, *, progress: Callable[[str], None] = lambda s: None) -> dict[str, Path]:
    """{"model": GGUF, role: adapter GGUF} for `shape` under `root`, written on first use (a file of the expected
    size is reused)."""
    root = Path(root) / shape.name
    files = {"model": root / f"{shape.name}.q4_0.gguf"}
    if not files["model"].is_file() or files["model"].stat().st_size < shape.weight_bytes():
        progress(f"writing {files['model']} ({shape.weight_bytes() / 2**30:.2f} GiB of random q4_0 weights)")
        write_model(shape, files["model"], progress=progress)
    for i, (role, rank) in enumerate(ROLE_RANKS.items()):
        files[role] = root / f"{role}.r{rank}.lora.gguf"
        if not files[role].is_file() or files[role].stat().st_size < shape.adapter_bytes(rank):
            progress(f"writing {files[role]}")
            write_adapter(shape, files[role], rank=rank, seed=100 + i)
    return files
