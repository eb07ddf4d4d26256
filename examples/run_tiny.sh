#!/usr/bin/env bash
# The main job on a CPU: build the bundled tiny arithmetic task and model (once), then run a short
# RL run and print the held-out accuracy before and after.
#   METHOD=gt|majority_vote|self_certainty|entropy|corewarding_1|corewarding_2|corewarding_3|random_reward|
#          semantic_entropy|self_harmony  (default below)
#   STEPS=40 NPROC=1 (NPROC=2 runs TP=2 under torchrun)  OUT=runs/tiny-$METHOD
#   OVERWRITE=1: a rerun replaces OUT (a demo is rerun often; OVERWRITE=0 refuses a used OUT, as train_rl.py does)
set -euo pipefail
cd "$(dirname "$0")/.."
METHOD=${METHOD:-corewarding_2}
STEPS=${STEPS:-40}
NPROC=${NPROC:-1}
LR=${LR:-1e-4}
OUT=${OUT:-runs/tiny-$METHOD}
ASSETS=${ASSETS:-assets/tiny}
DRY_RUN=${DRY_RUN:-0}
OVERWRITE=${OVERWRITE:-1}
# the numbers are bit-reproducible for a fixed thread count (and CPU kernels: benchmarks/bench_main_job.py)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

if [ ! -f "$ASSETS/model/config.json" ]; then
  echo "[run_tiny] building the tiny task and warm-started model in $ASSETS (about 2 minutes)"
  python tools/make_tiny_task.py --out "$ASSETS"
fi
EXTRA=()
if [ "$OVERWRITE" = "1" ]; then EXTRA+=(--overwrite); fi
if [ "$METHOD" = "corewarding_1" ] || [ "$METHOD" = "corewarding_3" ]; then
  EXTRA+=(--train-data-rephrased "$ASSETS/data/train_rephrased.parquet")
fi
VAL_SAMPLES=${VAL_SAMPLES:-4}  # sampled validation (avg@k, pass@k, maj@k at T=1) next to the greedy accuracy
read -r -a USER_ARGS <<< "${EXTRA_ARGS:-}"  # any further train_rl.py flags, e.g. EXTRA_ARGS="--view-loss-agg mean"
LAUNCH=(python)
if [ "$NPROC" -gt 1 ]; then
  LAUNCH=(torchrun --nproc_per_node "$NPROC")
  EXTRA+=(--tensor-model-parallel-size "$NPROC")
fi
CMD=("${LAUNCH[@]}" train_rl.py --hf-checkpoint "$ASSETS/model"
  --train-data "$ASSETS/data/train.parquet" --val-data "$ASSETS/data/val.parquet"
  --reward-method "$METHOD" --global-batch-size 16 --n-samples-per-prompt 8
  --max-prompt-length 128 --max-response-length 48 --micro-batch-size 64
  --lr "$LR" --train-iters "$STEPS" --eval-interval 10 --seed "${SEED:-1234}" --output-dir "$OUT"
  --val-n-samples "$VAL_SAMPLES" "${EXTRA[@]}" ${USER_ARGS[@]+"${USER_ARGS[@]}"})
echo "[run_tiny] OMP_NUM_THREADS=$OMP_NUM_THREADS ${CMD[*]}"
if [ "$DRY_RUN" = "1" ]; then exit 0; fi
"${CMD[@]}"
echo "[run_tiny] metrics: $OUT/metrics.jsonl  tensorboard: $OUT/tensorboard"
