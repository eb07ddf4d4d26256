#!/usr/bin/env bash
# One parametrised launcher for every method x model: the paper's hyper-parameters (Co-rewarding,
# arXiv 2508.00410; docs/ALGORITHMS.md section 1), single-node torchrun by default, multi-node when
# NNODES > 1 (one launch.sh per node, c10d rendezvous: see examples/slurm/).
#
#   METHOD=corewarding_2 MODEL=qwen3-8b-base MODEL_PATH=/models/Qwen3-8B-Base DATA_DIR=data/math \
#     bash examples/launch.sh [extra train_rl.py flags ...]
#
# Inputs (environment):
#   METHOD        gt | majority_vote | self_certainty | entropy | corewarding_1 | corewarding_2 | corewarding_3
#                 | random_reward | semantic_entropy | self_harmony  (required)
#   MODEL         preset: qwen2.5-7b | qwen3-4b-base | qwen3-8b-base | llama3.2-3b-instruct  (default qwen3-8b-base)
#   MODEL_PATH    HF checkpoint directory (default $MODELS_DIR/<HF name>, MODELS_DIR=models)
#   DATA_DIR      holds train.parquet, train_rephrased.parquet (Co-rewarding-I), val.parquet (default data/math)
#   TRAIN_DATA, TRAIN_DATA_REPHRASED, VAL_DATA   explicit files (override DATA_DIR's names; VAL_DATA= "none" disables)
#   NNODES (1) GPUS_PER_NODE (8; NPROC is an alias) MASTER_ADDR MASTER_PORT (29500) RDZV_ID   multi-node rendezvous
#   TP, PP, MICRO_BATCH, MAX_TOKENS_PER_MB   override the preset's parallelism / micro-batching
#   GLOBAL_BATCH (128) N_SAMPLES (8) PROMPT_LEN (512) RESPONSE_LEN (3072) LR (3e-6) EPOCHS (3)
#   TEMPERATURE (1.0) EVAL_INTERVAL (10) SEED (1234) KL_COEF (per method) SAVE_INTERVAL (20)
#   OUT (runs/$MODEL-$METHOD)  SAVE_DIR (ckpt/$MODEL-$METHOD)  RESUME (auto: --load SAVE_DIR if it has a checkpoint; 0: never)
#   EXTRA_ARGS    extra train_rl.py flags as one string (e.g. "--entropy-coef 0.001"); positional args are appended too
#   Rollout placement (GPU path; the CPU_TINY variant and the tests use the embedded engine):
#   ROLLOUT_BACKEND  sglang (default: an SGLang fleet launched by rank 0) | embedded (HF engine inside rank 0)
#   ROLLOUT_GPUS     N: disaggregated on one node, the node's last N GPUs serve, the others train (default 0:
#                    colocated, the engines share the trainer's GPUs of node 0 and time-share them, --colocate)
#   ROLLOUT_NODES    K: disaggregated over nodes, the last K of NNODES serve through the Ray fleet (the raylets are
#                    started as examples/slurm/ray_rollout_fleet.sbatch starts them; RAY_ADDRESS, default auto)
#   SGLANG_TP (preset TP)  SGLANG_MEM_FRACTION (0.7 colocated: the engines release it all while training; 0.85 else)
#   A --rollout-backend, --sglang-urls or --sglang-use-ray in EXTRA_ARGS / the arguments: the user places the
#   engines and launch.sh adds no rollout flags of its own.
#   DRY_RUN=1     check inputs, print the placement and the command, exit 0 without running
#   ALLOW_MISSING=1 (with DRY_RUN=1) skip the checks that need real files / GPUs
#   CPU_TINY=1    run METHOD on the bundled tiny task on CPU for STEPS (2) steps with a small batch
#                 (global batch 4, G=4, response 48; NPROC=1 plain python, NPROC>1 torchrun with TP=NPROC;
#                 NNODES>1: one launcher per node, c10d rendezvous, TP=NNODES*NPROC).
#                 ASSETS (assets/tiny; built by tools/make_tiny_task.py if missing) gives
#                 ASSETS/model and ASSETS/data/{train,train_rephrased,val}.parquet; MODEL_PATH /
#                 TRAIN_DATA / TRAIN_DATA_REPHRASED / VAL_DATA override single files.
# Relative paths (MODEL_PATH, DATA_DIR, OUT, ...) are relative to the current directory; the defaults
# models/, data/math, runs/, ckpt/ too (ASSETS defaults to the repository's assets/tiny).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "[launch] error: $*" >&2; exit 2; }

METHODS="gt majority_vote self_certainty entropy corewarding_1 corewarding_2 corewarding_3 random_reward semantic_entropy self_harmony"
METHOD=${METHOD:-}
[ -n "$METHOD" ] || die "METHOD is not set; pick one of: $METHODS"
case " $METHODS " in *" $METHOD "*) ;; *) die "unknown METHOD '$METHOD'; pick one of: $METHODS" ;; esac

DRY_RUN=${DRY_RUN:-0}
ALLOW_MISSING=${ALLOW_MISSING:-0}
CPU_TINY=${CPU_TINY:-0}
SKIP_CHECKS=0
if [ "$DRY_RUN" = "1" ] && [ "$ALLOW_MISSING" = "1" ]; then SKIP_CHECKS=1; fi

# Per-method reference values (docs/ALGORITHMS.md section 3): KL coefficient, the EMA schedule of II and III.
METHOD_ARGS=()
case "$METHOD" in
  corewarding_2|corewarding_3)
    KL_COEF=${KL_COEF:-0.001}
    METHOD_ARGS+=(--teacher-alpha-start "${TEACHER_ALPHA_START:-0.01}" --teacher-alpha-end "${TEACHER_ALPHA_END:-1e-5}") ;;
  *) KL_COEF=${KL_COEF:-0.005} ;;
esac
METHOD_ARGS+=(--kl-loss-coef "$KL_COEF")

need_file() {  # need_file PATH WHAT
  if [ "$SKIP_CHECKS" = "1" ]; then return 0; fi
  [ -f "$1" ] || die "$2 not found: $1"
}
need_model() {
  if [ "$SKIP_CHECKS" = "1" ]; then return 0; fi
  [ -d "$1" ] || die "model directory not found: MODEL_PATH=$1"
  [ -f "$1/config.json" ] || die "MODEL_PATH=$1 has no config.json (expected a HF checkpoint directory)"
}

# DATA_ARGS from TRAIN_DATA, TRAIN_DATA_REPHRASED (corewarding_1, corewarding_3) and VAL_DATA (none: no validation), each
# checked; $1 names the directory variable the defaults came from, for the error hints ("" when none).
set_data_args() {
  local dir=$1
  need_file "$TRAIN_DATA" "training data (TRAIN_DATA${dir:+ or $dir/train.parquet})"
  DATA_ARGS=(--train-data "$TRAIN_DATA")
  if [ "$METHOD" = "corewarding_1" ] || [ "$METHOD" = "corewarding_3" ]; then
    need_file "$TRAIN_DATA_REPHRASED" "rephrased training data for $METHOD (TRAIN_DATA_REPHRASED${dir:+ or $dir/train_rephrased.parquet})"
    DATA_ARGS+=(--train-data-rephrased "$TRAIN_DATA_REPHRASED")
  fi
  if [ "$VAL_DATA" != "none" ]; then
    need_file "$VAL_DATA" "validation data (VAL_DATA${dir:+ or $dir/val.parquet; VAL_DATA=none disables validation})"
    DATA_ARGS+=(--val-data "$VAL_DATA")
  fi
}

EXTRA=()
if [ -n "${EXTRA_ARGS:-}" ]; then
  read -r -a _extra <<< "$EXTRA_ARGS"
  EXTRA+=("${_extra[@]}")
fi
EXTRA+=("$@")

if [ "$CPU_TINY" = "1" ]; then
  # ---------------------------------------------------------------- tiny CPU variant (CI)
  ASSETS=${ASSETS:-$REPO/assets/tiny}
  MODEL_PATH=${MODEL_PATH:-$ASSETS/model}
  TRAIN_DATA=${TRAIN_DATA:-$ASSETS/data/train.parquet}
  TRAIN_DATA_REPHRASED=${TRAIN_DATA_REPHRASED:-$ASSETS/data/train_rephrased.parquet}
  VAL_DATA=${VAL_DATA:-$ASSETS/data/val.parquet}
  NPROC=${NPROC:-1}
  STEPS=${STEPS:-2}
  OUT=${OUT:-runs/launch-tiny-$METHOD}
  if [ ! -f "$MODEL_PATH/config.json" ] && [ "$MODEL_PATH" = "$ASSETS/model" ]; then
    if [ "$DRY_RUN" = "1" ]; then
      echo "[launch] would build the tiny task: python $REPO/tools/make_tiny_task.py --out $ASSETS"
      SKIP_CHECKS=1
    else
      echo "[launch] building the tiny task and warm-started model in $ASSETS (about 2 minutes)"
      python "$REPO/tools/make_tiny_task.py" --out "$ASSETS"
    fi
  fi
  need_model "$MODEL_PATH"
  set_data_args ""
  if [ "$VAL_DATA" != "none" ]; then
    DATA_ARGS+=(--max-val-samples "${MAX_VAL_SAMPLES:-16}")
  fi
  LAUNCH=(python)
  PAR_ARGS=()
  if [ "$NPROC" -gt 1 ]; then
    LAUNCH=(torchrun --standalone --nnodes 1 --nproc_per_node "$NPROC")
    PAR_ARGS=(--tensor-model-parallel-size "$NPROC")
  fi
  if [ "${NNODES:-1}" -gt 1 ]; then  # one launcher per node (examples/slurm/node.sh train): TP over all ranks
    LAUNCH=(torchrun --nnodes "$NNODES" --nproc_per_node "$NPROC" --rdzv-backend c10d
      --rdzv-endpoint "${MASTER_ADDR:-127.0.0.1}:${MASTER_PORT:-29500}" --rdzv-id "${RDZV_ID:-corew-tiny-$METHOD}")
    PAR_ARGS=(--tensor-model-parallel-size $((NNODES * NPROC)))
  fi
  CMD=("${LAUNCH[@]}" "$REPO/train_rl.py" --hf-checkpoint "$MODEL_PATH" "${PAR_ARGS[@]}" "${DATA_ARGS[@]}"
    --reward-method "$METHOD" --global-batch-size "${GLOBAL_BATCH:-4}" --n-samples-per-prompt "${N_SAMPLES:-4}"
    --max-prompt-length "${PROMPT_LEN:-128}" --max-response-length "${RESPONSE_LEN:-48}" --micro-batch-size 16
    --lr "${LR:-1e-4}" --train-iters "$STEPS" --rollout-temperature "${TEMPERATURE:-1.0}"
    --eval-interval "${EVAL_INTERVAL:-10}" --seed "${SEED:-1234}" --output-dir "$OUT" --no-progress-bar
    "${METHOD_ARGS[@]}" "${EXTRA[@]}")
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  echo "[launch] placement: CPU, $NPROC rank(s) train; rollouts from the embedded HF engine inside rank 0"
  echo "[launch] ${CMD[*]}"
  if [ "$DRY_RUN" = "1" ]; then exit 0; fi
  "${CMD[@]}"
  echo "[launch] metrics: $OUT/metrics.jsonl  tensorboard: $OUT/tensorboard"
  exit 0
fi

# -------------------------------------------------------------------- model presets
# name | HF name | TP | micro-batch (sequences) | token budget per micro-batch
# TP: 7B/8B -> 2 (TP=4 also divides their query groups), 3B/4B -> 1/2. Token budgets assume 80 GB GPUs
# with full recompute; lower MAX_TOKENS_PER_MB if a rank runs out of memory. The GPU presets keep padded
# micro-batches until packing has run with Transformer Engine's THD attention (tools/gpu_session.sh).
MODEL=${MODEL:-qwen3-8b-base}
case "$(echo "$MODEL" | tr '[:upper:]' '[:lower:]')" in
  qwen2.5-7b|qwen2_5-7b|qwen25-7b)
    MODEL=qwen2.5-7b; HF_NAME=Qwen2.5-7B; P_TP=2; P_MB=4; P_TOK=16384 ;;
  qwen3-4b-base|qwen3-4b)
    MODEL=qwen3-4b-base; HF_NAME=Qwen3-4B-Base; P_TP=2; P_MB=4; P_TOK=24576 ;;
  qwen3-8b-base|qwen3-8b)
    MODEL=qwen3-8b-base; HF_NAME=Qwen3-8B-Base; P_TP=2; P_MB=4; P_TOK=16384 ;;
  llama3.2-3b-instruct|llama-3.2-3b-instruct|llama3.2-3b)
    MODEL=llama3.2-3b-instruct; HF_NAME=Llama-3.2-3B-Instruct; P_TP=1; P_MB=4; P_TOK=16384 ;;
  *) die "unknown MODEL preset '$MODEL'; pick one of: qwen2.5-7b qwen3-4b-base qwen3-8b-base llama3.2-3b-instruct" ;;
esac
TP=${TP:-$P_TP}
PP=${PP:-1}
MICRO_BATCH=${MICRO_BATCH:-$P_MB}
MAX_TOKENS_PER_MB=${MAX_TOKENS_PER_MB:-$P_TOK}
MODELS_DIR=${MODELS_DIR:-models}
MODEL_PATH=${MODEL_PATH:-$MODELS_DIR/$HF_NAME}
DATA_DIR=${DATA_DIR:-data/math}
TRAIN_DATA=${TRAIN_DATA:-$DATA_DIR/train.parquet}
TRAIN_DATA_REPHRASED=${TRAIN_DATA_REPHRASED:-$DATA_DIR/train_rephrased.parquet}
VAL_DATA=${VAL_DATA:-$DATA_DIR/val.parquet}
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-${NPROC:-8}}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_ID=${RDZV_ID:-${SLURM_JOB_ID:-corew-$MODEL-$METHOD}}
OUT=${OUT:-runs/$MODEL-$METHOD}
SAVE_DIR=${SAVE_DIR:-ckpt/$MODEL-$METHOD}
SAVE_INTERVAL=${SAVE_INTERVAL:-20}
RESUME=${RESUME:-auto}

case "$NNODES$GPUS_PER_NODE$TP$PP" in *[!0-9]*) die "NNODES, GPUS_PER_NODE, TP and PP must be integers" ;; esac
WORLD=$((NNODES * GPUS_PER_NODE))
[ $((WORLD % (TP * PP))) -eq 0 ] || die "world size $WORLD (NNODES=$NNODES x GPUS_PER_NODE=$GPUS_PER_NODE) is not divisible by TP*PP=$((TP * PP))"

# -------------------------------------------------------------------- rollout placement (train vs serve GPUs)
ROLLOUT_BACKEND=${ROLLOUT_BACKEND:-sglang}
ROLLOUT_GPUS=${ROLLOUT_GPUS:-0}
ROLLOUT_NODES=${ROLLOUT_NODES:-0}
SGLANG_TP=${SGLANG_TP:-$TP}
case "$ROLLOUT_GPUS$ROLLOUT_NODES$SGLANG_TP" in *[!0-9]*) die "ROLLOUT_GPUS, ROLLOUT_NODES and SGLANG_TP must be integers" ;; esac
TRAIN_NODES=$NNODES
TRAIN_GPUS=$GPUS_PER_NODE
ROLLOUT_ARGS=()
user_placed=0
for tok in "${EXTRA[@]}"; do
  case "$tok" in --rollout-backend|--rollout-backend=*|--sglang-urls|--sglang-urls=*|--sglang-use-ray) user_placed=1 ;; esac
done
gpu_ranges() {  # gpu_ranges FIRST COUNT EACH -> "0-1, 2-3"
  local out="" g
  for ((g = $1; g < $1 + $2; g += $3)); do out+="${out:+, }$g$([ "$3" -gt 1 ] && echo "-$((g + $3 - 1))")"; done
  echo "$out"
}
if [ "$user_placed" = "1" ]; then
  PLACEMENT="as the given rollout flags say (launch.sh adds none)"
elif [ "$ROLLOUT_BACKEND" = "embedded" ]; then
  PLACEMENT="all GPUs train; rollouts from the embedded HF engine inside rank 0 (GPU 0)"
  ROLLOUT_ARGS=(--rollout-backend embedded)
elif [ "$ROLLOUT_BACKEND" != "sglang" ]; then
  die "unknown ROLLOUT_BACKEND '$ROLLOUT_BACKEND'; pick sglang or embedded"
elif [ "$ROLLOUT_GPUS" -gt 0 ] && [ "$ROLLOUT_NODES" -gt 0 ]; then
  die "ROLLOUT_GPUS and ROLLOUT_NODES both set; name serving GPUs of one node or serving nodes, not both"
elif [ "$ROLLOUT_NODES" -gt 0 ]; then
  [ "$ROLLOUT_NODES" -lt "$NNODES" ] || die "ROLLOUT_NODES=$ROLLOUT_NODES leaves no training node of NNODES=$NNODES"
  [ $((GPUS_PER_NODE % SGLANG_TP)) -eq 0 ] || die "SGLANG_TP=$SGLANG_TP does not divide GPUS_PER_NODE=$GPUS_PER_NODE"
  TRAIN_NODES=$((NNODES - ROLLOUT_NODES))
  MEM=${SGLANG_MEM_FRACTION:-0.85}
  ENGINES=$((ROLLOUT_NODES * GPUS_PER_NODE / SGLANG_TP))
  PLACEMENT="disaggregated: nodes 0-$((TRAIN_NODES - 1)) train ($((TRAIN_NODES * GPUS_PER_NODE)) GPUs); the last $ROLLOUT_NODES node(s) serve $ENGINES SGLang engine(s) of TP $SGLANG_TP through the Ray fleet (RAY_ADDRESS ${RAY_ADDRESS:-auto}), mem fraction $MEM, weights by NCCL"
  ROLLOUT_ARGS=(--rollout-backend sglang --sglang-use-ray --sglang-ray-address "${RAY_ADDRESS:-auto}"
    --sglang-num-engines "$ENGINES" --sglang-tp-size "$SGLANG_TP" --sglang-mem-fraction-static "$MEM"
    --sglang-weight-sync distributed --sglang-dist-master-addr "$MASTER_ADDR")
elif [ "$ROLLOUT_GPUS" -gt 0 ]; then
  [ "$NNODES" -eq 1 ] || die "ROLLOUT_GPUS splits one node; with NNODES=$NNODES name serving nodes with ROLLOUT_NODES"
  [ "$ROLLOUT_GPUS" -lt "$GPUS_PER_NODE" ] || die "ROLLOUT_GPUS=$ROLLOUT_GPUS leaves no training GPU of GPUS_PER_NODE=$GPUS_PER_NODE"
  [ $((ROLLOUT_GPUS % SGLANG_TP)) -eq 0 ] || die "SGLANG_TP=$SGLANG_TP does not divide ROLLOUT_GPUS=$ROLLOUT_GPUS"
  TRAIN_GPUS=$((GPUS_PER_NODE - ROLLOUT_GPUS))
  MEM=${SGLANG_MEM_FRACTION:-0.85}
  ENGINES=$((ROLLOUT_GPUS / SGLANG_TP))
  PLACEMENT="disaggregated on one node: GPUs 0-$((TRAIN_GPUS - 1)) train; GPUs $TRAIN_GPUS-$((GPUS_PER_NODE - 1)) serve $ENGINES SGLang engine(s) of TP $SGLANG_TP (GPUs $(gpu_ranges "$TRAIN_GPUS" "$ROLLOUT_GPUS" "$SGLANG_TP")), mem fraction $MEM, weights by CUDA IPC"
  ROLLOUT_ARGS=(--rollout-backend sglang --sglang-num-engines "$ENGINES" --sglang-tp-size "$SGLANG_TP"
    --sglang-base-gpu-id "$TRAIN_GPUS" --sglang-mem-fraction-static "$MEM")
else
  [ $((GPUS_PER_NODE % SGLANG_TP)) -eq 0 ] || die "SGLANG_TP=$SGLANG_TP does not divide GPUS_PER_NODE=$GPUS_PER_NODE"
  MEM=${SGLANG_MEM_FRACTION:-0.7}
  ENGINES=$((GPUS_PER_NODE / SGLANG_TP))
  PLACEMENT="colocated on node 0: GPUs 0-$((GPUS_PER_NODE - 1)) train and serve $ENGINES SGLang engine(s) of TP $SGLANG_TP (GPUs $(gpu_ranges 0 "$GPUS_PER_NODE" "$SGLANG_TP")), mem fraction $MEM; phases time-share the GPUs (--colocate: trainer state and teacher offloaded while generating, engines release weights + KV cache while training), weights by CUDA IPC"
  ROLLOUT_ARGS=(--rollout-backend sglang --sglang-num-engines "$ENGINES" --sglang-tp-size "$SGLANG_TP"
    --sglang-mem-fraction-static "$MEM" --colocate --anchor-cpu-offload)
fi
WORLD=$((TRAIN_NODES * TRAIN_GPUS))
[ $((WORLD % (TP * PP))) -eq 0 ] || die "training world size $WORLD ($TRAIN_NODES node(s) x $TRAIN_GPUS GPU(s)) is not divisible by TP*PP=$((TP * PP))"

need_model "$MODEL_PATH"
set_data_args DATA_DIR
if [ "$SKIP_CHECKS" != "1" ]; then
  command -v nvidia-smi > /dev/null 2>&1 || die "nvidia-smi not found: this launcher needs NVIDIA GPUs (CPU_TINY=1 runs the tiny CPU variant)"
  NGPU=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true)
  [ "$NGPU" -ge "$GPUS_PER_NODE" ] || die "GPUS_PER_NODE=$GPUS_PER_NODE but this node has $NGPU GPU(s)"
  command -v torchrun > /dev/null 2>&1 || die "torchrun not found on PATH (install torch)"
fi

if [ "$TRAIN_NODES" -gt 1 ]; then
  LAUNCH=(torchrun --nnodes "$TRAIN_NODES" --nproc_per_node "$TRAIN_GPUS" --rdzv-backend c10d
    --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$RDZV_ID")
else
  LAUNCH=(torchrun --standalone --nnodes 1 --nproc_per_node "$TRAIN_GPUS")
fi
CKPT_ARGS=(--save "$SAVE_DIR" --save-interval "$SAVE_INTERVAL")
if [ "$RESUME" = "auto" ] && [ -f "$SAVE_DIR/latest" ]; then
  echo "[launch] resuming from $SAVE_DIR (RESUME=0 starts afresh)"
  CKPT_ARGS+=(--load "$SAVE_DIR")
fi

CMD=("${LAUNCH[@]}" "$REPO/train_rl.py" --hf-checkpoint "$MODEL_PATH"
  --tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP"
  --bf16 --use-distributed-optimizer --recompute-granularity full
  "${DATA_ARGS[@]}"
  --reward-method "$METHOD" --global-batch-size "${GLOBAL_BATCH:-128}" --n-samples-per-prompt "${N_SAMPLES:-8}"
  --max-prompt-length "${PROMPT_LEN:-512}" --max-response-length "${RESPONSE_LEN:-3072}"
  --micro-batch-layout padded --micro-batch-size "$MICRO_BATCH" --max-tokens-per-micro-batch "$MAX_TOKENS_PER_MB"
  --lr "${LR:-3e-6}" --epochs "${EPOCHS:-3}" --rollout-temperature "${TEMPERATURE:-1.0}" --rollout-top-p 1.0
  --eval-interval "${EVAL_INTERVAL:-10}" --seed "${SEED:-1234}"
  "${METHOD_ARGS[@]}"
  --output-dir "$OUT" "${CKPT_ARGS[@]}" "${ROLLOUT_ARGS[@]}" "${EXTRA[@]}")
# one share of the node's cores per rank (oversubscribed threads make CPU-side work several times slower)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / GPUS_PER_NODE > 0 ? $(nproc) / GPUS_PER_NODE : 1 ))}
echo "[launch] method=$METHOD model=$MODEL ($MODEL_PATH) nodes=$TRAIN_NODES gpus/node=$TRAIN_GPUS TP=$TP PP=$PP DP=$((WORLD / (TP * PP))) OMP_NUM_THREADS=$OMP_NUM_THREADS"
echo "[launch] placement: $PLACEMENT"
echo "[launch] ${CMD[*]}"
if [ "$DRY_RUN" = "1" ]; then exit 0; fi
"${CMD[@]}"
