"""Output types and the per-tensor precision policy, in one place.

- `DIRECT` types are written by umi_convert itself, tensor by tensor, with gguf's Python encoders: the same
  outtypes llama.cpp's convert_hf_to_gguf.py writes, with byte-identical results.
- `LLAMA_CPP` types go through llama.cpp's own quantizer (llama_model_quantize) from an intermediate file,
  so the per-tensor type mix (e.g. Q6_K output in Q4_K_M) is exactly llama-quantize's.
- `auto` follows llama.cpp: the dtype of the first 2-D tensor, bf16 -> bf16, f16 -> f16, anything else f16.
"""
from __future__ import annotations

from umi_edge.errors import ConvertError

# outtype -> llama_ftype value (include/llama.h)
DIRECT: dict[str, int] = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32, "tq1_0": 36, "tq2_0": 37}
LLAMA_CPP: dict[str, int] = {
    "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13,
    "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18, "iq2_xxs": 19, "iq2_xs": 20,
    "q2_k_s": 21, "iq3_xs": 22, "iq3_xxs": 23, "iq1_s": 24, "iq4_nl": 25, "iq3_s": 26, "iq3_m": 27,
    "iq2_s": 28, "iq2_m": 29, "iq4_xs": 30, "iq1_m": 31, "mxfp4_moe": 38,
}
# llama.cpp refuses these without an importance matrix (tensor_requires_imatrix in llama-quant.cpp)
NEEDS_IMATRIX = frozenset({"iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq1_s", "iq1_m", "iq3_xxs", "q2_k_s"})
OUTTYPES: tuple[str, ...] = ("auto", *DIRECT, *LLAMA_CPP)
EDGE_DEFAULT = "q4_k_m"


def check_outtype(outtype: str) -> str:
    """Normalise and validate an --outtype value before anything is read."""
    t = outtype.lower()
    if t not in OUTTYPES:
        raise ConvertError(f"--outtype {outtype!r} is not a llama.cpp type; choose one of: {', '.join(OUTTYPES)}")
    if t in NEEDS_IMATRIX:
        raise ConvertError(f"--outtype {t} needs an importance matrix, which umi-edge convert does not compute; "
                           f"use q4_k_m, iq4_xs or another type")
    return t


def auto_outtype(first_2d_dtype: str | None) -> str:
    return {"BF16": "bf16", "F16": "f16"}.get(first_2d_dtype or "", "f16")


def intermediate_outtype(source_auto: str) -> str:
    """The direct type written before llama.cpp quantizes: the source's own 16-bit type (llama.cpp's usual
    convert-then-quantize path)."""
    return source_auto


def tensor_qtype(gguf_name: str, shape: tuple[int, ...], outtype: str):
    """The GGML type of one tensor in a DIRECT file, as llama.cpp's converter decides it."""
    import gguf

    Q = gguf.GGMLQuantizationType
    n_dims = len(shape)
    # 1-D tensors and norms stay F32: most of llama.cpp only handles F32 there
    if n_dims <= 1 or gguf_name.endswith("_norm.weight") or gguf_name[-7:] not in (".weight", ".lora_a", ".lora_b"):
        return Q.F32
    if outtype in ("tq1_0", "tq2_0") and gguf_name in ("token_embd.weight", "output.weight"):
        return Q.F16
    qtype = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "tq1_0": Q.TQ1_0, "tq2_0": Q.TQ2_0}[outtype]
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if shape[-1] % block != 0:
        # llama.cpp falls back to F16 when a row is not a whole number of blocks
        return Q.F16
    return qtype
