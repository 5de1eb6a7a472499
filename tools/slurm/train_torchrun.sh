#!/usr/bin/env bash
# torchrun: multi-node DDP / FSDP without SLURM. Run this on every node with the same MASTER_ADDR
# (the rank-0 node's address) and its own NODE_RANK; torchrun starts one process per GPU and
# Lightning picks up the torchelastic environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_*).
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 tools/slurm/train_torchrun.sh     # on node 0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 tools/slurm/train_torchrun.sh     # on node 1
#   RECIPE=configs/train/gpu_fsdp.yaml ... tools/slurm/train_torchrun.sh --model.net.memory.type elastic
#
# CPU-only check of the same path (2 processes, gloo):
#   NPROC=2 ACCELERATOR=cpu RECIPE=configs/train/tiny_synthetic_cpu.yaml tools/slurm/train_torchrun.sh \
#       --trainer.max_steps 4
set -euo pipefail
cd "$(dirname "$0")/../.."
RECIPE=${RECIPE:-configs/train/gpu_ddp.yaml}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
NPROC=${NPROC:-$(nvidia-smi -L 2>/dev/null | wc -l)}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
RUN=${RUN:-runs/$(basename "$RECIPE" .yaml)}
PYTHON=${PYTHON:-python}
EXTRA=()
[[ -n "${ACCELERATOR:-}" ]] && EXTRA=(--trainer.accelerator "$ACCELERATOR" --trainer.strategy ddp)
[[ -f "$RUN/checkpoints/last.ckpt" ]] && EXTRA+=(--ckpt_path "$RUN/checkpoints/last.ckpt")

"$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    -m recon.cli train fit --config "$RECIPE" --trainer.num_nodes "$NNODES" --trainer.devices "$NPROC" \
    --trainer.default_root_dir "$RUN" "${EXTRA[@]}" "$@"
