#!/usr/bin/env bash
# Co-rewarding-I: crossed majority-vote labels between each question and its rephrasing; KL 0.005. Needs DATA_DIR/train_rephrased.parquet.
# Usage: MODEL=qwen3-8b-base MODEL_PATH=/models/Qwen3-8B-Base DATA_DIR=data/math bash examples/corewarding_1.sh [train_rl.py flags]
# (every other knob, DRY_RUN=1 and CPU_TINY=1: see examples/launch.sh)
set -euo pipefail
METHOD=corewarding_1 exec bash "$(dirname "$0")/launch.sh" "$@"
