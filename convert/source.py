"""Resolve SRC (a local folder or a Hugging Face repo id) to a folder, and name where it came from.

`umi.source` is `<repo>@<commit>` for hub checkpoints and `sha256:<hex>` for folders. The folder digest
covers every file's relative path and size, the full bytes of files up to 64 MiB (config, tokenizer,
small shards) and, for larger weight files, 16 evenly spaced 64 KiB windows plus the first and last MiB.
That separates fine-tunes of one base (same names and sizes, different weights) in a second instead of
hashing tens of GB; it is a provenance label, not a cryptographic identity of every weight. Modification
times are left out so a copied folder keeps its digest.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from umi_edge.errors import ConvertError, FetchError

_FULL_HASH_LIMIT = 64 * 1024 * 1024
_WINDOW = 64 * 1024
_EDGE = 1024 * 1024
_HF_SNAPSHOT = re.compile(r"/models--(?P<owner>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# what a conversion needs from a hub repo; weights are fetched in a second step so a repo that ships
# both safetensors and .bin downloads only the safetensors
_META_PATTERNS = [
    "config.json", "generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "README.md",
]
_SAFETENSORS_PATTERNS = ["model*.safetensors", "model.safetensors.index.json"]
_BIN_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]


def resolve(src: str | Path, revision: str | None = None, *, progress: bool = True) -> tuple[Path, str]:
    """(folder, source label) for SRC. `revision` applies to repo ids; a local folder is taken as it is."""
    p = Path(src).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ConvertError(f"{p}: SRC must be a checkpoint folder (config.json + weights), not a file")
        # a folder inside the huggingface_hub cache is labelled by its repo and commit, as if fetched here
        m = _HF_SNAPSHOT.search(p.resolve().as_posix())
        if m:
            return p, f"{m['owner']}/{m['name']}@{m['commit']}"
        return p, folder_digest(p)
    s = str(src)
    if not _REPO_ID.match(s):
        raise ConvertError(f"{s}: no such folder, and not a Hugging Face repo id (owner/name)")
    return _download(s, revision, progress)


def _download(repo_id: str, revision: str | None, progress: bool) -> tuple[Path, str]:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    except ImportError:  # pragma: no cover - a core dependency
        raise ConvertError("huggingface_hub is missing; reinstall umi-edge") from None
    if not progress:
        disable_progress_bars()
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=_META_PATTERNS + _SAFETENSORS_PATTERNS))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=_META_PATTERNS + _BIN_PATTERNS))
    except Exception as e:  # huggingface_hub raises many types; all mean "could not fetch"
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FetchError(f"{repo_id}" + (f"@{revision}" if revision else "") + f": no such local folder, and the "
                         f"Hugging Face download failed ({msg})") from None
    finally:
        if not progress:
            enable_progress_bars()
    # the snapshot folder is named by the resolved commit
    return folder, f"{repo_id}@{folder.name}"


def folder_digest(folder: Path) -> str:
    """`sha256:<hex>` over the folder's files (see the module docstring for what is covered)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = f.relative_to(folder).as_posix()
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if size <= _FULL_HASH_LIMIT:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            else:
                offsets = [0, size - _EDGE] + [size * k // 17 for k in range(1, 17)]
                for off in offsets:
                    fh.seek(off)
                    h.update(fh.read(_EDGE if off in (0, size - _EDGE) else _WINDOW))
    return "sha256:" + h.hexdigest()
