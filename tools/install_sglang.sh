#!/usr/bin/env bash
# Install SGLang (CPU serving) into its own virtual environment, .venv-sglang/ at the repo root,
# without touching the main environment.
#
#   bash tools/install_sglang.sh            # -> .venv-sglang/bin/python -m sglang.launch_server ...
#   SGLANG_VENV=/path/to/venv bash tools/install_sglang.sh
#
# The venv sees the main interpreter's site-packages (--system-site-packages), so it reuses the
# installed torch 2.13.0+cpu and transformers instead of letting sglang's pins pull torch 2.14.1
# plus several GB of CUDA libraries. sglang is installed with --no-deps, then the short list of
# packages it imports on CPU (requirements-sglang.txt), with torch pinned so nothing can replace it.
# SGLang imports sgl_kernel and torchvision at start-up; their PyPI wheels are CUDA builds (or replace torch with
# one), so on a CPU-only torch this script writes import stubs (tests/sglang_stubs.py) to $VENV/cpu_stubs, which
# the launcher puts on the PYTHONPATH of CPU servers run by $VENV/bin/python.
# Idempotent: a venv whose sglang already imports is left alone. Takes about 1-2 minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SGLANG_VENV:-$ROOT/.venv-sglang}"
PY="${PYTHON:-python3}"
SGLANG_VERSION="${SGLANG_VERSION:-0.5.23}"

TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')" || {
    echo "install_sglang.sh: the main interpreter ($PY) has no torch; install the main requirements first" >&2
    exit 1
}

write_cpu_stubs() {  # CPU-only torch: the server imports sgl_kernel/torchvision stubs (VENV/cpu_stubs)
    if "$VENV/bin/python" -c 'import sys, torch; sys.exit(0 if torch.version.cuda is None else 1)'; then
        "$VENV/bin/python" "$ROOT/tests/sglang_stubs.py" "$VENV/cpu_stubs" >/dev/null
        echo "CPU import stubs for sgl_kernel and torchvision in $VENV/cpu_stubs"
    fi
}

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import sglang, triton, fastapi, zmq" 2>/dev/null \
        && [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("sglang"))')" = "$SGLANG_VERSION" ]; then
    echo "sglang $SGLANG_VERSION already installed in $VENV"
    write_cpu_stubs
    exit 0
fi

"$PY" -m venv --system-site-packages "$VENV"
VPIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${VPIP[@]}" install --no-deps "sglang==$SGLANG_VERSION"
"${VPIP[@]}" install "torch==$TORCH_VERSION" -r "$ROOT/requirements-sglang.txt"
# the router that spreads /generate over several engines (optional; a prebuilt wheel)
"${VPIP[@]}" install "sglang-router==0.3.2" || echo "install_sglang.sh: sglang-router not installed (multi-engine falls back to client-side round robin)" >&2

"$VENV/bin/python" - <<'PYEOF'
import importlib.metadata as m
import torch
print("sglang", m.version("sglang"), "| torch", torch.__version__, "| transformers", m.version("transformers"),
      "| triton", m.version("triton"))
assert "+cpu" in torch.__version__ or not torch.version.cuda, "install_sglang.sh replaced torch with a CUDA build"
PYEOF
write_cpu_stubs
