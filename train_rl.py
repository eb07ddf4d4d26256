"""Megatron pretrain-style entry point: ``torchrun --nproc_per_node N train_rl.py --hf-checkpoint DIR ...``"""
import sys

from megatron_corew.train import main

if __name__ == "__main__":  # dist-checkpoint workers re-import __main__: keep this guard
    sys.exit(main())
