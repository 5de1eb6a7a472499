#!/usr/bin/env bash
# Memory ablation (issue 15): the tiny model trained once per arm of configs/ablation/arms.yaml with
# the shipped recipe (configs/train/tiny_synthetic_cpu.yaml: same data, steps and seed; only
# --model.net.memory.{type,options} differ), evaluated on the held-out loops (synthetic_loops,
# 24 x 300 frames) and the long drift benchmark (synthetic_drift, 3 x 10,000 frames), then the
# paired statistics against `none` (tools/ablation_stats.py). Results page: docs/memory_ablation.md.
#
#   tools/memory_ablation.sh train ARM [SEED]   # -> $ROOT/ARM_sSEED/{run,export,train.log}
#   tools/memory_ablation.sh eval ARM [SEED]    # -> $ROOT/ARM_sSEED/eval/<protocol>/report.json
#   tools/memory_ablation.sh report             # -> $DOCS/<protocol>/ (merged report, plots) + stats
#   tools/memory_ablation.sh arms               # the arm names
#
# SEED defaults to 0; seed s adds `--seed_everything s` (model init and clip order; the data seed of
# the recipe stays 0, so every seed sees the same scenes). Seed 0 passes no seed argument, so
# `RUN=$ROOT/none_s0/run OUT=$ROOT/none_s0/export tools/train_shipped.sh --model.net.memory.type none`
# is exactly `train none`. An unknown arm, memory option or a misfit of options exits 2 (one line).
# Each step is one process with one intra-op thread (OMP_NUM_THREADS=1), so two can share a 2-core
# machine. causal_attention's cache grows with every frame, so on synthetic_drift it streams only
# the first MAX_FRAMES_CAUSAL (default 2,000) frames of each sequence (its rows stop at 2,000).
#
# Environment: PYTHON (default .venv/bin/python), ROOT (default runs/ablation2), DOCS (default
# docs/memory_ablation), PROTOCOLS (default "synthetic_loops synthetic_drift"), MAX_FRAMES_CAUSAL
# (default 2000), REVISIT (default off: the arms are evaluated on their own window odometry,
# `recon eval --no-revisit`, so the keyframe corrections of the readout do not mask the memory;
# on: with them, as shipped), REFINE (default off: without the inference-only window refinement and
# focal self-calibration of session 9, `--no-refine`, like the arms evaluated before it existed; on:
# as shipped), MAX_FRAMES (default unset: whole sequences; set, every sequence of
# `eval` stops there and the reports go to eval/<protocol>_max<N>/, which `report` and
# tools/ablation_stats.py read as their own protocol, e.g. PROTOCOLS=synthetic_drift_max1000),
# TRAIN_ARGS (default empty: further training arguments for every arm of a study under its own ROOT,
# split on spaces, e.g. TRAIN_ARGS="--model.net.head.long_pose_offsets [16,32]" for the long pose
# slots of docs/memory_ablation.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
ROOT=${ROOT:-runs/ablation2}
DOCS=${DOCS:-docs/memory_ablation}
PROTOCOLS=${PROTOCOLS:-synthetic_loops synthetic_drift}
MAX_FRAMES_CAUSAL=${MAX_FRAMES_CAUSAL:-2000}
MAX_FRAMES=${MAX_FRAMES:-}
[[ -z "$MAX_FRAMES" || "$MAX_FRAMES" =~ ^[0-9]+$ ]] || { echo "MAX_FRAMES must be a frame count, got '$MAX_FRAMES'" >&2; exit 2; }
REVISIT=${REVISIT:-off}
REFINE=${REFINE:-off}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

usage() { echo "usage: $0 train ARM [SEED] | eval ARM [SEED] | report | arms" >&2; exit 2; }
check_seed() { [[ "$1" =~ ^[0-9]+$ ]] || { echo "SEED must be a non-negative integer, got '$1'" >&2; exit 2; }; }
arm_args() { "$PYTHON" -m tools.ablation_arms args "$1"; }   # exit 2 with one line for a bad arm

case "${1:-}" in
  train)
    [[ $# -eq 2 || $# -eq 3 ]] || usage
    arm=$2; seed=${3:-0}; check_seed "$seed"
    out=$(arm_args "$arm") || exit 2
    mapfile -t args <<< "$out"
    read -r -a extra <<< "${TRAIN_ARGS:-}"
    args+=("${extra[@]}")
    [[ "$seed" == 0 ]] || args+=(--seed_everything "$seed")
    dir="$ROOT/${arm}_s$seed"
    mkdir -p "$dir"
    RUN="$dir/run" OUT="$dir/export" PYTHON="$PYTHON" \
      tools/train_shipped.sh "${args[@]}" 2>&1 | tr '\r' '\n' | grep -v "it/s" > "$dir/train.log"
    grep "training took" "$dir/train.log"   # fit only: export and validation not counted
    ;;
  eval)
    [[ $# -eq 2 || $# -eq 3 ]] || usage
    arm=$2; seed=${3:-0}; check_seed "$seed"
    arm_args "$arm" > /dev/null || exit 2
    dir="$ROOT/${arm}_s$seed"
    [[ -f "$dir/export/model.safetensors" ]] || { echo "$dir/export: not trained yet (run: $0 train $arm $seed)" >&2; exit 2; }
    for protocol in $PROTOCOLS; do
      cap=()
      out="$dir/eval/$protocol"
      [[ "$REVISIT" == on ]] || cap+=(--no-revisit)
      [[ "$REFINE" == on ]] || cap+=(--no-refine)
      if [[ -n "$MAX_FRAMES" ]]; then
        cap+=(--max-frames "$MAX_FRAMES"); out="${out}_max$MAX_FRAMES"
      elif [[ "$arm" == causal_attention && "$protocol" == synthetic_drift ]]; then
        cap+=(--max-frames "$MAX_FRAMES_CAUSAL")
      fi
      "$PYTHON" -m recon.cli eval "$protocol" --checkpoint "$dir/export" --name "${arm}_s$seed" \
        --out "$out" --quiet "${cap[@]}"
    done
    ;;
  report)
    [[ $# -eq 1 ]] || usage
    found=0
    for protocol in $PROTOCOLS; do
      reports=()
      for r in "$ROOT"/*_s*/eval/"$protocol"/report.json; do [[ -f "$r" ]] && reports+=("$r"); done
      [[ ${#reports[@]} -gt 0 ]] || continue
      found=1
      "$PYTHON" -m recon.cli eval --merge "${reports[@]}" --out "$DOCS/$protocol"
      "$PYTHON" -m tools.ablation_stats --root "$ROOT" --protocol "$protocol" --out "$DOCS/$protocol"
    done
    [[ $found -eq 1 ]] || { echo "no evaluated arm under $ROOT (run: $0 eval ARM [SEED])" >&2; exit 2; }
    ;;
  arms)
    [[ $# -eq 1 ]] || usage
    "$PYTHON" -m tools.ablation_arms list
    ;;
  *) usage ;;
esac
