#!/usr/bin/env bash
# N CPU processes on this machine (gloo collectives), K fake devices each: tests multi-host code paths.
#
#   launch/local_multiprocess.sh 2 2 /tmp/run --config=configs/sft_reasoning.py:tiny --config.tokenizer=... \
#       --config.data.paths=... --config.data.image_root=...
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS WORKDIR [insightv-train flags...]" >&2
  exit 2
fi
N=$1 K=$2 WORKDIR=$3
shift 3
PORT=${PORT:-$((20000 + RANDOM % 20000))}
PY=${PY:-.venv/bin/python}
pids=()
for ((i = 0; i < N; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$K" JAX_PLATFORMS=cpu \
    "$PY" -m pipelines.cli.train --workdir="$WORKDIR" --config.distributed.coordinator_address="127.0.0.1:$PORT" \
    --config.distributed.num_processes="$N" --config.distributed.process_id="$i" "$@" \
    > "$WORKDIR.process$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ $status -eq 0 ] && echo "all $N processes finished; logs: $WORKDIR.process*.log" || echo "a process failed; see $WORKDIR.process*.log" >&2
exit $status
