"""What a team process holds besides weights and KV: the allocator policy the engine sets, and the modules a
default team imports. Each check runs in a fresh interpreter, where sys.modules and malloc start clean."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# malloc(4 MiB), free, then malloc(2 MiB): where does the second block live? With glibc's dynamic threshold
# the free raises the threshold to 4 MiB and the 2 MiB block comes from the heap, whose freed space stays
# resident; with the threshold fixed it is a mapping of its own, returned to the system on free.
_PROBE = """
import ctypes, json, sys
if sys.argv[1] == "engine":
    from umi_edge.engine import _native
    _native.lib()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(4 << 20))
q = libc.malloc(2 << 20)
where = "?"
for line in open("/proc/self/maps"):
    span, *rest = line.split(maxsplit=5)
    lo, hi = (int(x, 16) for x in span.split("-"))
    if lo <= q < hi:
        where = rest[4].strip() if len(rest) > 4 else "anonymous"
print(json.dumps(where))
"""


def _block_region(mode: str, env: dict | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120,
                         env={**base, **(env or {})})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                    reason="glibc's mmap threshold is a Linux/glibc policy")
def test_engine_keeps_large_blocks_out_of_the_heap():
    plain = _block_region("plain")
    assert plain == "[heap]"            # the control: glibc's default policy puts the block in the heap
    assert _block_region("engine") == "anonymous"
    # a threshold the user chose is left alone
    assert _block_region("engine", {"MALLOC_MMAP_THRESHOLD_": str(64 << 20)}) == "[heap]"


def test_default_team_does_not_import_what_it_does_not_use(default_model_home):
    """The event loop (MCP sources only) and importlib.metadata (installed model wheels only) cost a team
    process about 4 MB of RSS; a default team with its model in the cache imports neither."""
    code = ("import json, sys\n"
            "from umi_edge.team import Team\n"
            "with Team.load('default', n_ctx=1024) as team:\n"
            "    role = team.roles['planner']\n"
            "    role.generate([role.bos_id] + role.tokenize('Hi'), max_tokens=2)\n"
            "print(json.dumps([m for m in ('asyncio', 'importlib.metadata', 'importlib.resources')"
            " if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
