#!/usr/bin/env bash
# Multi-host TPU (v4/v5e/v5p pod slice): run the same command on every worker.
# jax.distributed.initialize() (--multihost) discovers the pod topology itself.
#
#   TPU_NAME=my-pod ZONE=us-central2-b CONFIG=configs/retinanet_coco.py:tfds \
#   WORKDIR=gs://my-bucket/runs/retinanet_coco bash launch/tpu_pod.sh
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${CONFIG:?set CONFIG}" "${WORKDIR:?set WORKDIR}"
EXTRA_ARGS=${EXTRA_ARGS:-}
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  cd ~/jaxdet || { git clone ${REPO_URL:-https://example.invalid/jaxdet.git} ~/jaxdet && cd ~/jaxdet; }
  pip install -q -e '.[tfds]' 'jax[tpu]'
  python -m jaxdet.main --multihost --config=$CONFIG --workdir=$WORKDIR $EXTRA_ARGS
"
