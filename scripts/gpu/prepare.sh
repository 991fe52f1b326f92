#!/usr/bin/env bash
# Build .dev/ (git-ignored via .git/info/exclude) for the CUDA device check: a trimmed llama-cpp-python
# 0.3.36 source tarball and the pure/py3 wheels the device image lacks. Run here, from anywhere:
#   bash scripts/gpu/prepare.sh          (LLAMA_SDIST=path overrides the sdist; SKIP_CONFIGURE=1 skips checks)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SDIST=${LLAMA_SDIST:-/work/dl/llama_cpp_python-0.3.36.tar.gz}
PY=${PYTHON:-python3}
DEV="$ROOT/.dev"
NAME=llama_cpp_python-0.3.36

[ -f "$SDIST" ] || { echo "prepare: sdist $SDIST not found (pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36)" >&2; exit 1; }
EXCLUDE="$ROOT/.git/info/exclude"
grep -qxF '/.dev/' "$EXCLUDE" 2>/dev/null || echo '/.dev/' >> "$EXCLUDE"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
tar xzf "$SDIST" -C "$WORK"
SRC="$WORK/$NAME"
V="$SRC/vendor/llama.cpp"

# Python-package extras the wheel build never reads
rm -rf "$SRC"/{.git,.github,docs,examples,tests,docker,scripts,mkdocs.yml} "$V"/{.git,.github}
# llama.cpp: only add_subdirectory'd when standalone or asked for (tests/examples/tools/app/pocs), or not
# CMake at all (models, docs, media, benches, python converters). tools/mtmd stays: LLAVA_BUILD=on needs it.
rm -rf "$V"/{models,docs,media,benches,tests,examples,pocs,app,ci,skills,scripts,conversion,gguf-py,grammars,requirements}
rm -f "$V"/convert_*.py "$V"/build-xcframework.sh
find "$V/tools" -mindepth 1 -maxdepth 1 ! -name mtmd -exec rm -rf {} +
rm -rf "$V"/tools/mtmd/{tests,test-*,legacy-models}
# ggml backends: ggml_add_backend() only enters a backend's folder when GGML_<NAME> is on
for b in cann et hexagon hip metal musa opencl openvino rpc sycl virtgpu vulkan webgpu zdnn zendnn; do
    rm -rf "$V/ggml/src/ggml-$b"
done

if [ "${SKIP_CONFIGURE:-0}" != 1 ]; then
    # configure (never build) the trimmed tree: every file CMake references must still be there
    common=(-Wno-dev -G Ninja -DSKBUILD_PLATLIB_DIR="$WORK/platlib" -DLLAVA_BUILD=off -DGGML_NATIVE=off)
    echo "prepare: cmake configure, GGML_CUDA=off"
    cmake -S "$SRC" -B "$WORK/build-cpu" "${common[@]}" -DGGML_CUDA=off > "$WORK/cpu.log" 2>&1 \
        || { tail -40 "$WORK/cpu.log"; echo "prepare: CPU configure of the trimmed tree failed" >&2; exit 1; }
    if command -v nvcc > /dev/null; then
        # CUDA configure with the device's flags; stand-in cuBLAS paths where this box lacks it (never linked)
        extra=()
        lib64="$(dirname "$(readlink -f "$(command -v nvcc)")")/../lib64"
        mkdir -p "$WORK/fake"
        for l in cublas cublasLt cuda_driver; do
            so=lib$l.so; [ $l = cuda_driver ] && so=libcuda.so
            if ! ls "$lib64/$so"* "$lib64/stubs/$so"* > /dev/null 2>&1; then
                touch "$WORK/fake/$so"
                extra+=(-DCUDA_${l}_LIBRARY="$WORK/fake/$so")
            fi
        done
        echo "prepare: cmake configure, GGML_CUDA=on (sm_90, configure only)"
        cmake -S "$SRC" -B "$WORK/build-cuda" "${common[@]}" -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90-real \
            -DGGML_CUDA_FA=off -DGGML_CUDA_NCCL=off "${extra[@]}" > "$WORK/cuda.log" 2>&1 \
            || { tail -40 "$WORK/cuda.log"; echo "prepare: CUDA configure of the trimmed tree failed" >&2; exit 1; }
    fi
    rm -rf "$WORK"/build-* "$WORK/platlib"
fi

rm -rf "$DEV"
mkdir -p "$DEV/wheels"
tar czf "$DEV/llama-src.tar.gz" -C "$WORK" "$NAME"

# What the device image (Python 3.12) lacks among our runtime deps and llama-cpp-python's: versions as in
# the dev venv. jsonschema's rpds-py is the one binary wheel.
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$DEV/wheels" gguf==0.19.0 diskcache==5.6.3 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 \
    referencing==0.37.0 rpds-py==2026.9.1
du -sh "$DEV"; du -sh "$DEV"/llama-src.tar.gz "$DEV"/wheels/*
