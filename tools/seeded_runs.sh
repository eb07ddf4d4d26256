#!/bin/bash
# Seeded 3-step runs of every method and generation mode on a warm-started tiny task, for comparing two trees
# bitwise with tools/compare_runs.py (B 4 x G 4, 24 response tokens, temperature 1.5 so groups disagree).
#
#   PYTHONPATH=$PWD python tools/make_tiny_task.py --out /tmp/tiny --num-train 64 --num-val 8
#   bash tools/seeded_runs.sh /path/to/tree_a /tmp/tiny /tmp/runs_a
#   bash tools/seeded_runs.sh /path/to/tree_b /tmp/tiny /tmp/runs_b
#   python tools/compare_runs.py /tmp/runs_a/gt /tmp/runs_b/gt ...   (one pair per run name below)
set -u
tree=$1; tiny=$2; root=$3
mkdir -p "$root"
run() {
  local name=$1; shift
  rm -rf "${root:?}/$name"
  (cd "$tree" && OMP_NUM_THREADS=1 PYTHONPATH=$tree python train_rl.py --hf-checkpoint "$tiny/model" \
    --train-data "$tiny/data/train.parquet" --global-batch-size 4 --n-samples-per-prompt 4 \
    --max-response-length 24 --lr 1e-3 --rollout-temperature 1.5 --eval-interval 0 --no-progress-bar \
    --train-iters 3 --rollout-dump --output-dir "$root/$name" "$@" > "$root/$name.log" 2>&1)
  echo "$name rc=$?"
}
run gt --reward-method gt
run majority_vote --reward-method majority_vote
run self_certainty --reward-method self_certainty
run entropy --reward-method entropy
run corewarding_1 --reward-method corewarding_1 --train-data-rephrased "$tiny/data/train_rephrased.parquet"
run corewarding_2 --reward-method corewarding_2
run gt_async --reward-method gt --async-rollout
run cw2_prefetch --reward-method corewarding_2 --teacher-prefetch
run cw2_async_prefetch --reward-method corewarding_2 --async-rollout --teacher-prefetch
run gt_dynamic --reward-method gt --dynamic-sampling
run cw2_dynamic --reward-method corewarding_2 --dynamic-sampling
run mv_dynamic --reward-method majority_vote --dynamic-sampling
