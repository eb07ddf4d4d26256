#!/usr/bin/env bash
# The one prepared script for a GPU machine (H100/H200, Python 3.12, CUDA torch, no internet), run
# from the repository root through the device tool with carry ["gpu_wheels"] (made here first by
# `bash tools/gpu_wheelhouse.sh`). Each stage has its own time limit and a failing stage does not stop
# the next; everything lands in $OUT (default gpu_results/): session.log, gpu_train_step.json and
# the tiny run's metrics.
#   STAGES="env tiny bench packing colocate wsync" (default; also: async)   BENCH_ARGS="--shapes qwen2.5-1.5b"
#   TINY_STEPS=10. The default stages' own time limits add up to more than one try: a first session runs the
#   default with the device tool's timeout_s ~540 (what did not finish is in session.log), a rerun picks the rest
#   by STAGES=...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
STAGES=${STAGES:-"env tiny bench packing colocate wsync"}
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
# ============================================================ colocate
# A colocated 2-step Co-rewarding-II run of the Qwen2.5-1.5B shape (random bf16 weights, the tiny task's
# tokenizer and prompts) on this GPU with --colocate: an SGLang engine on the trainer's GPU when SGLang and
# torch_memory_saver are installed (release/resume by tag exercised around the train phase), else the embedded
# engine (then only the trainer offload runs, and the summary says so). Device memory before/after each phase
# (mem/*) and perf/* of both steps: $OUT/colocate.json; the run's log: $OUT/colocate.log. Model and run dir stay
# in /tmp (too big to come back). Own time limits; a failure does not stop the next section.
# CPU rehearsal: STAGES=colocate COLOCATE_SHAPE=tiny OUT=/tmp/gs bash tools/gpu_session.sh
if has colocate; then
  stage "colocate: colocated 2-step run, ${COLOCATE_SHAPE:-qwen2.5-1.5b} shape"
  (
    set -e
    CO=${TMPDIR:-/tmp}/corew_colocate
    rm -rf "$CO" && mkdir -p "$CO"
    timeout 180 python - "$CO" <<'EOF'
import json, os, sys
import torch
sys.path[:0] = ["tests", "benchmarks"]
from helpers import make_tiny_bundle
from gpu_train_step import write_config
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
root = sys.argv[1]
bundle = make_tiny_bundle(os.path.join(root, "tiny"), num_train=16, num_val=4)
model_dir = write_config(os.environ.get("COLOCATE_SHAPE", "qwen2.5-1.5b"), root)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), torch_dtype=torch.bfloat16)
model.save_pretrained(model_dir)
AutoTokenizer.from_pretrained(bundle["model"]).save_pretrained(model_dir)
json.dump({"model": model_dir, "train": bundle["train"]}, open(os.path.join(root, "inputs.json"), "w"))
EOF
    MODEL_DIR=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['model'])" "$CO/inputs.json")
    TRAIN=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['train'])" "$CO/inputs.json")
    if python -c "import sglang, torch_memory_saver" 2> /dev/null; then
      BACKEND=sglang
      ROLL=(--rollout-backend sglang --sglang-mem-fraction-static 0.4 --sglang-dtype bfloat16)
    else
      BACKEND=embedded
      ROLL=(--rollout-backend embedded)
      echo "SGLang or torch_memory_saver is not installed here: embedded engine; SGLang release/resume NOT exercised"
    fi
    rc=0
    timeout 360 python train_rl.py --hf-checkpoint "$MODEL_DIR" --train-data "$TRAIN" --reward-method corewarding_2 \
      --bf16 --global-batch-size 4 --n-samples-per-prompt 4 --max-response-length 64 --train-iters 2 \
      --eval-interval 0 --no-progress-bar --output-dir "$CO/run" --overwrite --colocate --anchor-cpu-offload \
      "${ROLL[@]}" > "$OUT/colocate.log" 2>&1 || rc=$?
    python - "$CO/run/metrics.jsonl" "$OUT/colocate.json" "$BACKEND" "$rc" <<'EOF'
import json, os, sys
import torch
src, dst, backend, rc = sys.argv[1:]
rows = [json.loads(line) for line in open(src)] if os.path.exists(src) else []
keep = [{k: v for k, v in r.items() if k.startswith(("mem/", "perf/", "train/loss", "step"))} for r in rows]
out = {"backend": backend, "sglang_release_resume_exercised": backend == "sglang" and rc == "0", "rc": int(rc),
       "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "steps": keep}
json.dump(out, open(dst, "w"), indent=1)
for r in keep:
    print({k: (round(v / 2**30, 2) if k.startswith("mem/") else round(v, 4)) for k, v in r.items()
           if k.startswith("mem/") or k in ("perf/train_mfu", "perf/tokens_per_s_per_gpu", "perf/time_step")})
EOF
    tail -5 "$OUT/colocate.log"
    [ "$rc" = 0 ] || echo "colocated run failed (rc $rc): see $OUT/colocate.log"
  ) || echo "colocate section failed (rc $?)"
fi
# ============================================================ end colocate

# ---- async ------------------------------------------------------------------------------------
# Rollout pipelining step times on the GPU: Co-rewarding-II synchronous vs --async-rollout vs + --teacher-prefetch
# (embedded engines: the wheelhouse has no SGLang). Not in the default STAGES: run with STAGES="env async".
if has async; then
  stage "async rollout pipelining: sync vs async vs async + teacher prefetch (Co-rewarding-II, embedded on cuda)"
  timeout 300 python benchmarks/bench_async.py --backend embedded --steps ${ASYNC_STEPS:-6} \
    --max-response-length ${ASYNC_RESPONSE_LENGTH:-128} --timeout 90 --out "$OUT/async_gpu.md" \
    || echo "async benchmark failed or timed out (rc $?)"
fi
# ---- end async --------------------------------------------------------------------------------
# ---------------------------------------------------------------- weight sync -- begin
# Funnel vs sharded weight sync for the Qwen2.5-1.5B shape (random init) into a bf16 engine; PP=2 needs two GPUs
# (two NCCL ranks cannot share one), so one GPU measures PP=1 (cast, delta, CUDA IPC). Real SGLang when installed,
# otherwise the fake receiving endpoint of tests/sglang_stubs.py (the results file says which).
if has wsync; then
  stage "weight sync: funnel vs sharded, qwen2.5-1.5b shape (benchmarks/bench_weight_sync.py)"
  NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
  WSYNC_PP=$([ "${NGPU:-1}" -ge 2 ] && echo 2 || echo 1)
  timeout 300 python benchmarks/bench_weight_sync.py --shape qwen2.5-1.5b --pp "$WSYNC_PP" \
    --work-dir "$OUT/wsync_work" --results "$OUT/weight_sync_gpu.md" --json "$OUT/weight_sync_gpu.json" \
    || echo "weight-sync benchmark failed or timed out (rc $?)"
  rm -rf "$OUT/wsync_work"  # the random 1.5B checkpoint: not worth bringing back
fi
# ---------------------------------------------------------------- weight sync -- end
# ---------------------------------------------------------------- packing
# Packed micro-batches (Transformer Engine THD when TE is present) vs padded: GRPO step time of the Qwen2.5-1.5B
# shape (random init, bf16) on 32 long-tailed sequences (lognormal 16..2048 tokens), and the data-parallel token
# imbalance (max / mean) before and after balancing. About 2 minutes; its own time limits and results files
# ($OUT/packing_step.md, $OUT/packing_balance.md); a failure here is logged and the script goes on.
if has packing; then
  stage "packing: packed (THD) vs padded step, Qwen2.5-1.5B shape, bf16"
  timeout 180 python benchmarks/bench_packing.py --only step --shape qwen2.5-1.5b --bf16 --samples 32 \
    --micro-batch-size 4 --max-tokens-per-gpu 16384 --steps 2 --warmup 1 --out "$OUT/packing_step.md" \
    || echo "packing step benchmark failed or timed out (rc $?)"
  timeout 60 python benchmarks/bench_packing.py --only balance --out "$OUT/packing_balance.md" \
    || echo "packing balance table failed (rc $?)"
fi
# ---------------------------------------------------------------- end of packing
stage "done"
