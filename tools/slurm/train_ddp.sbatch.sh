#!/usr/bin/env bash
# SLURM: multi-node DDP (or FSDP) training with `recon train`. Lightning reads SLURM's variables
# (SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID, the node list) and starts the process group itself:
# one task per GPU, launched by srun; no torchrun needed.
#
#   sbatch tools/slurm/train_ddp.sbatch.sh                               # configs/train/gpu_ddp.yaml
#   RECIPE=configs/train/gpu_fsdp.yaml sbatch tools/slurm/train_ddp.sbatch.sh
#   sbatch --nodes 8 tools/slurm/train_ddp.sbatch.sh                    # trainer.num_nodes follows
#
# A requeued / preempted job resumes from the run's last.ckpt (same step, optimizer state).
#SBATCH --job-name=streamrecon
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8          # = GPUs per node = trainer.devices
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=10           # DataLoader workers + main process
#SBATCH --time=48:00:00
#SBATCH --signal=SIGUSR1@120         # Lightning saves and requeues on SIGUSR1 (SLURMEnvironment auto_requeue)
#SBATCH --requeue
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
RECIPE=${RECIPE:-configs/train/gpu_ddp.yaml}
RUN=${RUN:-runs/$(basename "$RECIPE" .yaml)}
PYTHON=${PYTHON:-python}
RESUME=()
[[ -f "$RUN/checkpoints/last.ckpt" ]] && RESUME=(--ckpt_path "$RUN/checkpoints/last.ckpt")

export NCCL_ASYNC_ERROR_HANDLING=1
srun "$PYTHON" -m recon.cli train fit --config "$RECIPE" \
    --trainer.num_nodes "$SLURM_JOB_NUM_NODES" --trainer.devices "$SLURM_NTASKS_PER_NODE" \
    --trainer.default_root_dir "$RUN" "${RESUME[@]}" "$@"
