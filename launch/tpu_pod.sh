#!/usr/bin/env bash
# Multi-host TPU (v4/v5e/v5p pod slice): run the same command on every worker.
# jax.distributed.initialize() (--multihost) discovers the pod topology itself.
#
#   TPU_NAME=my-pod ZONE=us-central2-b CONFIG=retinanet_coco:tfds \
#   WORKDIR=gs://my-bucket/runs/retinanet_coco bash launch/tpu_pod.sh
#
# The code the workers run, in ~/jaxdet (replaced on every launch):
#   * by default this checkout as it is on disk (tracked and untracked files git does not
#     ignore, uncommitted edits included), copied with `gcloud compute tpus tpu-vm scp`;
#   * with REPO_URL=<git URL> (and optionally REPO_REF=<branch or tag>), a clone of that
#     repository made on each worker.
# CONFIG is a config name (`python -m jaxdet.main --list_configs`) or a path relative to the
# repository root, e.g. configs/retinanet_coco.py:tfds.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME (the TPU VM / pod slice name)}" "${ZONE:?set ZONE}"
: "${CONFIG:?set CONFIG (a config name such as retinanet_coco:tfds, or configs/<file>.py)}"
: "${WORKDIR:?set WORKDIR (a gs:// path every worker can write)}"
EXTRA_ARGS=${EXTRA_ARGS:-}

if [ -n "${REPO_URL:-}" ]; then
  echo "tpu_pod.sh: every worker clones $REPO_URL${REPO_REF:+ ($REPO_REF)} into ~/jaxdet." >&2
  FETCH="rm -rf ~/jaxdet && git clone -q --depth 1 ${REPO_REF:+--branch $REPO_REF}"
  FETCH="$FETCH $REPO_URL ~/jaxdet"
else
  ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if ! git -C "$ROOT" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    echo "tpu_pod.sh: $ROOT is not a git checkout and REPO_URL is not set: set REPO_URL to the" \
         "git URL of jaxdet (e.g. REPO_URL=https://github.com/<owner>/jaxdet.git)." >&2
    exit 2
  fi
  ARCHIVE=$(mktemp "${TMPDIR:-/tmp}/jaxdet-code-XXXXXX.tar.gz")
  trap 'rm -f "$ARCHIVE"' EXIT
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
     | xargs -0 sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done' sh \
     | tar -czf "$ARCHIVE" --null -T -)
  echo "tpu_pod.sh: REPO_URL is not set: copying this checkout ($ROOT) to ~/jaxdet on every" \
       "worker (set REPO_URL=<git URL> to clone a repository there instead)." >&2
  gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU_NAME":/tmp/jaxdet-code.tar.gz \
    --zone="$ZONE" --worker=all
  FETCH="rm -rf ~/jaxdet && mkdir -p ~/jaxdet && tar -xzf /tmp/jaxdet-code.tar.gz -C ~/jaxdet"
fi

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  $FETCH
  cd ~/jaxdet
  pip install -q -e '.[tfds]' 'jax[tpu]'
  python -m jaxdet.main --multihost --config=$CONFIG --workdir=$WORKDIR $EXTRA_ARGS
"
