"""PEFT LoRA adapter folder -> GGUF LoRA adapter that llama.cpp loads on top of the converted base
(`llama_adapter_lora_init`), with the tensor names, row permutations, precision and keys of llama.cpp's
convert_lora_to_gguf.py.

llama.cpp scales every pair by `alpha / rank`. PEFT's scale is `lora_alpha / r` too, except with rsLoRA
(`lora_alpha / sqrt(r)`) and per-module `alpha_pattern`; there the difference is folded into lora_b, where
llama.cpp's own converter writes adapters that apply the wrong scale. Rank-1 pairs stay 2-D (llama.cpp's
converter squeezes them to 1-D, which its adapter loader then rejects).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umi_edge.errors import ConvertError

from . import precision
from .output import check_output, checkpoint_files, temp_beside
from .tensor_ref import Mmaps, TensorRef, short_repr

ADAPTER_CONFIG = "adapter_config.json"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
OUTTYPES = ("auto", "f32", "f16", "bf16", "q8_0")
_PREFIX = "base_model.model."
MAX_RANK = 1 << 16
_F32_MAX = 3.4028234663852886e38  # adapter.lora.alpha is stored as float32

log = logging.getLogger(__name__)

__all__ = ["convert_lora", "is_adapter", "ADAPTER_CONFIG", "OUTTYPES"]


def is_adapter(folder) -> bool:
    """True for a PEFT adapter folder (the `convert` CLI dispatches these to convert_lora)."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


@dataclass
class _Pair:
    base_name: str                 # HF name of the base weight, e.g. model.layers.0.self_attn.q_proj.weight
    a: TensorRef                   # (r, in); for an embedding (r, vocab)
    b: TensorRef                   # (out, r); for an embedding (hidden, r)
    embedding: bool = False        # PEFT lora_embedding_A/B: llama.cpp wants lora_a transposed
    scale_fix: float = 1.0         # multiplies lora_b so llama.cpp's alpha/rank equals PEFT's scale


@dataclass
class _Out:
    name: str
    ref: TensorRef
    shape: tuple[int, ...]
    qtype: object
    perm: np.ndarray | None = None
    factor: float = 1.0
    transpose: bool = False


def convert_lora(adapter_dir, out, *, base=None, outtype: str = "f16", force: bool = False,
                 role: str | None = None) -> dict:
    """Convert the PEFT adapter in `adapter_dir` to the GGUF adapter `out`; returns a summary dict.

    The base model's config.json comes from `base` (a folder) or else from adapter_config.json's
    `base_model_name_or_path` (a local folder, or a hub repo id whose config.json alone is fetched); no base
    weights are read. `role` records umi.role / umi.protocol as for full models."""
    import gguf

    from .archs import get_arch
    from .pipeline import PROTOCOLS, ROLES, load_config

    t0 = time.perf_counter()
    adapter_dir = Path(adapter_dir).expanduser()
    out = Path(out).expanduser()
    outtype = outtype.lower()
    if outtype not in OUTTYPES:
        raise ConvertError(f"--outtype {outtype!r} is not available for LoRA adapters (llama.cpp cannot quantize "
                           f"adapters further); choose one of: {', '.join(OUTTYPES)}")
    check_output(out, force, example="adapter.gguf")
    if role is not None and role not in ROLES:
        raise ConvertError(f"--role {role!r} is not a role; choose one of: {', '.join(ROLES)}")
    lparams = _adapter_config(adapter_dir)
    base_dir = _base_folder(adapter_dir, lparams, base)
    config = load_config(base_dir)
    arch = get_arch(config)
    refs = _adapter_tensors(adapter_dir)
    check_output(out, force, checkpoint_files(adapter_dir, base_dir), example="adapter.gguf")
    pairs, extras = _plan(arch, refs, lparams, adapter_dir)
    alpha = _gguf_alpha(lparams, pairs)
    if extras:
        log.warning("%s: trained norm weights (%s) are written as llama.cpp's converter does, but llama.cpp "
                    "ignores norms in adapters", adapter_dir, ", ".join(r.name for r, _ in extras))

    # llama.cpp's auto: the 16-bit type of the first tensor it reads (a trained norm, else a lora_A)
    first = extras[0][0] if extras else pairs[0].a
    direct = precision.auto_outtype(first.dtype) if outtype == "auto" else outtype
    items: list[_Out] = []
    for ref, name in extras:
        items.append(_Out(name, ref, tuple(ref.shape), precision.tensor_qtype(name, ref.shape, direct)))
    for p in pairs:
        name = arch.tensor_name(p.base_name)
        a_shape = tuple(reversed(p.a.shape)) if p.embedding else tuple(p.a.shape)
        items.append(_Out(name + ".lora_a", p.a, a_shape, precision.tensor_qtype(name + ".lora_a", a_shape, direct),
                          transpose=p.embedding))
        items.append(_Out(name + ".lora_b", p.b, tuple(p.b.shape),
                          precision.tensor_qtype(name + ".lora_b", p.b.shape, direct),
                          perm=None if p.embedding else arch.row_permutation(p.base_name, p.b.shape[0]),
                          factor=p.scale_fix))

    from .encode import encoded_nbytes

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch.gguf_arch])
    for it in items:
        writer.add_tensor_info(it.name, it.shape, np.dtype(np.float32), encoded_nbytes(it.shape, it.qtype),
                               raw_dtype=it.qtype)
    source = _write_metadata(writer, gguf, adapter_dir, base_dir, alpha, role and (role, PROTOCOLS[role]))

    tmp = temp_beside(out)
    try:
        _write(writer, items, tmp)
        os.replace(tmp, out)
    except OSError as e:
        raise ConvertError(f"{out}: write failed ({e.strerror or e})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "output": str(out),
        "kind": "lora",
        "source": source,
        "base": str(base_dir),
        "architecture": gguf.MODEL_ARCH_NAMES[arch.gguf_arch],
        "hf_architecture": arch.hf_arch,
        "outtype": direct,
        "tensors": len(items),
        "pairs": len(pairs),
        "rank": sorted({int(p.a.shape[0]) for p in pairs}),
        "alpha": alpha,
        "norms_ignored_by_llama_cpp": [name for _, name in extras],
        "role": role,
        "protocol": PROTOCOLS.get(role) if role else None,
        "size_bytes": out.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 3),
    }


# --- checks (before any weight is read) ---------------------------------------------------------------


def _adapter_config(adapter_dir: Path) -> dict:
    path = adapter_dir / ADAPTER_CONFIG
    if not adapter_dir.is_dir():
        raise ConvertError(f"{adapter_dir}: no such adapter folder")
    if not path.is_file():
        raise ConvertError(f"{adapter_dir}: no {ADAPTER_CONFIG}; is this a PEFT adapter folder?")
    try:
        lparams = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConvertError(f"{path}: unreadable ({e}); save the adapter again with PEFT") from None
    if not isinstance(lparams, dict):
        raise ConvertError(f"{path}: not a JSON object")
    kind = str(lparams.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise ConvertError(f"{path}: peft_type {kind} is not LoRA; only LoRA adapters convert to GGUF")
    _check_numbers(path, lparams)
    for key, why in (("use_dora", "DoRA magnitudes"), ("fan_in_fan_out", "fan_in_fan_out (Conv1D) layouts")):
        if lparams.get(key):
            raise ConvertError(f"{path}: {key} is set; llama.cpp adapters cannot express {why}")
    if lparams.get("layer_replication"):
        raise ConvertError(f"{path}: layer_replication is set; llama.cpp adapters cannot express it")
    return lparams


def _check_numbers(path: Path, lparams: dict) -> None:
    """r, lora_alpha and the per-module patterns, checked before they scale anything: a rank is a whole
    number >= 1, an alpha a finite number (the global one non-zero: llama.cpp reads alpha 0 as "no alpha"
    and would scale by 1), and the patterns map module names to such values."""
    def rank_ok(v) -> bool:
        return type(v) is int and 1 <= v <= MAX_RANK

    def alpha_ok(v) -> bool:
        return type(v) in (int, float) and math.isfinite(v) and abs(v) <= _F32_MAX

    rank_text, alpha_text = f"a whole number from 1 to {MAX_RANK}", "a finite number"
    if not rank_ok(lparams.get("r")):
        raise ConvertError(f"{path}: 'r' must be {rank_text}, not {short_repr(lparams.get('r'), 40)}")
    alpha = lparams.get("lora_alpha")
    if not alpha_ok(alpha) or alpha == 0:
        raise ConvertError(f"{path}: 'lora_alpha' must be a finite number other than 0, not {short_repr(alpha, 40)}")
    for key, ok, what in (("rank_pattern", rank_ok, rank_text), ("alpha_pattern", alpha_ok, alpha_text)):
        pattern = lparams.get(key)
        if pattern is None:
            continue
        if not isinstance(pattern, dict):
            raise ConvertError(f"{path}: '{key}' must be an object mapping module names to values, not "
                               f"{short_repr(pattern, 40)}")
        for k, v in pattern.items():
            if not ok(v):
                raise ConvertError(f"{path}: '{key}' entry {short_repr(k, 60)} must be {what}, not "
                                   f"{short_repr(v, 40)}")
    for key in ("base_model_name_or_path", "revision"):
        if lparams.get(key) is not None and not isinstance(lparams[key], str):
            raise ConvertError(f"{path}: '{key}' must be a string, not {short_repr(lparams[key], 40)}")


def _base_folder(adapter_dir: Path, lparams: dict, base) -> Path:
    """The folder holding the base model's config.json: --base, a local base_model_name_or_path, or that
    repo id's config.json fetched alone from the Hugging Face hub (as llama.cpp's converter does)."""
    if base is not None:
        folder = Path(base).expanduser()
        if not (folder / "config.json").is_file():
            raise ConvertError(f"--base {folder}: no config.json there; give the base model's folder")
        return folder
    name = lparams.get("base_model_name_or_path")
    where = adapter_dir / ADAPTER_CONFIG
    if name:
        for folder in (Path(name).expanduser(), adapter_dir / name):
            if (folder / "config.json").is_file():
                return folder
        if _REPO_ID.match(str(name)):
            return _hub_config_folder(str(name), lparams.get("revision"), where)
    raise ConvertError(f"{where}: base_model_name_or_path {name!r} is not a local model folder; pass --base FOLDER "
                       "(the base model's config.json is enough)")


def _hub_config_folder(repo_id: str, revision: str | None, where: Path) -> Path:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, "config.json", revision=revision)).parent
    except Exception as e:  # huggingface_hub raises many types; all mean "could not fetch"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConvertError(f"{where}: cannot fetch config.json of base model {repo_id} ({msg}); pass --base FOLDER "
                           "(the base model's config.json is enough)") from None


def _adapter_tensors(adapter_dir: Path) -> dict[str, TensorRef]:
    from .readers import read_safetensors_header

    st, bin_ = adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_model.bin"
    if st.is_file():
        refs = read_safetensors_header(st)
    elif bin_.is_file():
        from .pickle_reader import read_torch_zip

        refs = read_torch_zip(bin_)
        for ref in refs:
            ref.check_bounds()
    else:
        raise ConvertError(f"{adapter_dir}: no adapter_model.safetensors or adapter_model.bin")
    if not refs:
        raise ConvertError(f"{st if st.is_file() else bin_}: holds no tensors")
    return {r.name: r for r in refs}


def _plan(arch, refs: dict[str, TensorRef], lparams: dict, adapter_dir: Path):
    """Pair lora_A/lora_B per base weight and check them against the base architecture.
    Returns (pairs, extra tensors written as they are: (ref, GGUF name))."""
    from .tensor_ref import FLOAT_DTYPES

    where = adapter_dir / "adapter_model"
    expected = {**arch.optional_tensors(), **arch.expected_tensors()}
    halves: dict[str, dict[str, TensorRef]] = {}
    extras = []
    for name, ref in refs.items():
        if ref.dtype not in FLOAT_DTYPES:
            raise ConvertError(f"{where}: tensor {name!r} is {ref.dtype}; only float adapters convert")
        base = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
        for marker, half in ((".lora_A.weight", "A"), (".lora_B.weight", "B"),
                             (".lora_embedding_A", "eA"), (".lora_embedding_B", "eB")):
            if base.endswith(marker):
                halves.setdefault(base[: -len(marker)] + ".weight", {})[half] = ref
                break
        else:
            if ".base_layer." in base:
                continue  # a copy of the base weight, not part of the adapter (llama.cpp skips it too)
            if ("_layernorm" in base or ".norm" in base) and base in expected and len(ref.shape) == 1:
                extras.append((ref, arch.tensor_name(base)))  # norms trained alongside (mergekit, modules_to_save)
                continue
            hint = ("; embeddings or lm_head saved in full (modules_to_save, resized vocab) cannot be a llama.cpp "
                    "LoRA: merge the adapter and convert the merged model") if "embed" in base or "lm_head" in base \
                else "; only lora_A/lora_B pairs convert"
            raise ConvertError(f"{where}: tensor {name!r} is not a LoRA A/B tensor{hint}")

    pairs = []
    for base_name, h in halves.items():
        embedding = "eA" in h or "eB" in h
        if embedding:
            h = {k[1:]: v for k, v in h.items() if k.startswith("e")} if set(h) <= {"eA", "eB"} else {}
        if set(h) != {"A", "B"}:
            missing = "lora_B" if "A" in h else "lora_A"
            raise ConvertError(f"{where}: {base_name[:-len('.weight')]} has no {missing} tensor; the adapter is "
                               "incomplete")
        if base_name not in expected:
            if base_name == "lm_head.weight" and arch.tied:
                raise ConvertError(f"{where}: the adapter targets lm_head, but the base model ties it to the "
                                   "embeddings (llama.cpp has no separate output weight to adapt)")
            raise ConvertError(f"{where}: adapter tensor for {base_name!r}, which the base {arch.hf_arch} does not "
                               "have; is --base the model this adapter was trained on?")
        a, b = h["A"], h["B"]
        want = expected[base_name]
        # a Linear's delta is B @ A (out, in); an Embedding's is (B @ A).T (vocab, hidden)
        out_dim, in_dim = (want[1], want[0]) if embedding else (want[0], want[-1])
        if len(a.shape) != 2 or len(b.shape) != 2 or len(want) != 2 or a.shape[0] != b.shape[1] \
                or a.shape[1] != in_dim or b.shape[0] != out_dim:
            raise ConvertError(f"{where}: LoRA pair for {base_name!r} has shapes A{list(a.shape)} B{list(b.shape)}, "
                               f"which do not fit the base weight {list(want)}; is --base the right model?")
        pairs.append(_Pair(base_name, a, b, embedding=embedding))
    if not pairs:
        raise ConvertError(f"{where}: no lora_A/lora_B tensor pairs found")
    return pairs, extras


def _gguf_alpha(lparams: dict, pairs: list[_Pair]) -> float:
    """adapter.lora.alpha, and per-pair lora_b factors where PEFT's scale is not alpha / rank."""
    alpha = float(lparams["lora_alpha"])
    rslora = bool(lparams.get("use_rslora"))
    alpha_pattern = lparams.get("alpha_pattern") or {}
    rank_pattern = lparams.get("rank_pattern") or {}
    if rslora:
        alpha *= math.sqrt(lparams["r"])
    for p in pairs:
        rank = int(p.a.shape[0])
        key = p.base_name[: -len(".weight")]
        a_m = float(_pattern_value(alpha_pattern, key, lparams["lora_alpha"]))
        r_m = int(_pattern_value(rank_pattern, key, lparams["r"]))
        if r_m != rank:
            raise ConvertError(f"{ADAPTER_CONFIG}: rank for {key} is {r_m}, but its lora_A has {rank} rows")
        peft_scale = a_m / (math.sqrt(rank) if rslora else rank)
        p.scale_fix = peft_scale / (alpha / rank)
    return alpha


def _pattern_value(pattern: dict, key: str, default):
    """PEFT's pattern lookup: the first pattern key that is a suffix of the module name (at a dot)."""
    for k, v in pattern.items():
        if key == k or key.endswith("." + k):
            return v
    return default


# --- writing ------------------------------------------------------------------------------------------


def _write_metadata(writer, gguf, adapter_dir: Path, base_dir: Path, alpha: float, role) -> str:
    """The keys llama.cpp's LoRA converter writes (general.*, adapter type and alpha) plus umi.*."""
    from umi_edge import __version__

    from .source import folder_digest

    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    from .pipeline import card_metadata

    meta = card_metadata(gguf, adapter_dir, writer.get_total_parameter_count()[0])
    if meta.name is None:
        meta.name = base_dir.name
    meta.set_gguf_meta_model(writer)
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if role:
        writer.add_string("umi.role", role[0])
        writer.add_string("umi.protocol", role[1])
    source = folder_digest(adapter_dir)
    writer.add_string("umi.source", source)
    writer.add_string("umi.converter", f"umi-edge {__version__}")
    return source


def _write(writer, items, path: Path) -> None:
    from .encode import encode
    from .tensor_ref import to_float32

    with Mmaps() as maps:
        writer.write_header_to_file(path=path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        try:
            for it in items:
                src, dtype = maps.array(it.ref), it.ref.dtype
                if it.transpose:
                    src = np.ascontiguousarray(src.T)
                if it.factor != 1.0:
                    src, dtype = to_float32(np.asarray(src), dtype) * np.float32(it.factor), "F32"
                writer.write_tensor_data(encode(src, dtype, it.qtype, it.perm))
                maps.release(it.ref)
        finally:
            writer.close()
