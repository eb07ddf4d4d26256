#!/usr/bin/env bash
# Prepare the wheels a GPU machine needs (Python 3.12, CUDA torch preinstalled, no internet):
# megatron-core and the small pure-Python packages this project imports, downloaded here into
# gpu_wheels/ (git-ignored) and carried to the device with the run tool's `carry: ["gpu_wheels"]`.
# On the device:  pip install --no-index --find-links gpu_wheels --no-deps gpu_wheels/*.whl && pip install --no-deps -e .
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${DEST:-gpu_wheels}
PY=${PY:-3.12}
mkdir -p "$DEST"
COMMON=(--no-deps --only-binary=:all: --python-version "$PY" --implementation cp --platform manylinux2014_x86_64
        --platform manylinux_2_28_x86_64 --platform any -d "$DEST")
pip download "${COMMON[@]}" "megatron-core==0.19.2"
# What benchmarks/gpu_train_step.py and the trainer import (the carry limit is 64 MiB: pyarrow,
# tensorboard and grpcio stay out unless FULL=1).
pip download "${COMMON[@]}" transformers tokenizers safetensors huggingface-hub hf-xet tqdm regex \
  pyyaml filelock fsspec packaging typing-extensions psutil typer click shellingham rich markdown-it-py \
  mdurl pygments httpx anyio h11 httpcore idna certifi sniffio
if [ "${FULL:-0}" = "1" ]; then
  pip download "${COMMON[@]}" pyarrow nltk tensorboard tensorboard-data-server protobuf grpcio absl-py markdown werkzeug joblib
fi
du -sh "$DEST"
ls "$DEST"
