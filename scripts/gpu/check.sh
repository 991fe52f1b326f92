#!/usr/bin/env bash
# Device side of the CUDA offload check; run from the repo root with .dev/ carried (scripts/gpu/README.md):
# carried wheels -> /tmp/site, llama-cpp-python 0.3.36 built for sm_90 from .dev/llama-src.tar.gz, then
# scripts/gpu/check.py -> $OUT/gpu_check.json. Full build log: $OUT/build.log. Phase timings printed at the end.
# A rerun on the same warm machine reuses the build (FORCE_BUILD=1 rebuilds).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/gpu-out}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT" "$SITE"
TIMES=()
phase_start() { P_NAME=$1; P_T0=$(date +%s%N); echo "== $1"; }
phase_end() {
    local ms=$(( ($(date +%s%N) - P_T0) / 1000000 ))
    TIMES+=("$(printf '%-7s %5d.%01d s  %s' "$P_NAME" $((ms / 1000)) $((ms % 1000 / 100)) "$1")")
}
report() {
    echo "== timings"; printf '%s\n' "${TIMES[@]}" | tee "$OUT/timings.txt"
}

phase_start info
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi failed"
nvcc --version | tail -1
"$PY" -c 'import sys, platform; print("python", sys.version.split()[0], platform.machine())'
"$PY" -m pip --version
"$PY" -c 'import scikit_build_core as s; print("scikit-build-core", s.__version__)' || echo "scikit-build-core missing"
cmake --version | head -1; ninja --version
if [ -z "${CUDA_HOME:-}" ]; then   # /usr/local/bin/nvcc may be a wrapper script: find the toolkit by its headers
    for d in /usr/local/cuda "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")" /usr/local/cuda-*; do
        [ -f "$d/include/cuda_runtime.h" ] && { CUDA_HOME=$d; break; }
    done
fi
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
echo "CUDA_HOME=$CUDA_HOME"
EXTRA=()
# cuBLAS (and libcuda for CUDA::cuda_driver): from the toolkit if it has them, else the nvidia-* pip wheels
find_lib() {   # name -> first match in the toolkit, then python's nvidia/ packages, then ldconfig
    local hit
    hit=$(ls "$CUDA_HOME"/lib64/"$1"* "$CUDA_HOME"/targets/x86_64-linux/lib/"$1"* "$CUDA_HOME"/lib64/stubs/"$1"* 2>/dev/null | head -1)
    [ -n "$hit" ] && { echo "toolkit:$hit"; return; }
    hit=$("$PY" -c 'import nvidia, sys; print(*nvidia.__path__)' 2>/dev/null | xargs -r -I{} find {} -name "$1*" 2>/dev/null | head -1)
    [ -n "$hit" ] && { echo "pip:$hit"; return; }
    hit=$(ldconfig -p 2>/dev/null | awk -v n="$1" '$1 ~ "^"n {print $NF; exit}')
    [ -n "$hit" ] || hit=$(ls /usr/local/nvidia/lib64/"$1"* /usr/lib/x86_64-linux-gnu/"$1"* /usr/lib64/"$1"* 2>/dev/null | head -1)
    [ -n "$hit" ] && echo "system:$hit"
}
for lib in libcublas.so libcublasLt.so libcuda.so; do
    hit=$(find_lib $lib); echo "$lib -> ${hit:-NOT FOUND}"
    case "$hit" in
        pip:*|system:*)
            path=${hit#*:}; var=${lib#lib}; var=${var%.so}; [ "$var" = cuda ] && var=cuda_driver
            EXTRA+=("-DCUDA_${var}_LIBRARY=$path")
            [ "$var" = cuda_driver ] || export LD_LIBRARY_PATH="$(dirname "$path")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
        "")  # no libcuda to link: without VMM ggml-cuda needs only the runtime
            [ $lib = libcuda.so ] && EXTRA+=("-DGGML_CUDA_NO_VMM=on") ;;
    esac
done
if [ ! -f "$CUDA_HOME/include/cublas_v2.h" ]; then
    inc=$("$PY" -c 'import nvidia, sys; print(*nvidia.__path__)' 2>/dev/null | xargs -r -I{} find {} -name cublas_v2.h 2>/dev/null | head -1)
    echo "cublas_v2.h -> ${inc:-NOT FOUND}"
    [ -n "$inc" ] && EXTRA+=("-DCMAKE_CUDA_FLAGS=-I$(dirname "$inc")" "-DCMAKE_CXX_FLAGS=-I$(dirname "$inc")")
fi
phase_end ""

phase_start wheels
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$ROOT"/.dev/wheels/*.whl \
    || { echo "wheel install failed"; exit 2; }
phase_end "$(ls "$ROOT"/.dev/wheels | wc -l) wheels"

phase_start build
if [ -f "$SITE/llama_cpp/lib/libggml-cuda.so" ] && [ "${FORCE_BUILD:-0}" != 1 ]; then
    echo "reusing the CUDA build in $SITE"
    phase_end "reused"
else
    rm -rf /tmp/llama-src && mkdir -p /tmp/llama-src && tar xzf "$ROOT/.dev/llama-src.tar.gz" -C /tmp/llama-src
    # sm_90 only, no flash-attention kernels (the runtime's default is flash_attn=False), no NCCL, no compression
    export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90-real -DLLAVA_BUILD=off -DGGML_NATIVE=off \
-DGGML_CUDA_FA=off -DGGML_CUDA_NCCL=off -DGGML_CUDA_COMPRESSION_MODE=none -DLLAMA_BUILD_TESTS=off \
-DLLAMA_BUILD_EXAMPLES=off -DLLAMA_BUILD_TOOLS=off -DLLAMA_BUILD_SERVER=off ${EXTRA[*]}"
    export CMAKE_BUILD_PARALLEL_LEVEL=$JOBS
    echo "CMAKE_ARGS=$CMAKE_ARGS"
    if "$PY" -m pip install -v --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
        --target "$SITE" --config-settings=build-dir=/tmp/llama-build /tmp/llama-src/llama_cpp_python-0.3.36 \
        > "$OUT/build.log" 2>&1; then
        phase_end "ok, log $(du -h "$OUT/build.log" | cut -f1)"
    else
        tail -60 "$OUT/build.log"
        phase_end "FAILED"
        report
        exit 3
    fi
fi
ls "$SITE/llama_cpp/lib"

phase_start check
PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
    "$PY" "$ROOT/scripts/gpu/check.py" --out "$OUT/gpu_check.json" --require-gpu
rc=$?
phase_end "rc $rc"
report
exit $rc
