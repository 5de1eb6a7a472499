#!/usr/bin/env bash
# One-shot GPU check of streamrecon (about 8 minutes on one CUDA GPU); writes ONE JSON report.
#
#   bash tools/gpu_check.sh [--out PATH | PATH] [--cpu-smoke | --gpu] [--budget-s S] [--no-setup]
#
# Sections (each with its wall time, status and result in the JSON; one failing section does not
# stop the others; the exit status is 1 when any section failed, 2 for a usage error):
#   env               python / torch / CUDA device / Triton mode / imports
#   kernel_tests      tests/layers/ops/*/test_*triton*.py, compiled Triton kernels (TRITON_INTERPRET unset)
#   bench_ttt         tools/bench/bench_ttt.py (its JSON)
#   bench_gated_delta tools/bench/bench_gated_delta.py: Triton vs torch, and vs the transformers peer
#   train_step        tools/gpu_check_train_step.py: small preset, bf16 autocast, fwd+bwd+AdamW
#   stream_tiny       tools/gpu_check_stream.py: 1,000 frames of model.step, tiny preset
#   stream_small      the same, small preset                                  (optional)
#   gpu_marked_tests  the other tests marked `gpu`                              (optional)
#   bench_ttt_large   bench_ttt at 64 frames x 1024 tokens                      (optional)
#   kernel_tests_slow the `slow` sweeps of the Triton kernel tests              (optional)
# Optional sections are skipped (not failed) when the time budget is short. The Python tools run as
# modules (python -m tools.gpu_check_stream, ...) with PYTHONPATH set to the repo root.
#
# Mode: --gpu, --cpu-smoke (tiny sizes, kernels under the Triton interpreter), or auto: gpu when an
# NVIDIA device is present, else cpu-smoke. Output: --out PATH, else $OUT/gpu_check.json when $OUT
# is set, else ./gpu_check.json. Python: .venv/bin/python, else python3 (with wheels from .whl/
# installed into a temporary folder when a package such as kornia is missing), else
# `bash tools/setup.sh` (skipped with --no-setup). See docs/gpu_check.md.
set -uo pipefail

CALLER_PWD=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

usage() { sed -n '2,4p' "$ROOT/tools/gpu_check.sh" | sed 's/^# \{0,1\}//'; }

OUT_PATH="" MODE=auto BUDGET="" DO_SETUP=1
while [ $# -gt 0 ]; do
  case $1 in
    --out) [ $# -ge 2 ] || { echo "gpu_check.sh: --out needs a path" >&2; exit 2; }; OUT_PATH=$2; shift 2 ;;
    --out=*) OUT_PATH=${1#--out=}; shift ;;
    --cpu-smoke) MODE=cpu-smoke; shift ;;
    --gpu) MODE=gpu; shift ;;
    --budget-s) [ $# -ge 2 ] || { echo "gpu_check.sh: --budget-s needs seconds" >&2; exit 2; }; BUDGET=$2; shift 2 ;;
    --budget-s=*) BUDGET=${1#--budget-s=}; shift ;;
    --no-setup) DO_SETUP=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) if [ -n "$OUT_PATH" ]; then echo "gpu_check.sh: one output path only, got '$1' too" >&2; exit 2; fi
       OUT_PATH=$1; shift ;;
  esac
done
if [ -n "$BUDGET" ] && ! [[ $BUDGET =~ ^[0-9]+$ && $BUDGET -ge 30 ]]; then
  echo "gpu_check.sh: --budget-s must be a whole number of seconds >= 30, got '$BUDGET'" >&2; exit 2
fi
[ -n "$OUT_PATH" ] || OUT_PATH=${OUT:+$OUT/}gpu_check.json
case $OUT_PATH in /*) ;; *) OUT_PATH=$CALLER_PWD/$OUT_PATH ;; esac

if [ "$MODE" = auto ]; then
  if [ -e /dev/nvidia0 ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
    MODE=gpu
  else
    MODE=cpu-smoke
  fi
fi
[ -n "$BUDGET" ] || { [ "$MODE" = gpu ] && BUDGET=480 || BUDGET=240; }

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s.%N)
log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }
log "mode $MODE, budget ${BUDGET}s, report -> $OUT_PATH"

# ---------------------------------------------------------------- python
if [ "$MODE" = gpu ]; then NEED_CUDA=1; else NEED_CUDA=0; fi
py_ok() {  # can this interpreter run every section?
  "$1" -c "import sys, torch, pytest, yaml, psutil, recon.model, layers.ops.gla
sys.exit(3 if $NEED_CUDA and not torch.cuda.is_available() else 0)" >/dev/null 2>&1
}
pick_python() {
  local c
  for c in .venv/bin/python python3; do
    if [ -x "$c" ] || command -v "$c" >/dev/null 2>&1; then
      if py_ok "$c"; then PY=$c; PY_SOURCE=$1; return 0; fi
    fi
  done
  return 1
}
PY="" PY_SOURCE=""
if ! pick_python "found"; then
  shopt -s nullglob; WHEELS=(.whl/*.whl); shopt -u nullglob
  if [ ${#WHEELS[@]} -gt 0 ] && command -v python3 >/dev/null 2>&1; then
    log "installing ${#WHEELS[@]} wheel(s) from .whl/ into $WORK/site"
    W0=$(date +%s.%N)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WORK/site" "${WHEELS[@]}" >"$WORK/wheels.log" 2>&1
    rc=$?
    { echo "status=$([ $rc -eq 0 ] && echo ok || echo failed)"; echo "rc=$rc"; echo "start=$W0"
      echo "end=$(date +%s.%N)"; echo "command=pip install --target TMP ${WHEELS[*]}"; } >"$WORK/wheels.meta"
    export PYTHONPATH="$PYTHONPATH:$WORK/site"
    pick_python "python3 + .whl" || true
  fi
fi
if [ -z "$PY" ] && [ "$DO_SETUP" = 1 ] && [ ! -f .venv/.streamrecon-setup ]; then
  log "no ready interpreter: running tools/setup.sh (not counted in the budget)"
  S0=$(date +%s.%N)
  PIP_RETRIES=${PIP_RETRIES:-1} PIP_DEFAULT_TIMEOUT=${PIP_DEFAULT_TIMEOUT:-20} \
    timeout --kill-after=15 900 bash tools/setup.sh </dev/null >"$WORK/setup.log" 2>&1
  rc=$?
  { echo "status=$([ $rc -eq 0 ] && echo ok || echo failed)"; echo "rc=$rc"; echo "start=$S0"
    echo "end=$(date +%s.%N)"; echo "command=bash tools/setup.sh"; } >"$WORK/setup.meta"
  pick_python "tools/setup.sh" || true
fi
if [ -z "$PY" ]; then  # nothing passes the import check: run anyway, the sections record the errors
  for c in .venv/bin/python python3 python; do
    if [ -x "$c" ] || command -v "$c" >/dev/null 2>&1; then PY=$c; PY_SOURCE="fallback (imports failed)"; break; fi
  done
fi
[ -n "$PY" ] || PY=python3
log "python: $PY ($PY_SOURCE)"
REPORT_PY=$PY; "$PY" -c "" >/dev/null 2>&1 || REPORT_PY=python3

# ---------------------------------------------------------------- sections
T1=$(date +%s)
DEADLINE=$((T1 + BUDGET))
RESERVE=10      # seconds kept for the report
MIN_SECTION=20  # a section gets at least this much or is skipped

# record NAME key=value... : write a section's meta file
record() { local name=$1; shift; printf '%s\n' "$@" >"$WORK/$name.meta"; }

# run_section NAME CAP_S REQUIRED(1|0) NEED_PASS(1|0) CMD... : run with a timeout, record status and time
run_section() {
  local name=$1 cap=$2 required=$3 need_pass=$4; shift 4
  echo "$name" >>"$WORK/order"
  local left=$((DEADLINE - $(date +%s) - RESERVE))
  if [ "$left" -lt "$MIN_SECTION" ]; then
    record "$name" status=skipped "required=$required" "reason=time budget: ${left}s left of ${BUDGET}s"
    log "$name: skipped (time budget)"; return 0
  fi
  local t=$cap; [ "$left" -lt "$t" ] && t=$left
  local args=() a inner=$((t - 25)) note="" cmd
  [ "$inner" -ge 10 ] || inner=10
  for a in "$@"; do args+=("${a//@TIME_BUDGET@/$inner}"); done  # a graceful stop inside the timeout
  [ "${args[0]}" = env ] && note=${TRITON_INTERPRET_NOTE:-}
  printf -v cmd '%q ' "${args[@]}"; cmd=${cmd% }
  log "$name: start (timeout ${t}s): $cmd"
  local s e rc status
  s=$(date +%s.%N)
  GPU_CHECK_PROBE_OUT="$WORK/$name.probe.json" \
    timeout --kill-after=15 "$t" "${args[@]}" </dev/null >"$WORK/$name.log" 2>&1
  rc=$?
  e=$(date +%s.%N)
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  record "$name" "status=$status" "rc=$rc" "start=$s" "end=$e" "timeout_s=$t" "required=$required" \
    "need_pass=$need_pass" "triton_interpret=$note" "command=$cmd"
  log "$name: $status (rc $rc)"
}
skip_section() {  # skip_section NAME REASON
  echo "$1" >>"$WORK/order"; record "$1" status=skipped required=0 "reason=$2"; log "$1: skipped ($2)"
}

shopt -s nullglob
TRITON_TESTS=(tests/layers/ops/*/test_*triton*.py)
GPU_TESTS=()
for f in $(grep -rl --include='test_*.py' 'mark.gpu' tests | sort); do
  case " ${TRITON_TESTS[*]} " in *" $f "*) ;; *) GPU_TESTS+=("$f") ;; esac
done
shopt -u nullglob
PYTEST=("$PY" -m pytest -q -p no:cacheprovider)
# the probe plugin records how the kernels really ran (compiled or interpreted); only if it imports
"$PY" -c "import tools.gpu_check_probe" >/dev/null 2>&1 && PYTEST+=(-p tools.gpu_check_probe)
KPAR=()  # on a GPU, compile the kernel variants of the kernel tests in 4 processes when xdist is there
[ "$MODE" = gpu ] && "$PY" -c "import xdist" >/dev/null 2>&1 && KPAR=(-n 4)

if [ "$MODE" = gpu ]; then
  unset TRITON_INTERPRET; KENV=(env -u TRITON_INTERPRET); TRITON_INTERPRET_NOTE="unset (compiled kernels)"
else
  KENV=(env TRITON_INTERPRET=1); TRITON_INTERPRET_NOTE="1 (Triton interpreter on the CPU)"
fi
{ echo "mode=$MODE"; echo "python=$PY"; echo "python_source=$PY_SOURCE"; echo "budget_s=$BUDGET"
  echo "start=$T0"; echo "checks_start=$(date +%s.%N)"; echo "started_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$WORK/run.meta"

run_section env 60 1 0 "${KENV[@]}" "$PY" -m tools.gpu_check_report env --mode "$MODE" --out "$WORK/env.result.json"

if [ ${#TRITON_TESTS[@]} -gt 0 ]; then
  run_section kernel_tests 240 1 1 "${KENV[@]}" "${PYTEST[@]}" ${KPAR[@]+"${KPAR[@]}"} -m "gpu or not slow" \
    --junitxml="$WORK/kernel_tests.junit.xml" "${TRITON_TESTS[@]}"
else
  echo kernel_tests >>"$WORK/order"; record kernel_tests status=failed required=1 "reason=no tests/layers/ops/*/test_*triton*.py"
fi

if [ "$MODE" = gpu ]; then
  run_section bench_ttt 120 1 0 "$PY" -m tools.bench.bench_ttt --device cuda --repeats 10 \
    --out "$WORK/bench_ttt.result.json"
  run_section bench_gated_delta 120 1 0 "$PY" -m tools.bench.bench_gated_delta --device cuda --no-loop --repeats 10 \
    --out "$WORK/bench_gated_delta.result.json"
  run_section train_step 150 1 0 "$PY" -m tools.gpu_check_train_step --preset small --device cuda \
    --batch 2 --frames 8 16 --warmup 2 --repeats 5 --out "$WORK/train_step.result.json"
  run_section stream_tiny 150 1 0 "$PY" -m tools.gpu_check_stream --config tiny --frames 1000 --device cuda \
    --time-budget-s @TIME_BUDGET@ --out "$WORK/stream_tiny.result.json"
  run_section stream_small 150 0 0 "$PY" -m tools.gpu_check_stream --config small --frames 1000 --device cuda \
    --time-budget-s @TIME_BUDGET@ --out "$WORK/stream_small.result.json"
else
  run_section bench_ttt 90 1 0 "$PY" -m tools.bench.bench_ttt --device cpu --threads 1 --frames 4 --tokens 32 \
    --dim 64 --heads 2 --repeats 1 --out "$WORK/bench_ttt.result.json"
  run_section bench_gated_delta 60 1 0 "$PY" -m tools.bench.bench_gated_delta --device cpu --threads 1 --seq-len 256 \
    --heads 2 --repeats 1 --out "$WORK/bench_gated_delta.result.json"
  run_section train_step 90 1 0 "$PY" -m tools.gpu_check_train_step --preset tiny --device cpu \
    --batch 1 --frames 2 --warmup 1 --repeats 1 --out "$WORK/train_step.result.json"
  run_section stream_tiny 120 1 0 "$PY" -m tools.gpu_check_stream --config tiny --frames 1000 --device cpu \
    --time-budget-s @TIME_BUDGET@ --out "$WORK/stream_tiny.result.json"
  skip_section stream_small "cpu-smoke: the small preset is streamed on a GPU only"
fi

if [ ${#GPU_TESTS[@]} -gt 0 ]; then
  run_section gpu_marked_tests 120 0 "$NEED_CUDA" "${KENV[@]}" "${PYTEST[@]}" -m gpu \
    --junitxml="$WORK/gpu_marked_tests.junit.xml" "${GPU_TESTS[@]}"
else
  skip_section gpu_marked_tests "no other test file marks a test gpu"
fi

if [ "$MODE" = gpu ]; then
  run_section bench_ttt_large 90 0 0 "$PY" -m tools.bench.bench_ttt --device cuda --frames 64 --tokens 1024 \
    --repeats 5 --out "$WORK/bench_ttt_large.result.json"
  run_section kernel_tests_slow 180 0 1 "${KENV[@]}" "${PYTEST[@]}" ${KPAR[@]+"${KPAR[@]}"} -m slow \
    --junitxml="$WORK/kernel_tests_slow.junit.xml" "${TRITON_TESTS[@]}"
else
  skip_section bench_ttt_large "cpu-smoke"
  skip_section kernel_tests_slow "cpu-smoke: the slow sweeps take minutes under the interpreter"
fi

# ---------------------------------------------------------------- report
"$REPORT_PY" -m tools.gpu_check_report assemble --work "$WORK" --out "$OUT_PATH"
rc=$?
if [ ! -s "$OUT_PATH" ]; then  # the report itself broke: still leave one valid JSON file
  mkdir -p "$(dirname "$OUT_PATH")"
  printf '{"gpu_check": 1, "ok": false, "failed_sections": ["report"], "error": "tools/gpu_check_report.py assemble failed (rc %s)"}\n' "$rc" >"$OUT_PATH"
  rc=1
fi
exit $rc
