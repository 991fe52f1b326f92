"""Warm start from disk: the KV of a context's fixed prompt head (system prompt + tool docs), saved after its
first evaluation and loaded by later processes instead of evaluating it again.

A file is used only when its key (model and adapter checksums, the context's layout, llama.cpp's version),
its exact token ids and its sha256 all match; anything else (another tool description, a corrupt or
truncated file) is a miss, and the head is evaluated and saved again. The payload is llama.cpp's own
sequence state (`llama_state_seq_get_data` / `set_data`: the in-memory form of `llama_state_seq_save_file` /
`load_file`), framed by a header checked before llama.cpp parses a byte of it.

File: MAGIC, u32 header length, header JSON {key, n_tokens, payload_bytes, sha256}, n_tokens int32 ids, payload.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Sequence

from . import _native

log = logging.getLogger(__name__)

MAGIC = b"UMIKV\x00\x00\x01"
FORMAT = 1
_MAX_HEADER = 1 << 16


def sha256_of(path: Path, memo: Path) -> str:
    """sha256 of a file, remembered per (real path, size, mtime, inode) in `memo`, so a multi-GB model is
    hashed once rather than on every start."""
    real = os.path.realpath(path)
    st = os.stat(real)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    memos = _read_json(memo)
    hit = memos.get(real)
    if isinstance(hit, dict) and hit.get("stamp") == stamp and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    memos = _read_json(memo)      # re-read: another process may have added entries meanwhile
    memos[real] = {"stamp": stamp, "sha256": digest}
    try:
        _write_atomic(memo, json.dumps(memos, indent=1, sort_keys=True).encode())
    except OSError as e:   # a read-only cache only costs hashing again next time
        log.debug("cannot record checksum in %s: %s", memo, e)
    return digest


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_atomic(path: Path, *parts) -> None:
    """Write `parts` (bytes-like) to a temporary file beside `path`, then rename it over `path`: a reader sees
    the old file or the whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for part in parts:
                fh.write(part)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _digest(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _token_bytes(tokens: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(tokens)}i", *tokens)


class PrefixCache:
    """A folder of saved prefix KVs: one subfolder per context key, at most `max_entries` prefixes in each
    (least recently used dropped first) and at most `max_keys` subfolders."""

    def __init__(self, root, *, max_entries: int = 4, max_keys: int = 8):
        self.root = Path(root).expanduser()
        self.max_entries, self.max_keys = max_entries, max_keys
        self._sums: dict[str, str] = {}
        self.hits = self.misses = self.saves = 0

    def __repr__(self) -> str:
        return f"PrefixCache({str(self.root)!r})"

    # -- keys --------------------------------------------------------------------------------------------
    def file_sha256(self, path) -> str:
        key = os.path.realpath(path)
        if key not in self._sums:
            self._sums[key] = sha256_of(Path(key), self.root / "checksums.json")
        return self._sums[key]

    def key(self, role, adapters: tuple, seq: int) -> dict:
        """Everything the saved KV values depend on besides the tokens: the weights (model and the adapters the
        prefix is computed under, by checksum), how the context computes and stores them, and the state format."""
        import llama_cpp

        return {
            "format": FORMAT,
            "llama_cpp_python": llama_cpp.__version__,
            "model_sha256": self.file_sha256(role.model.path),
            "adapters_sha256": [self.file_sha256(a.path) for a in adapters],
            "lora_scale": role._lora_scale,
            "n_gpu_layers": role.model.n_gpu_layers,
            "seq": seq,
            **role.layout,
        }

    def path(self, key: dict, tokens: Sequence[int]) -> Path:
        kdig = _digest(json.dumps(key, sort_keys=True).encode())[:24]
        return self.root / kdig / f"{len(tokens)}-{_digest(_token_bytes(tokens))[:24]}.kv"

    # -- load / save ---------------------------------------------------------------------------------------
    def load(self, role, tokens: Sequence[int], adapters: tuple, seq: int = 0) -> bool:
        """Restore the KV of `tokens` (positions 0..n-1 of sequence `seq`, which must be empty) from disk.
        True on a verified hit; False (nothing restored, the sequence left empty) on any miss or bad file."""
        t0 = time.perf_counter()
        key = self.key(role, adapters, seq)
        path = self.path(key, tokens)
        data = self._read_verified(path, key, tokens)
        if data is None:
            self.misses += 1
            return False
        payload, offset = data
        L = _native.lib()
        size = len(payload) - offset
        buf = (ctypes.c_ubyte * size).from_buffer(payload, offset)
        _native.clear_errors()
        got = L.llama_state_seq_set_data(role.ctx, buf, size, seq)
        del buf      # the bytearray cannot be released while a ctypes view holds it
        mem = L.llama_get_memory(role.ctx)
        if got != size or L.llama_memory_seq_pos_max(mem, seq) != len(tokens) - 1:
            log.warning("prefix cache %s: llama.cpp did not restore it (%s); evaluating the prefix",
                        path, _native.last_error("size or position mismatch"))
            L.llama_memory_seq_rm(mem, seq, -1, -1)
            self.misses += 1
            return False
        try:
            os.utime(path)    # recently used: kept when the folder is pruned
        except OSError:
            pass
        self.hits += 1
        log.info("prefix cache: %d tokens restored from %s in %.3f s", len(tokens), path,
                 time.perf_counter() - t0)
        return True

    def _read_verified(self, path: Path, key: dict, tokens: Sequence[int]):
        """(bytearray of the whole file, payload offset) when the file is complete and matches; None otherwise."""
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                data = bytearray(size)
                if fh.readinto(data) != size:
                    raise OSError("short read")
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("prefix cache %s unreadable (%s); evaluating the prefix", path, e)
            return None
        why = self._check(data, key, tokens)
        if why:
            log.warning("prefix cache %s ignored: %s; evaluating the prefix", path, why)
            return None
        n_head = struct.unpack_from("<I", data, len(MAGIC))[0]
        return data, len(MAGIC) + 4 + n_head + 4 * len(tokens)

    @staticmethod
    def _check(data: bytearray, key: dict, tokens: Sequence[int]) -> str:
        """Why `data` is not the saved KV of `tokens` under `key` ("" when it is)."""
        if len(data) < len(MAGIC) + 4 or data[:len(MAGIC)] != MAGIC:
            return "not a prefix-cache file"
        n_head = struct.unpack_from("<I", data, len(MAGIC))[0]
        start = len(MAGIC) + 4
        if n_head > _MAX_HEADER or start + n_head > len(data):
            return "truncated header"
        try:
            head = json.loads(bytes(data[start:start + n_head]))
        except ValueError:
            return "unreadable header"
        if not isinstance(head, dict) or head.get("key") != key:
            return "saved for another model, adapter or context layout"
        if head.get("n_tokens") != len(tokens):
            return "another prefix"
        body = start + n_head
        ids = body + 4 * len(tokens)
        if len(data) != ids + head.get("payload_bytes", -1):
            return "truncated or padded file"
        if bytes(data[body:ids]) != _token_bytes(tokens):
            return "another prefix"
        if _digest(memoryview(data)[body:]) != head.get("sha256"):
            return "checksum mismatch (corrupt file)"
        return ""

    def contains(self, role, tokens: Sequence[int], adapters: tuple, seq: int = 0) -> bool:
        return self.path(self.key(role, adapters, seq), tokens).is_file()

    def save(self, role, tokens: Sequence[int], adapters: tuple, seq: int = 0) -> Path | None:
        """Write the KV of sequence `seq` (which holds exactly `tokens`) to disk; None if it could not be."""
        L = _native.lib()
        key = self.key(role, adapters, seq)
        path = self.path(key, tokens)
        size = L.llama_state_seq_get_size(role.ctx, seq)
        buf = (ctypes.c_ubyte * max(size, 1))()
        got = L.llama_state_seq_get_data(role.ctx, buf, size, seq) if size else 0
        if not got:
            log.warning("prefix cache: llama.cpp returned no state for %d tokens; not saved", len(tokens))
            return None
        ids = _token_bytes(tokens)
        payload = memoryview(buf)[:got]
        h = hashlib.sha256(ids)
        h.update(payload)
        head = json.dumps({"key": key, "n_tokens": len(tokens), "payload_bytes": got,
                           "sha256": h.hexdigest()}, sort_keys=True).encode()
        try:
            _write_atomic(path, MAGIC, struct.pack("<I", len(head)), head, ids, payload)
            self._prune(path.parent)
        except OSError as e:    # a full or read-only disk costs the warm start, not the run
            log.warning("prefix cache: cannot write %s: %s", path, e)
            return None
        self.saves += 1
        log.info("prefix cache: saved %d tokens (%.1f MB) to %s", len(tokens), got / 1e6, path)
        return path

    def _prune(self, folder: Path) -> None:
        def by_age(paths):
            return sorted(paths, key=lambda p: p.stat().st_mtime, reverse=True)

        for old in by_age(folder.glob("*.kv"))[self.max_entries:]:
            old.unlink(missing_ok=True)
        for old in by_age(p for p in self.root.iterdir() if p.is_dir())[self.max_keys:]:
            shutil.rmtree(old, ignore_errors=True)
