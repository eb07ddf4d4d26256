#!/usr/bin/env bash
# Co-rewarding-III: the EMA teacher (alpha 0.01 -> 1e-5) answers both views; its vote on each view labels the other; KL 0.001 to the teacher.
# Usage: MODEL=qwen3-8b-base MODEL_PATH=/models/Qwen3-8B-Base DATA_DIR=data/math bash examples/corewarding_3.sh [train_rl.py flags]
# (every other knob, DRY_RUN=1 and CPU_TINY=1: see examples/launch.sh)
set -euo pipefail
METHOD=corewarding_3 exec bash "$(dirname "$0")/launch.sh" "$@"
