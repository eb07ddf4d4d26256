#!/usr/bin/env bash
# control: a seeded Bernoulli(--random-reward-p, default 0.5) reward per rollout, independent of the text.
# Usage: MODEL=qwen3-8b-base MODEL_PATH=/models/Qwen3-8B-Base DATA_DIR=data/math bash examples/random_reward.sh [train_rl.py flags]
# (every other knob, DRY_RUN=1 and CPU_TINY=1: see examples/launch.sh)
set -euo pipefail
METHOD=random_reward exec bash "$(dirname "$0")/launch.sh" "$@"
