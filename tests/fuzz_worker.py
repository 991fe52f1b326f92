"""The process tests/test_fuzz_readers.py runs fuzz cases in, so that a segfault, a hang or a memory
blow-up in a reader is a reported failure instead of the end of pytest.

Protocol on stdin/stdout: the parent writes a case as `<kind: 1 byte><length: 8 bytes LE><bytes>`; the
worker answers one JSON line: {"status": "ok", "tensors": n} when the reader accepted the file and every
tensor is well formed, {"status": "rejected", "type": ..., "message": ...} when it raised one of our typed
errors, {"status": "bug", ...} for anything else (another exception, or an accepted file whose arrays reach
outside their storage).
"""
from __future__ import annotations

import json
import os
import resource
import struct
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path

KINDS = {b"b": "bin", b"s": "safetensors"}
ADDRESS_SPACE = 4 << 30


def _byte_bounds(a) -> tuple[int, int]:
    import numpy as np

    bb = getattr(np.lib, "array_utils", np).byte_bounds
    return bb(a)


def _check_views(refs, maps, ranges) -> None:
    """Every array is what its ref says and lies inside one of `ranges` (absolute byte ranges of storages)."""
    import numpy as np

    from umi_convert.tensor_ref import DTYPES

    for ref in refs:
        assert type(ref.name) is str and ref.dtype in DTYPES, ref
        assert all(type(d) is int and d >= 0 for d in ref.shape), ref
        a = maps.array(ref)
        assert a.shape == tuple(ref.shape) and a.dtype == DTYPES[ref.dtype], (a.shape, a.dtype, ref)
        if a.size == 0:
            continue
        base = np.frombuffer(maps._map(ref.path), np.uint8).ctypes.data
        lo, hi = (x - base for x in _byte_bounds(a))
        storage = (ref.offset, ref.offset + ref.storage_numel * DTYPES[ref.dtype].itemsize)
        assert storage[0] <= lo and hi <= storage[1], f"{ref.name}: view {lo}..{hi} outside storage {storage}"
        assert any(s <= storage[0] and storage[1] <= e for s, e in ranges), f"{ref.name}: storage {storage} " \
                                                                            f"outside every member {ranges}"
        np.array(a).tobytes()  # touch every byte: a view past the mapping would fault here


def _zip_member_ranges(path: Path) -> list[tuple[int, int]]:
    """Where each stored member's bytes are, recomputed here from the local headers."""
    out = []
    size = path.stat().st_size
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fh:
        for info in zf.infolist():
            fh.seek(info.header_offset)
            local = fh.read(30)
            if len(local) == 30 and local[:4] == b"PK\x03\x04":
                n_name, n_extra = struct.unpack("<HH", local[26:30])
                start = info.header_offset + 30 + n_name + n_extra
                out.append((start, min(size, start + info.file_size)))
    return out


def run_case(kind: str, data: bytes, folder: Path) -> dict:
    from umi_convert.tensor_ref import Mmaps
    from umi_edge.errors import UmiError

    path = folder / ("case.bin" if kind == "bin" else "case.safetensors")
    path.write_bytes(data)
    try:
        if kind == "bin":
            from umi_convert.readers import _read_bin

            refs = _read_bin(path)
            ranges = _zip_member_ranges(path) if refs else []
        else:
            from umi_convert.readers import read_safetensors_header

            refs = read_safetensors_header(path)
            n = struct.unpack("<Q", data[:8])[0]
            ranges = [(8 + n, len(data))]
        with Mmaps() as maps:
            _check_views(refs, maps, ranges)
        return {"status": "ok", "tensors": len(refs)}
    except UmiError as e:
        return {"status": "rejected", "type": type(e).__name__, "message": str(e)}
    except BaseException as e:  # noqa: BLE001 - anything else is what the fuzzer is looking for
        return {"status": "bug", "type": type(e).__name__, "message": str(e)[:500],
                "traceback": traceback.format_exc()[-3000:]}
    finally:
        path.unlink(missing_ok=True)


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    stdin, stdout = sys.stdin.buffer, sys.stdout
    import umi_convert.readers  # noqa: F401 - imported before the first case so its time is not a case's

    with tempfile.TemporaryDirectory(prefix="umi-fuzz-") as tmp:
        stdout.write('{"status": "ready"}\n')
        stdout.flush()
        while True:
            head = stdin.read(9)
            if len(head) < 9:
                return
            kind = KINDS[head[:1]]
            (n,) = struct.unpack("<Q", head[1:])
            data = stdin.read(n)
            stdout.write(json.dumps(run_case(kind, data, Path(tmp))) + "\n")
            stdout.flush()


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
