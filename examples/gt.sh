#!/usr/bin/env bash
# GT-GRPO (RLVR baseline): reward 1 when the answer matches the dataset ground truth; KL 0.005 to the initial model.
# Usage: MODEL=qwen3-8b-base MODEL_PATH=/models/Qwen3-8B-Base DATA_DIR=data/math bash examples/gt.sh [train_rl.py flags]
# (every other knob, DRY_RUN=1 and CPU_TINY=1: see examples/launch.sh)
set -euo pipefail
METHOD=gt exec bash "$(dirname "$0")/launch.sh" "$@"
