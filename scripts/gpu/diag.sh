#!/usr/bin/env bash
# Isolates a crash when loading a model with CUDA offload: each variant in its own process.
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD:$PWD/scripts/gpu:$PWD/tests:/tmp/site" PYTHONFAULTHANDLER=1
python3 -c "import sys; sys.path.insert(0,'scripts/gpu'); import check; from pathlib import Path; check.write_model(Path('/tmp/m.gguf'), 512, 8)" || exit 1
python3 scripts/gpu/diag.py
