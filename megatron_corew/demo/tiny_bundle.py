"""The tiny-task bundle on disk: data, warm-started model and metrics, built in one atomic step.

Layout written by :func:`make_tiny_task` (default ``assets/tiny``)::

    data/train.parquet            original phrasing, verl schema (docs/ALGORITHMS.md section 4)
    data/train_rephrased.parquet  row i = a rephrasing of train row i (same ground truth, same extra_info.index)
    data/val.parquet              held-out questions, original phrasing
    data/val_rephrased.parquet    row i = a rephrasing of val row i
    model/                        HF model + tokenizer + generation_config (save_pretrained)
    metrics.json                  warm-start metrics, sizes, settings
"""

from __future__ import annotations

import json
import os
import time

from checkpoints_conversion import atomic
from megatron_corew.data.prompts import chat_messages, prompt_ids
from megatron_corew.demo.tiny_model import DEFAULT_SFT_STEPS, DEFAULT_TERSE_PROB, build_model, evaluate, sft_warm_start
from megatron_corew.demo.tiny_task import (
    IM_END,
    MAX_OPERAND,
    build_tokenizer,
    generate_problems,
    verl_rows,
    write_parquet,
)

BUNDLE_ENTRIES = ("data", "model", "metrics.json")


def is_complete(out: str) -> bool:
    """``out`` holds a whole bundle (data files, tokenizer, config and weights)."""
    need = [
        "model/config.json",
        "model/tokenizer.json",
        "data/train.parquet",
        "data/train_rephrased.parquet",
        "data/val.parquet",
        "data/val_rephrased.parquet",
    ]
    return all(os.path.exists(os.path.join(out, n)) for n in need) and any(
        f.endswith((".safetensors", ".bin")) for f in os.listdir(os.path.join(out, "model"))
    )


def make_tiny_task(
    out: str = "assets/tiny",
    arch: str = "qwen3",
    seed: int = 0,
    sft_steps: int = DEFAULT_SFT_STEPS,
    force: bool = False,
    num_train: int = 2000,
    num_val: int = 200,
    batch_size: int = 64,
    lr: float = 3e-3,
    num_samples: int = 8,
    max_operand: int = MAX_OPERAND,
    threads: int | None = 2,
    deterministic: bool = True,
    terse_prob: float = DEFAULT_TERSE_PROB,
    log=print,
) -> dict | None:
    """Build the whole bundle in a temp dir beside ``out`` and publish it with a rename. Returns the metrics dict,
    or None when ``out`` is already complete and ``force`` is False.

    Bit-reproducible for a fixed (seed, arch, sft_steps, threads) on the same torch build."""
    import torch

    out = os.path.abspath(out)
    if os.path.isdir(out) and is_complete(out) and not force:
        log(f"{out} already holds the tiny task (use --force to rebuild); skipping")
        return None
    if os.path.exists(out):
        stray = sorted(set(os.listdir(out)) - set(BUNDLE_ENTRIES)) if os.path.isdir(out) else [out]
        if stray:  # never replace a directory that holds anything but a previous bundle
            raise FileExistsError(
                f"refusing to replace {out}: it holds files that are not part of the tiny-task bundle ({stray[:5]})"
            )
    t0 = time.time()
    prev_det, prev_threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        with atomic.atomic_dir(out) as tmp:
            metrics = _build_bundle(
                tmp,
                arch,
                seed,
                sft_steps,
                num_train,
                num_val,
                batch_size,
                lr,
                num_samples,
                max_operand,
                terse_prob,
                log,
            )
            metrics["total_seconds"] = round(time.time() - t0, 2)
            with open(os.path.join(tmp, "metrics.json"), "w") as f:
                json.dump(metrics, f, indent=2, sort_keys=True)
            _umask_permissions(tmp)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
    return metrics


def _umask_permissions(root: str) -> None:
    """safetensors writes 0600 files (and temp dirs are 0700): give the whole bundle ordinary permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for d, dirs, files in os.walk(root):
        for n in dirs:
            os.chmod(os.path.join(d, n), 0o777 & ~umask)
        for n in files:
            os.chmod(os.path.join(d, n), 0o666 & ~umask)


def _build_bundle(
    tmp, arch, seed, sft_steps, num_train, num_val, batch_size, lr, num_samples, max_operand, terse_prob, log
):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch.manual_seed(seed)
    train, val = generate_problems(num_train, num_val, seed, max_operand=max_operand)
    for split, probs in (("train", train), ("val", val)):
        write_parquet(verl_rows(probs, split, "original"), os.path.join(tmp, "data", f"{split}.parquet"))
        write_parquet(verl_rows(probs, split, "rephrased"), os.path.join(tmp, "data", f"{split}_rephrased.parquet"))
    tok = build_tokenizer()
    model = build_model(tok, arch, seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"data: {len(train)} train / {len(val)} val pairs (operands 1..{max_operand}); tokenizer vocab {len(tok)}; "
        f"{arch} model {n_params / 1e6:.3f}M params; {torch.get_num_threads()} threads"
    )
    t = time.time()
    losses = sft_warm_start(
        model,
        tok,
        train,
        sft_steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        log_every=max(1, sft_steps // 5),
        log=log,
        terse_prob=terse_prob,
    )
    t_sft = time.time() - t
    t = time.time()
    metrics = evaluate(model, tok, val, num_samples=num_samples, seed=seed)
    t_eval = time.time() - t
    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids(IM_END), pad_token_id=tok.pad_token_id
    )
    mdir = os.path.join(tmp, "model")
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    # the saved bundle must load offline with the Auto classes and reproduce the in-memory model
    tok2 = AutoTokenizer.from_pretrained(mdir)
    model2 = AutoModelForCausalLM.from_pretrained(mdir).eval()
    probe = prompt_ids(tok2, chat_messages(val[0].original))
    if probe != prompt_ids(tok, chat_messages(val[0].original)):
        raise RuntimeError("reloaded tokenizer encodes differently")
    with torch.no_grad():
        x = torch.tensor([probe])
        if not torch.allclose(model(input_ids=x).logits, model2(input_ids=x).logits, atol=1e-5):
            raise RuntimeError("reloaded model differs from the trained one")
    metrics.update(
        arch=arch,
        seed=seed,
        sft_steps=sft_steps,
        terse_prob=terse_prob,
        batch_size=batch_size,
        lr=lr,
        max_operand=max_operand,
        final_sft_loss=round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4) if losses else None,
        num_params=n_params,
        vocab_size=len(tok),
        num_train=len(train),
        num_val=len(val),
        num_samples=num_samples,
        sft_seconds=round(t_sft, 2),
        eval_seconds=round(t_eval, 2),
        torch_version=torch.__version__,
        num_threads=torch.get_num_threads(),
    )
    return metrics
