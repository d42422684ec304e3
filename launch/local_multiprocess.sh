#!/usr/bin/env bash
# N processes on one machine (CPU, gloo collectives) -- the same code path as a
# multi-host job, for trying the distributed setup without a cluster:
#   bash launch/local_multiprocess.sh 2 configs/demo.py:quick runs/demo_mp
set -euo pipefail
N=${1:?number of processes}; CONFIG=${2:?config}; WORKDIR=${3:?workdir}
PORT=${PORT:-12355}
export JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo
pids=()
for ((i = 0; i < N; i++)); do
  python -m jaxdet.main --config="$CONFIG" --workdir="$WORKDIR" \
    --coordinator_address="127.0.0.1:$PORT" --num_processes="$N" --process_id="$i" \
    --config.train.progress_bar=$([ "$i" = 0 ] && echo True || echo False) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
