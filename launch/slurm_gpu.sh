#!/usr/bin/env bash
# Multi-node GPU job under SLURM: one process per node, all local GPUs per process.
# jax.distributed.initialize() reads the SLURM environment (--multihost).
#
#   sbatch --nodes=2 --gpus-per-node=8 launch/slurm_gpu.sh configs/retinanet_coco.py runs/retinanet_coco
#SBATCH --job-name=jaxdet
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
set -euo pipefail
CONFIG=${1:?config file}
WORKDIR=${2:?workdir (shared filesystem)}
shift 2
srun python -m jaxdet.main --multihost --config="$CONFIG" --workdir="$WORKDIR" "$@"
