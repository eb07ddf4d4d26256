"""Megatron pretrain-style entry point: ``torchrun --nproc_per_node N train_rl.py --hf-checkpoint DIR ...``

Exit codes: 0 done, 2 bad input (one line naming the file, row or flag), 3 stopped on a non-finite update.
"""

import json
import os
import sys


def main(argv=None) -> int:
    from checkpoints_conversion.config import ModelConfigError
    from checkpoints_conversion.hf_io import CheckpointError
    from megatron_corew.arguments import parse_args
    from megatron_corew.data import DataError
    from megatron_corew.policy import parallel
    from megatron_corew.train import RLRun

    args = parse_args(argv)
    try:
        run = RLRun(args)
    except (ModelConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    try:
        result = run.run()
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 3
    if parallel.is_rank0():
        with open(os.path.join(args.output_dir, "result.json"), "w") as f:
            json.dump(result, f)
    parallel.destroy_distributed()
    return 0


def cli() -> None:
    """Console entry point (``corew-train``)."""
    sys.exit(main())


if __name__ == "__main__":  # dist-checkpoint workers re-import __main__: keep this guard
    sys.exit(main())
