"""Conversion benchmark: wall time and peak RSS of umi_convert, and of llama.cpp's convert_hf_to_gguf.py
when given, each in its own child process, with ratios (ours / llama.cpp).

    python -m umi_convert.bench SRC [--outtype q8_0] [--reference path/to/convert_hf_to_gguf.py] [--json]

The reference defaults to $UMI_EDGE_LLAMA_CPP_CONVERTER. Weight files are read once beforehand so both
runs start with the same warm page cache.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from umi_edge.errors import ConvertError

# Each run reports its own VmHWM at exit: ru_maxrss would include the parent's RSS at fork time (a parent
# holding torch, e.g. pytest, would swamp both numbers).
_HWM = (
    "import atexit, os\n"
    "def _hwm():\n"
    "    with open('/proc/self/status') as f:\n"
    "        kb = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))\n"
    "    with open(os.environ['UMI_BENCH_HWM'], 'w') as f:\n"
    "        f.write(str(kb))\n"
    "atexit.register(_hwm)\n"
)
_OURS = _HWM + (
    "import sys\n"
    "from umi_convert import convert\n"
    "convert(sys.argv[1], sys.argv[2], outtype=sys.argv[3], progress=False)\n"
)
_REFERENCE = _HWM + (
    "import runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


# what convert_hf_to_gguf.py --outtype accepts
_REFERENCE_OUTTYPES = ("f32", "f16", "bf16", "q8_0", "tq1_0", "tq2_0", "auto")


def _measure(code: str, args: list[str], hwm_file: Path, env: dict | None = None) -> dict:
    """Run `python -c code *args`; wall seconds and the child's own peak RSS (VmHWM; ru_maxrss where
    /proc is missing)."""
    env = {**(env or os.environ), "UMI_BENCH_HWM": str(hwm_file)}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    stderr = p.stderr.read() if p.stderr else b""
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        raise ConvertError(f"benchmark run failed ({args[0] if args else code[:40]} ...): {tail[0]}")
    try:
        kb = int(hwm_file.read_text())
    except (OSError, ValueError):
        kb = usage.ru_maxrss
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(kb / 1024, 1)}


def _warm(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_file() and f.suffix in (".safetensors", ".bin"):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def bench_convert(src, outtype: str = "q8_0", reference=None) -> dict:
    """Time and peak RSS of converting SRC (a local folder) to `outtype`, ours and (optionally) llama.cpp's."""
    folder = Path(src)
    if not folder.is_dir():
        raise ConvertError(f"{src}: the benchmark needs a local checkpoint folder")
    reference = reference or os.environ.get("UMI_EDGE_LLAMA_CPP_CONVERTER") or None
    _warm(folder)
    result: dict = {"source": str(folder), "outtype": outtype, "checkpoint_bytes": sum(
        f.stat().st_size for f in folder.iterdir() if f.suffix in (".safetensors", ".bin"))}
    with tempfile.TemporaryDirectory(prefix="umi-bench-") as tmp:
        out = Path(tmp) / "ours.gguf"
        result["ours"] = _measure(_OURS, [str(folder), str(out), outtype], Path(tmp) / "ours.hwm")
        result["ours"]["size_bytes"] = out.stat().st_size
        out.unlink()
        result["reference"] = None
        if reference and outtype not in _REFERENCE_OUTTYPES:
            result["reference_note"] = f"llama.cpp's converter cannot write {outtype}; no reference run"
        elif reference:
            script = Path(reference)
            if not script.is_file():
                raise ConvertError(f"{script}: llama.cpp converter not found")
            env = dict(os.environ)
            if (script.parent / "gguf-py").is_dir():
                env["PYTHONPATH"] = str(script.parent / "gguf-py")
            ref_out = Path(tmp) / "ref.gguf"
            result["reference"] = _measure(
                _REFERENCE, [str(script), str(folder), "--outfile", str(ref_out), "--outtype", outtype],
                Path(tmp) / "ref.hwm", env)
            result["reference"]["size_bytes"] = ref_out.stat().st_size
            result["ratios"] = {
                "time": round(result["ours"]["seconds"] / result["reference"]["seconds"], 3),
                "peak_rss": round(result["ours"]["peak_rss_mb"] / result["reference"]["peak_rss_mb"], 3),
            }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m umi_convert.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("--outtype", default="q8_0")
    ap.add_argument("--reference", default=None, help="llama.cpp's convert_hf_to_gguf.py")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        r = bench_convert(args.src, args.outtype, args.reference)
    except ConvertError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['source']} -> {r['outtype']} ({r['checkpoint_bytes'] / 1e6:.0f} MB of weights)")
    for who in ("ours", "reference"):
        if r.get(who):
            print(f"  {who:9s} {r[who]['seconds']:8.2f} s  peak RSS {r[who]['peak_rss_mb']:8.1f} MB")
    if r.get("reference_note"):
        print(f"  ({r['reference_note']})")
    if r.get("ratios"):
        print(f"  ratios (ours / llama.cpp): time {r['ratios']['time']:.2f}, peak RSS {r['ratios']['peak_rss']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
