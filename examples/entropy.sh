#!/usr/bin/env bash
# Entropy baseline (RENT): reward = minus the mean token entropy; KL 0.005.
# Usage: MODEL=qwen3-8b-base MODEL_PATH=/models/Qwen3-8B-Base DATA_DIR=data/math bash examples/entropy.sh [train_rl.py flags]
# (every other knob, DRY_RUN=1 and CPU_TINY=1: see examples/launch.sh)
set -euo pipefail
METHOD=entropy exec bash "$(dirname "$0")/launch.sh" "$@"
