#!/usr/bin/env bash
# Majority-Voting baseline (TTRL/SRT style): pseudo-label = majority of the policy's own G answers; KL 0.005.
# Usage: MODEL=qwen3-8b-base MODEL_PATH=/models/Qwen3-8B-Base DATA_DIR=data/math bash examples/majority_vote.sh [train_rl.py flags]
# (every other knob, DRY_RUN=1 and CPU_TINY=1: see examples/launch.sh)
set -euo pipefail
METHOD=majority_vote exec bash "$(dirname "$0")/launch.sh" "$@"
