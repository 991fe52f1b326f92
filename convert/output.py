"""Where a conversion writes: OUT is checked before anything is read, and written through a temporary
file beside it that gets the permissions a plain open() would (0666 less the umask) and replaces OUT only
when complete. --force replaces a regular file (or a symlink), never a FIFO, a device or an input."""
from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from umi_edge.errors import ConvertError

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket"}


def check_output(out: Path, force: bool, inputs: Iterable[Path] = (), example: str = "model.gguf") -> None:
    """Raise unless the conversion may write OUT: not a folder, absent or --force onto a regular file that is
    none of `inputs`, in an existing folder."""
    if out.is_dir():
        raise ConvertError(f"{out}: is a folder; give the output file name, e.g. {out / example}")
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ConvertError(f"{out}: cannot check the output path ({e.strerror or e})") from None
    if st is not None:
        if not force:
            raise ConvertError(f"{out}: already exists; pass --force to overwrite it")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise ConvertError(f"{out}: is {kind}; --force only replaces regular files, give another output path")
        for p in inputs:
            if _same_file(out, Path(p)):
                raise ConvertError(f"{out}: is {Path(p).name}, a file of the checkpoint being converted; --force "
                                   f"never replaces an input, write the GGUF to another path")
    parent = out.parent
    if not parent.is_dir():
        raise ConvertError(f"{parent}: output folder does not exist; create it first")


def checkpoint_files(*folders: Path, extra: Iterable[Path] = ()) -> list[Path]:
    """The files a conversion reads from: every non-GGUF file directly in `folders`, plus `extra` (shards an
    index names in subfolders)."""
    files = list(extra)
    for folder in folders:
        try:
            files += [p for p in folder.iterdir() if not p.name.endswith(".gguf")]
        except OSError:
            pass
    return files


def _same_file(a: Path, b: Path) -> bool:
    """Same directory entry (after resolving the folders), or the same file through a link."""
    if os.path.realpath(a.parent) == os.path.realpath(b.parent) and a.name == b.name:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask() sets it while reading,
    which a thread creating a file meanwhile would see)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_beside(out: Path, suffix: str = ".part") -> Path:
    """A new empty hidden file in OUT's folder, with the permissions open() would give it."""
    try:
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=suffix)
    except OSError as e:
        raise ConvertError(f"{out.parent}: cannot write the output there ({e.strerror or e})") from None
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    return Path(name)
