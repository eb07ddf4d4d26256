#!/usr/bin/env bash
# EMPO: reward = the probability mass of the rollout's answer cluster (equivalence clusters).
# Usage: MODEL=qwen3-8b-base MODEL_PATH=/models/Qwen3-8B-Base DATA_DIR=data/math bash examples/semantic_entropy.sh [train_rl.py flags]
# (every other knob, DRY_RUN=1 and CPU_TINY=1: see examples/launch.sh)
set -euo pipefail
METHOD=semantic_entropy exec bash "$(dirname "$0")/launch.sh" "$@"
