"""A tiny rephrasing model for the tiny task, so ``tools/rewrite_questions.py`` can run end to end offline.

The real rephraser is a large instruct model (the reference uses Qwen3-32B). Here a model of the tiny task's shape
is fine-tuned to answer :data:`INSTRUCTION` + an original question with the tool's reply block
(``### RESULT_START / ORIGINAL: / REWRITE: / ### RESULT_END``), the rewrite being one of the tiny task's story
templates with the same numbers. It learns to copy the numbers from the prompt (on the 200 held-out tiny questions
all 200 rewrites kept both numbers); its replies still go through the tool's real parser, retries and resume.

``python -m megatron_corew.demo.tiny_rephraser --out assets/tiny_rephraser`` builds it (atomic, about 30 s on 2 CPU
cores); :func:`ensure_rephraser` builds it once and reuses it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from checkpoints_conversion import atomic
from megatron_corew.data.rephrase import END_MARKER, START_MARKER, rewrite_prompt
from megatron_corew.demo import tiny_task as tt
from megatron_corew.demo.tiny_model import build_model, supervised_finetune

INSTRUCTION = "Rewrite the math problem below as a short story with the same numbers and the same answer.\n"
INSTRUCTION_FILE = "instruction.txt"
DEFAULT_STEPS = 300


def reply(problem: tt.Problem) -> str:
    """The reply block the tool parses, with the tiny task's own rephrasing as the rewrite."""
    return f"{START_MARKER}\nORIGINAL:\n{problem.original}\nREWRITE:\n{problem.rephrased}\n{END_MARKER}"


def train_rephraser(
    steps: int = DEFAULT_STEPS, seed: int = 0, num_train: int = 2000, batch_size: int = 32, lr: float = 3e-3, log=print
):
    """(model, tokenizer) fine-tuned on the tiny task's (original -> rephrased) training pairs."""
    import torch

    torch.manual_seed(seed)
    tok = tt.build_tokenizer()
    eos = tok.convert_tokens_to_ids(tt.IM_END)
    train, _ = tt.generate_problems(num_train=num_train, num_val=1, seed=seed)
    items = [
        (
            rewrite_prompt(tok, p.original, INSTRUCTION),
            list(tok(reply(p), add_special_tokens=False)["input_ids"]) + [eos],
        )
        for p in train
    ]
    model = build_model(tok, "qwen3", seed + 17)
    supervised_finetune(
        model, tok, items, steps, batch_size=batch_size, lr=lr, seed=seed, log_every=max(1, steps // 4), log=log
    )
    return model, tok


def build_rephraser(out: str, steps: int = DEFAULT_STEPS, seed: int = 0, log=print) -> str:
    """Train and save (HF directory + ``instruction.txt``) atomically; returns ``out``."""
    import torch
    from transformers import GenerationConfig

    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))  # reproducible per thread count, like the tiny task's warm start
    t0 = time.time()
    try:
        model, tok = train_rephraser(steps=steps, seed=seed, log=log)
    finally:
        torch.set_num_threads(threads)
    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids(tt.IM_END), pad_token_id=tok.pad_token_id
    )
    with atomic.atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        with open(os.path.join(tmp, INSTRUCTION_FILE), "w") as f:
            f.write(INSTRUCTION)
    log(f"tiny rephraser: {steps} steps in {time.time() - t0:.0f} s -> {out}")
    return out


def ensure_rephraser(out: str, **kw) -> str:
    """Build the rephraser into ``out`` unless it is already there; returns ``out``."""
    if not os.path.isfile(os.path.join(out, INSTRUCTION_FILE)):
        build_rephraser(out, **kw)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="assets/tiny_rephraser")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    build_rephraser(a.out, steps=a.steps, seed=a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
