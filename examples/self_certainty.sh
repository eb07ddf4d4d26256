#!/usr/bin/env bash
# Self-Certainty baseline (Intuitor): reward = mean KL(U || p) over response tokens; KL 0.005.
# Usage: MODEL=qwen3-8b-base MODEL_PATH=/models/Qwen3-8B-Base DATA_DIR=data/math bash examples/self_certainty.sh [train_rl.py flags]
# (every other knob, DRY_RUN=1 and CPU_TINY=1: see examples/launch.sh)
set -euo pipefail
METHOD=self_certainty exec bash "$(dirname "$0")/launch.sh" "$@"
