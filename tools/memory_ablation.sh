#!/usr/bin/env bash
# Memory ablation: the tiny model trained once per long-range memory type with the shipped recipe
# (configs/train/tiny_synthetic_cpu.yaml: same data, steps, seed; only --model.net.memory.type
# differs), then evaluated on the built-in synthetic_drift protocol (3 x 10,000 frames). Results
# page: docs/memory_ablation.md.
#
#   tools/memory_ablation.sh train TYPE    # -> runs/ablation/TYPE/{run,export}, training log + time
#   tools/memory_ablation.sh eval TYPE     # -> runs/ablation/TYPE/eval/report.json
#   tools/memory_ablation.sh report        # -> docs/memory_ablation/ (merged report, plots)
#
# TYPE: none | gla | elastic | ttt | causal_attention. Each step is one process with one intra-op
# thread (OMP_NUM_THREADS=1), so two can share a 2-core machine; on the 2-core CPU here one
# training took 30-45 min and one evaluation 20-35 min. causal_attention's cache grows with every
# frame (~250 ms per frame by frame 2,000 on this CPU), so it is evaluated on the first
# MAX_FRAMES_CAUSAL (default 2,000) frames of each sequence.
#
# Environment: PYTHON (default .venv/bin/python), ROOT (default runs/ablation),
# PROTOCOL (default synthetic_drift), MAX_FRAMES_CAUSAL (default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
ROOT=${ROOT:-runs/ablation}
PROTOCOL=${PROTOCOL:-synthetic_drift}
MAX_FRAMES_CAUSAL=${MAX_FRAMES_CAUSAL:-2000}
TYPES="none gla elastic ttt causal_attention"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

usage() { echo "usage: $0 train TYPE | eval TYPE | report   (TYPE: ${TYPES// / | })" >&2; exit 2; }
check_type() { [[ " $TYPES " == *" $1 "* ]] || { echo "unknown memory type '$1'; expected one of: $TYPES" >&2; exit 2; }; }

case "${1:-}" in
  train)
    [[ $# -eq 2 ]] || usage; check_type "$2"
    mkdir -p "$ROOT/$2"
    RUN="$ROOT/$2/run" OUT="$ROOT/$2/export" PYTHON="$PYTHON" \
      tools/train_shipped.sh --model.net.memory.type "$2" 2>&1 | tr '\r' '\n' | grep -v "it/s" \
      > "$ROOT/$2/train.log"
    grep "training took" "$ROOT/$2/train.log"   # fit only: export and validation not counted
    ;;
  eval)
    [[ $# -eq 2 ]] || usage; check_type "$2"
    [[ -f "$ROOT/$2/export/model.safetensors" ]] || { echo "$ROOT/$2/export: not trained yet (run: $0 train $2)" >&2; exit 2; }
    cap=()
    [[ "$2" == causal_attention ]] && cap=(--max-frames "$MAX_FRAMES_CAUSAL")
    "$PYTHON" -m recon.cli eval "$PROTOCOL" --checkpoint "$ROOT/$2/export" --name "$2" \
      --out "$ROOT/$2/eval" --quiet "${cap[@]}"
    ;;
  report)
    [[ $# -eq 1 ]] || usage
    reports=()
    for t in $TYPES; do [[ -f "$ROOT/$t/eval/report.json" ]] && reports+=("$ROOT/$t/eval/report.json"); done
    [[ ${#reports[@]} -gt 0 ]] || { echo "no evaluated model under $ROOT (run: $0 eval TYPE)" >&2; exit 2; }
    "$PYTHON" -m recon.cli eval --merge "${reports[@]}" --out docs/memory_ablation
    ;;
  *) usage ;;
esac
