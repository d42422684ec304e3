#!/usr/bin/env bash
# Multi-node GPU job under SLURM: one process per node, all local GPUs per process.
# jax.distributed.initialize() reads the SLURM environment (--multihost).
#
#   sbatch --nodes=2 --gpus-per-node=8 launch/slurm_gpu.sh configs/retinanet_coco.py runs/retinanet_coco
#
# Pre-emption and time limits: SLURM sends SIGTERM to the job steps 300 s before the time
# limit (--signal) or on pre-emption; jaxdet finishes the current step, writes a checkpoint and
# exits with code 75, and this script requeues the job, which resumes from that checkpoint.
#SBATCH --job-name=jaxdet
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --open-mode=append
set -uo pipefail
CONFIG=${1:?config file}
WORKDIR=${2:?workdir (shared filesystem)}
shift 2
srun python -m jaxdet.main --multihost --config="$CONFIG" --workdir="$WORKDIR" "$@"
status=$?
if [ "$status" -eq 75 ]; then
  echo "jaxdet stopped on a signal after writing a checkpoint; requeueing job $SLURM_JOB_ID."
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
exit "$status"
