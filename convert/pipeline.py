"""`convert()`: an HF checkpoint folder or repo id -> one GGUF file, checked first, then streamed.

Order of work (house habit 2): resolve the source, read config and headers, check every tensor name,
shape and dtype against the architecture, check the tokenizer and the output path, and only then read
weights, one tensor at a time, into a temp file in the output folder that replaces OUT at the very end.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umi_edge.errors import ConvertError

from . import precision
from .output import check_output, checkpoint_files, temp_beside
from .tensor_ref import FLOAT_DTYPES, Mmaps, TensorRef

log = logging.getLogger(__name__)

ROLES = ("planner", "caller", "summarizer", "backbone")
# umi.protocol per role: the three α-UMi roles speak the ToolBench prompt protocol (docs/protocol.md),
# under the name umi_edge.protocol registers it; the stage-1 backbone was trained on all roles' data
PROTOCOLS = {"planner": "alpha-umi/toolbench-v1", "caller": "alpha-umi/toolbench-v1",
             "summarizer": "alpha-umi/toolbench-v1", "backbone": "alpha-umi/backbone-v1"}
MAX_CONFIG_BYTES = 16 * 1024 * 1024  # real ones are a few KB; json.loads of a huge file would hold it all


@dataclass
class _Item:
    gguf_name: str
    shape: tuple[int, ...]
    qtype: object
    nbytes: int
    hf_name: str | None = None
    ref: TensorRef | None = None
    data: np.ndarray | None = None      # generated tensors
    perm: np.ndarray | None = None


def load_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ConvertError(f"{folder}: no config.json; SRC must be a Hugging Face checkpoint folder")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes, more than a config.json holds")
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        detail = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise ConvertError(f"{path}: unreadable ({detail})") from None
    if not isinstance(config, dict):
        raise ConvertError(f"{path}: not a JSON object")
    if "text_config" in config and isinstance(config["text_config"], dict):
        config = {**config, **config["text_config"]}
    return config


def plan_tensors(arch, refs: dict[str, TensorRef], where: Path) -> tuple[list[tuple[str, TensorRef]], list[str]]:
    """Match checkpoint tensors to the architecture: (tensors to write in order, skipped names).
    Missing, unexpected, wrong-shaped or non-float tensors are errors naming the tensor."""
    expected = arch.expected_tensors()
    optional = arch.optional_tensors()
    keep, skipped, unexpected = [], [], []
    for name, ref in refs.items():
        if arch.skip(name):
            skipped.append(name)
            continue
        want = expected.get(name, optional.get(name))
        if want is None:
            unexpected.append(name)
            continue
        if tuple(ref.shape) != tuple(want):
            raise ConvertError(f"{ref.path.name}: tensor {name!r} has shape {list(ref.shape)}, but config.json "
                               f"implies {list(want)}; is config.json from this checkpoint?")
        if ref.dtype not in FLOAT_DTYPES:
            raise ConvertError(f"{ref.path.name}: tensor {name!r} is {ref.dtype}; only float weights convert")
        keep.append((name, ref))
    if unexpected:
        raise ConvertError(f"{where}: unexpected tensor(s) for {arch.hf_arch}: {', '.join(unexpected[:5])}"
                           + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else "")
                           + "; is config.json from this checkpoint?")
    missing = [n for n in expected if n not in refs]
    if missing:
        raise ConvertError(f"{where}: missing tensor(s) for {arch.hf_arch}: {', '.join(missing[:5])}"
                           + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
                           + "; the checkpoint is incomplete")
    return keep, skipped


def convert(src, out, *, outtype: str = "auto", role: str | None = None, revision: str | None = None,
            force: bool = False, progress: bool = True) -> dict:
    """Convert the checkpoint SRC (folder or HF repo id) to the GGUF file OUT; returns the summary the CLI
    prints. Raises ConvertError / FetchError with a one-line message; never leaves a partial OUT."""
    import gguf

    from .archs import get_arch
    from .readers import index_tensors
    from .source import resolve

    t0 = time.perf_counter()
    outtype = precision.check_outtype(outtype)
    if role is not None and role not in ROLES:
        raise ConvertError(f"--role {role!r} is not a role; choose one of: {', '.join(ROLES)}")
    out = Path(out).expanduser()
    check_output(out, force)

    folder, source = resolve(src, revision, progress=progress)
    config = load_config(folder)
    arch = get_arch(config)
    _fmt, refs, files = index_tensors(folder)
    check_output(out, force, checkpoint_files(folder, extra=files))
    keep, skipped = plan_tensors(arch, refs, folder)

    first_2d = next((r.dtype for _, r in keep if len(r.shape) >= 2), None)
    source_type = precision.auto_outtype(first_2d)
    if outtype == "auto":
        direct = final = source_type
    elif outtype in precision.DIRECT:
        direct = final = outtype
    else:
        direct, final = precision.intermediate_outtype(source_type), outtype

    items: list[_Item] = []
    for name, data in arch.extra_tensors().items():
        qt = precision.tensor_qtype(name, data.shape, direct)
        items.append(_Item(name, tuple(data.shape), qt, _nbytes(data.shape, qt), data=data))
    for hf_name, ref in keep:
        name = arch.tensor_name(hf_name)
        qt = precision.tensor_qtype(name, ref.shape, direct)
        perm = arch.row_permutation(hf_name, ref.shape[0]) if ref.shape else None
        items.append(_Item(name, tuple(ref.shape), qt, _nbytes(ref.shape, qt), hf_name, ref, perm=perm))
    n_params = sum(int(np.prod(i.shape)) for i in items)

    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[arch.gguf_arch])
    for it in items:
        writer.add_tensor_info(it.gguf_name, it.shape, np.dtype(np.float32), it.nbytes, raw_dtype=it.qtype)
    _write_metadata(writer, gguf, arch, folder, config, direct, n_params, role, source, src)

    tmp = temp_beside(out)
    tmp_q: Path | None = None
    try:
        _write_file(writer, items, tmp, progress)
        if final != direct:
            from .quantize import llama_quantize

            tmp_q = temp_beside(out, ".q.part")
            llama_quantize(tmp, tmp_q, final)
            tmp.unlink()
            os.replace(tmp_q, out)
        else:
            os.replace(tmp, out)
    except OSError as e:
        raise ConvertError(f"{out}: write failed ({e.strerror or e})") from None
    finally:
        for p in (tmp, tmp_q):
            if p is not None:
                p.unlink(missing_ok=True)

    return {
        "output": str(out),
        "source": source,
        "architecture": gguf.MODEL_ARCH_NAMES[arch.gguf_arch],
        "hf_architecture": arch.hf_arch,
        "outtype": final,
        "tensors": len(items),
        "parameters": n_params,
        "size_bytes": out.stat().st_size,
        "role": role,
        "protocol": PROTOCOLS.get(role) if role else None,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _nbytes(shape, qtype) -> int:
    from .encode import encoded_nbytes

    return encoded_nbytes(tuple(shape), qtype)


def _write_metadata(writer, gguf, arch, folder: Path, config: dict, direct: str, n_params: int,
                    role: str | None, source: str, src) -> None:
    """general.*, hparams, file type, tokenizer and umi.* keys, in llama.cpp's order."""
    from umi_edge import __version__

    from .vocab import write_vocab

    writer.add_type(gguf.GGUFType.MODEL)
    meta = card_metadata(gguf, folder, n_params)
    if meta.name is None:
        meta.name = str(src) if source.endswith(f"@{folder.name}") else folder.name
    if meta.size_label is None and n_params > 0:
        meta.size_label = gguf.size_label(n_params, n_params, 0, 0)
    meta.set_gguf_meta_model(writer)
    arch.write_hparams(writer)
    writer.add_file_type(precision.DIRECT[direct])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_vocab(writer, folder, config, arch)
    if role is not None:
        writer.add_string("umi.role", role)
        writer.add_string("umi.protocol", PROTOCOLS[role])
    writer.add_string("umi.source", source)
    writer.add_string("umi.converter", f"umi-edge {__version__}")


def card_metadata(gguf, folder: Path, n_params: int):
    """general.* from the model card and config heuristics, as llama.cpp names its files. A README whose
    front matter gguf cannot parse or write (bad YAML, a list where a string belongs) is ignored: it is
    tried on a scratch writer first, so it never stops a conversion or leaves half its keys behind."""
    try:
        meta = gguf.Metadata.load(None, folder, None, n_params)
        meta.set_gguf_meta_model(gguf.GGUFWriter(path=None, arch="llama"))
        return meta
    except Exception:
        log.warning("%s: model card ignored (unreadable front matter)", folder)
        return gguf.Metadata()


def _write_file(writer, items: list[_Item], path: Path, progress: bool) -> None:
    from tqdm import tqdm

    from .encode import encode

    total = sum(it.nbytes for it in items)
    with Mmaps() as maps, tqdm(total=total, unit="B", unit_scale=True, desc="convert", file=sys.stderr,
                               disable=not progress, leave=False) as bar:
        writer.write_header_to_file(path=path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        try:
            for it in items:
                if it.ref is not None:
                    ref = it.ref
                    data = encode(maps.array(ref), ref.dtype, it.qtype, it.perm,
                                  release=lambda a, b, ref=ref: maps.release_rows(ref, a, b))
                else:
                    data = encode(it.data, "F32", it.qtype)
                writer.write_tensor_data(data)
                del data
                if it.ref is not None:
                    maps.release(it.ref)
                bar.update(it.nbytes)
        finally:
            writer.close()
