#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (H100/H200, Python 3.12, CUDA torch, no internet), run
# from the repository root through the device tool with carry ["gpu_wheels"] (made here first by
# `bash tools/gpu_wheelhouse.sh`). Each stage has its own time limit and a failing stage does not stop
# the next; everything lands in $OUT (default gpu_results/): session.log, gpu_train_step.json and
# the tiny run's metrics. Total under ~8 minutes so a second try fits the 15-minute device budget.
#   STAGES="env tiny bench packing" (default: all)   BENCH_ARGS="--shapes qwen2.5-1.5b"   TINY_STEPS=10
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
STAGES=${STAGES:-"env tiny bench packing"}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1

stage() { echo; echo "=== $1 ($(date -u +%H:%M:%S))"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }

if has env; then
  stage "environment"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  if [ -d gpu_wheels ]; then
    timeout 180 pip install -q --no-index --no-deps gpu_wheels/*.whl || echo "wheel install failed"
  fi
  timeout 120 pip install -q --no-deps --no-build-isolation -e . || echo "editable install failed"
  python - <<'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA")
for mod in ("megatron.core", "transformers", "transformer_engine", "apex", "flash_attn"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod}: {getattr(m, '__version__', 'ok')}")
    except Exception as e:  # noqa: BLE001
        print(f"{mod}: absent ({type(e).__name__})")
EOF
fi

if has tiny; then
  stage "tiny Co-rewarding-II run on the GPU (bf16 megatron step, embedded rollouts)"
  TINY_STEPS=${TINY_STEPS:-10}
  timeout 240 env STEPS="$TINY_STEPS" OUT="$OUT/tiny" VAL_SAMPLES=0 EXTRA_ARGS="--bf16" bash examples/run_tiny.sh \
    || echo "tiny run failed (rc $?)"
fi

if has bench; then
  stage "GRPO step benchmark: megatron vs transformers (bf16; FP8 rows when Transformer Engine is present)"
  # shellcheck disable=SC2086
  timeout 330 python benchmarks/gpu_train_step.py --json "$OUT/gpu_train_step.json" ${BENCH_ARGS:-} \
    || echo "benchmark failed or timed out (rc $?)"
fi
# ---------------------------------------------------------------- packing (issue 12)
# Packed micro-batches (Transformer Engine THD when TE is present) vs padded: GRPO step time of the Qwen2.5-1.5B
# shape (random init, bf16) on 32 long-tailed sequences (lognormal 16..2048 tokens), and the data-parallel token
# imbalance (max / mean) before and after balancing. About 2 minutes; its own time limits and results files
# ($OUT/packing_step.md, $OUT/packing_balance.md); a failure here is logged and the script goes on.
if has packing; then
  stage "packing (issue 12): packed (THD) vs padded step, Qwen2.5-1.5B shape, bf16"
  timeout 180 python benchmarks/bench_packing.py --only step --shape qwen2.5-1.5b --bf16 --samples 32 \
    --micro-batch-size 4 --max-tokens-per-gpu 16384 --steps 2 --warmup 1 --out "$OUT/packing_step.md" \
    || echo "packing step benchmark failed or timed out (rc $?)"
  timeout 60 python benchmarks/bench_packing.py --only balance --out "$OUT/packing_balance.md" \
    || echo "packing balance table failed (rc $?)"
fi
# ---------------------------------------------------------------- end of packing (issue 12)
stage "done"
