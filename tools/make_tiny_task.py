#!/usr/bin/env python
"""Build the bundled tiny task: arithmetic parquet files (original + rephrased), an offline tokenizer and a tiny
HF causal LM with a short supervised warm start (partially competent, so RL has something to improve).

    python tools/make_tiny_task.py                      # -> assets/tiny/{data,model,metrics.json}
    python tools/make_tiny_task.py --arch llama --out assets/tiny-llama --force

Offline and deterministic (fixed seed, fixed step count, deterministic torch algorithms, fixed thread count).
The library code lives in megatron_corew/demo/ (tiny_task.py, tiny_model.py, tiny_bundle.py).
"""

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    from megatron_corew.demo import tiny_model
    from megatron_corew.demo.tiny_bundle import make_tiny_task
    from megatron_corew.demo.tiny_task import MAX_OPERAND

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="assets/tiny", help="output directory (default: %(default)s)")
    p.add_argument("--arch", choices=sorted(tiny_model.ARCHS), default="qwen3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sft-steps",
        type=int,
        default=tiny_model.DEFAULT_SFT_STEPS,
        help="supervised warm-start steps (fixed; default %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--max-operand", type=int, default=MAX_OPERAND)
    p.add_argument(
        "--terse-prob",
        type=float,
        default=tiny_model.DEFAULT_TERSE_PROB,
        help="share of warm-start targets answered without \\boxed{} for the questions that open with one "
        "of tiny_task.TERSE_OPENINGS (format noise a self-supervised reward can fix)",
    )
    p.add_argument("--num-samples", type=int, default=8, help="samples per val question for the mixed-answer metric")
    p.add_argument("--threads", type=int, default=2, help="torch threads (results are reproducible per thread count)")
    p.add_argument("--force", action="store_true", help="rebuild even if OUT already holds the bundle")
    args = p.parse_args(argv)

    t0 = time.time()
    m = make_tiny_task(
        out=args.out,
        arch=args.arch,
        seed=args.seed,
        sft_steps=args.sft_steps,
        force=args.force,
        num_train=args.num_train,
        num_val=args.num_val,
        batch_size=args.batch_size,
        lr=args.lr,
        num_samples=args.num_samples,
        max_operand=args.max_operand,
        threads=args.threads,
        terse_prob=args.terse_prob,
    )
    if m is None:
        return 0
    print(f"greedy val accuracy: original {m['greedy_acc_original']:.3f}, rephrased {m['greedy_acc_rephrased']:.3f}")
    print(
        f"sampled (T=1.0, {m['num_samples']}/question) accuracy: original {m['sample_acc_original']:.3f}, "
        f"rephrased {m['sample_acc_rephrased']:.3f}"
    )
    print(
        f"val questions with mixed right/wrong samples: original {m['mixed_frac_original']:.3f}, "
        f"rephrased {m['mixed_frac_rephrased']:.3f}"
    )
    print(
        f"model {m['num_params']} params, vocab {m['vocab_size']}; sft {m['sft_seconds']:.1f}s, "
        f"eval {m['eval_seconds']:.1f}s; wrote {os.path.abspath(args.out)} in {time.time() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
