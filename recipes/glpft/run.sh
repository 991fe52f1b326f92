#!/usr/bin/env bash
# The whole recipe in the order that fits a 2-core box: stage 1 alone, then stage 2 in two processes (the
# planner; the caller and the summarizer), then the single-model baseline. Units already trained are skipped
# and a killed unit resumes from its checkpoint, so running this again after a kill continues the run.
#     nohup nice -n 10 recipes/glpft/run.sh /work/glpft-out/<run-id> > /work/glpft-out/<run-id>.log 2>&1 &
set -euo pipefail
OUT=${1:?usage: run.sh OUT_DIR [train.py options]}
shift
HERE=$(cd "$(dirname "$0")" && pwd)
trained() { [ -f "$OUT/peft/$1/adapter_model.safetensors" ]; }
train() { python "$HERE/train.py" --out "$OUT" "$@"; }

trained stage1 || train --part stage1 "$@"
pids=()
if ! trained planner; then train --part planner "$@" > "$OUT/planner.log" 2>&1 & pids+=($!); fi
if ! trained caller || ! trained summarizer; then
    parts=$(for r in caller summarizer; do trained $r || echo $r; done | paste -sd,)
    train --part "$parts" "$@" > "$OUT/caller-summarizer.log" 2>&1 & pids+=($!)
fi
for p in "${pids[@]}"; do wait "$p"; done
echo "team done: $OUT/models.toml (set glpft)"
trained baseline || train --part baseline "$@"
echo "baseline done: $OUT/models.toml (set glpft-baseline)"
