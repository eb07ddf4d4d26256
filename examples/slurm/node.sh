#!/usr/bin/env bash
# What one node of a multi-node job runs: the sbatch files start every step through this script
# (srun ... bash examples/slurm/node.sh ROLE), and tests/test_multinode.py runs the same sbatch file on one
# host with SLURM's srun/scontrol faked, so the shell code here is what the test exercises.
#
#   node.sh ray-head       ray start --head on HEAD_IP:RAY_PORT offering no GPUs (engines never land on the
#                          trainer's GPUs); blocks until killed
#   node.sh ray-worker     ray start --address HEAD_IP:RAY_PORT offering GPUS_PER_NODE GPUs and the custom
#                          resource {"ROLLOUT_RESOURCE": 1} that --sglang-ray-resource ROLLOUT_RESOURCE asks for
#   node.sh wait-ray N     wait up to RAY_WAIT_S (300) seconds until N Ray nodes are alive
#   node.sh train [ARGS]   examples/launch.sh on this node: one torchrun per node, c10d rendezvous at
#                          MASTER_ADDR:MASTER_PORT (NNODES, RDZV_ID, METHOD, EXTRA_ARGS, ... from the environment)
#
# Environment (the sbatch files set it; SLURM sets SLURM_NODEID): HEAD_IP, RAY_PORT (6379), GPUS_PER_NODE (8),
# ROLLOUT_RESOURCE (rollout_node), RAY_HEAD_ARGS / RAY_WORKER_ARGS (extra `ray start` flags: --temp-dir, ports,
# --num-cpus), NODE_RANK (SLURM_NODEID; only names the node in the log), NODE_IP (this node's address; default:
# Ray's own choice for ray-worker, `hostname --ip-address` for train): with the Ray fleet, train appends
# --sglang-dist-master-addr NODE_IP, so the weight-sync group is hosted wherever the rendezvous puts global rank 0
# (c10d orders the nodes by host name, not by NODE_RANK).
set -euo pipefail
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
die() { echo "[node] error: $*" >&2; exit 2; }

ROLE=${1:-}
[ -n "$ROLE" ] || die "usage: node.sh ray-head | ray-worker | wait-ray N | train [train_rl.py flags]"
shift
NODE_RANK=${NODE_RANK:-${SLURM_NODEID:-0}}
RAY_PORT=${RAY_PORT:-6379}
ROLLOUT_RESOURCE=${ROLLOUT_RESOURCE:-rollout_node}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
read -r -a HEAD_EXTRA <<< "${RAY_HEAD_ARGS:-}"
read -r -a WORKER_EXTRA <<< "${RAY_WORKER_ARGS:-}"
need_head() { [ -n "${HEAD_IP:-}" ] || die "HEAD_IP is not set (the Ray head node's address)"; }
run() {  # DRY_RUN=1 prints the node's command instead of running it
  echo "[node $NODE_RANK] $*"
  if [ "${DRY_RUN:-0}" = "1" ]; then exit 0; fi
  exec "$@"
}

case "$ROLE" in
  ray-head)
    need_head
    run ray start --head --node-ip-address "$HEAD_IP" --port "$RAY_PORT" --num-gpus 0 --disable-usage-stats \
      --block "${HEAD_EXTRA[@]}" ;;
  ray-worker)
    need_head
    if [ -n "${NODE_IP:-}" ]; then WORKER_EXTRA=(--node-ip-address "$NODE_IP" "${WORKER_EXTRA[@]}"); fi
    run ray start --address "$HEAD_IP:$RAY_PORT" --num-gpus "${GPUS_PER_NODE:-8}" \
      --resources "{\"$ROLLOUT_RESOURCE\": 1}" --disable-usage-stats --block "${WORKER_EXTRA[@]}" ;;
  wait-ray)
    need_head
    want=${1:?wait-ray needs the number of Ray nodes}
    if [ "${DRY_RUN:-0}" = "1" ]; then echo "[node] would wait for $want Ray node(s)"; exit 0; fi
    deadline=$((SECONDS + ${RAY_WAIT_S:-300}))
    probe="import ray; ray.init(address='$HEAD_IP:$RAY_PORT', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    while :; do
      joined=$(python -c "$probe" 2> /dev/null | tail -n 1 || true)
      joined=${joined:-0}
      echo "[node] Ray nodes alive: $joined / $want"
      [ "$joined" -ge "$want" ] && exit 0
      [ "$SECONDS" -lt "$deadline" ] || die "only $joined of $want Ray nodes joined within ${RAY_WAIT_S:-300}s (see the ray start output above)"
      sleep 3
    done ;;
  train)
    EXTRA=()
    if [[ " ${EXTRA_ARGS:-} " == *" --sglang-use-ray "* && " ${EXTRA_ARGS:-} " != *" --sglang-dist-master-addr "* ]]; then
      NODE_IP=${NODE_IP:-$(hostname --ip-address | awk '{print $1}')}
      EXTRA=(--sglang-dist-master-addr "$NODE_IP")
    fi
    echo "[node $NODE_RANK] trainer launcher (${NNODES:-1} node(s), rendezvous ${MASTER_ADDR:-127.0.0.1}:${MASTER_PORT:-29500})"
    exec bash "$REPO/examples/launch.sh" "$@" "${EXTRA[@]}" ;;
  *) die "unknown role '$ROLE' (ray-head, ray-worker, wait-ray, train)" ;;
esac
