#!/usr/bin/env bash
# Self-Harmony: the policy rewrites each question online; the label maximises the harmonic mean of its frequencies over both views.
# Usage: MODEL=qwen3-8b-base MODEL_PATH=/models/Qwen3-8B-Base DATA_DIR=data/math bash examples/self_harmony.sh [train_rl.py flags]
# (every other knob, DRY_RUN=1 and CPU_TINY=1: see examples/launch.sh)
set -euo pipefail
METHOD=self_harmony exec bash "$(dirname "$0")/launch.sh" "$@"
