#!/usr/bin/env bash
# Start the same insightv-train command on every worker of a Cloud TPU VM slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE PROJECT gs://bucket/runs/sft8b -- --config=configs/sft_reasoning.py:8b \
#       --config.tokenizer=gs://bucket/tok --config.data.paths=gs://bucket/sft.arrayrecord
#
# On TPU VMs jax.distributed.initialize() discovers the slice by itself (--config.distributed.coordinator_address=
# auto): every worker runs the same command; the mesh comes from the config (--config.mesh.*); the workdir (and so
# the Orbax checkpoints and each process's Grain iterator state) lives on the bucket.
set -euo pipefail
if [ $# -lt 5 ] || [ "$5" != "--" ]; then
  echo "usage: $0 TPU_NAME ZONE PROJECT WORKDIR -- [insightv-train flags...]" >&2
  exit 2
fi
TPU=$1 ZONE=$2 PROJECT=$3 WORKDIR=$4
shift 5
REPO=${REPO:-$HOME/insightv-jax}
CMD="cd $REPO && .venv/bin/insightv-train --workdir=$WORKDIR --config.distributed.coordinator_address=auto $*"
CMD+=" 2>&1 | tee -a /tmp/insightv-train.log"
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --project="$PROJECT" --worker=all --command="$CMD"
