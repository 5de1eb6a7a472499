#!/usr/bin/env bash
# Train the shipped tiny checkpoint on the built-in synthetic dataset on one CPU, export it into the
# package (recon/assets/checkpoints/tiny: model.safetensors + config.yaml) and write its validation
# report on held-out synthetic sequences next to the baselines (tools/validate_shipped.py) and the
# window-pose check against the no-motion prediction (tools/window_pose_check.py).
#
#   tools/train_shipped.sh                    # fresh run (about 40 min on one CPU core)
#   tools/train_shipped.sh --ckpt_path last   # resume a killed run (same step, same optimizer state)
#
# Extra arguments go to `recon train fit` (e.g. --model.net.memory.type elastic). Environment:
#   PYTHON   interpreter with streamrecon installed (default: .venv/bin/python)
#   RUN      run folder for logs and checkpoints (default: runs/tiny_synthetic_cpu)
#   OUT      export folder (default: recon/assets/checkpoints/tiny)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
RUN=${RUN:-runs/tiny_synthetic_cpu}
OUT=${OUT:-recon/assets/checkpoints/tiny}
RECIPE=configs/train/tiny_synthetic_cpu.yaml

start=$(date +%s)
"$PYTHON" -m recon.cli train fit --config "$RECIPE" --trainer.default_root_dir "$RUN" "$@"
echo "training took $(( $(date +%s) - start )) s"
"$PYTHON" -m recon.cli export "$RUN/checkpoints/last.ckpt" "$OUT" \
    --note "recon train fit --config $RECIPE $*; tools/train_shipped.sh"
"$PYTHON" tools/validate_shipped.py --checkpoint "$OUT" --out "$OUT/validation.json"
"$PYTHON" tools/window_pose_check.py --checkpoint "$OUT" --out "$OUT/window_pose_check.json"
