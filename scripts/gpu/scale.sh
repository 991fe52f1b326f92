#!/usr/bin/env bash
# Device side of the 7B-shape team measurement with every layer offloaded (docs/scale.md): builds the CUDA
# llama-cpp-python as check.sh does (and runs its quick check), then `run_scale("7b", n_gpu_layers=-1)`:
# one fresh process per layout (one Llama, the published three models, today's two contexts, the pool), each
# reporting GPU memory in use while loaded, peak RSS, prompt and decode tok/s. Writes $OUT/scale_7b_gpu.json.
# Run from the repo root with .dev/ carried (bash scripts/gpu/prepare.sh here first); timeout_s 570.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/gpu-out}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
bash "$ROOT/scripts/gpu/check.sh" > "$OUT/check.log" 2>&1
echo "check.sh exit $? (log: check.log)"
[ -f "$SITE/llama_cpp/lib/libggml-cuda.so" ] || { tail -40 "$OUT/check.log"; echo "no CUDA build"; exit 3; }
export UMI_EDGE_HOME=${UMI_EDGE_HOME:-/tmp/umi-home}
PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 "$PY" - "$OUT/scale_7b_gpu.json" <<'PY'
import json, sys, time
import llama_cpp  # noqa: F401  (llama.cpp's libraries before numpy's)
from umi_edge.bench.scale import run_scale, scale_table

t0 = time.time()
report = run_scale("7b", n_gpu_layers=-1, progress=lambda s: print("scale:", s, flush=True))
report["seconds"] = round(time.time() - t0, 1)
open(sys.argv[1], "w").write(json.dumps(report, indent=1))
print(scale_table(report))
for layout, row in report["layouts"].items():
    print(f"{layout:<10} GPU {row.get('gpu_used_mb')} MB")
PY
