"""Convert an HF checkpoint (Qwen2/2.5, Qwen3, Llama-3.x; safetensors) into a Megatron distributed
checkpoint (torch_dist) that loads at any tensor/pipeline-parallel layout.

    python tools/convert_hf_to_megatron.py --hf-dir DIR --save OUT \\
        [--target-tensor-parallel-size N] [--target-pipeline-parallel-size M] [--dtype bf16]

OUT holds the dist checkpoint (metadata.json, .metadata, *.distcp, common.pt), ``model_args.json``
(the architecture the checkpoint implies; the back-conversion and the trainer check against it) and
``hf_config/`` (config, generation config, tokenizer). The HF config, the requested layout (heads,
KV heads and FFN divisible by TP, layers by PP) and every tensor name and shape are checked before
anything is written; OUT appears only when complete. Memory stays at a few tensors: the model is
never materialised.
"""

from __future__ import annotations

import argparse
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--hf-dir", required=True, help="HF model directory (config.json + safetensors)")
    p.add_argument("--save", required=True, help="output directory of the Megatron checkpoint")
    p.add_argument(
        "--target-tensor-parallel-size",
        type=int,
        default=1,
        help="TP the checkpoint is meant for: checked against the heads, sets the vocab padding",
    )
    p.add_argument(
        "--target-pipeline-parallel-size",
        type=int,
        default=1,
        help="PP the checkpoint is meant for: checked against the number of layers",
    )
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="dtype of the stored weights (auto: as in the HF checkpoint)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --save if it exists")
    p.add_argument("--no-progress-bar", action="store_true")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from megatron_corew.validation import FlagError, check_writable

    try:  # a file (or a path under one) is refused now, not after the conversion with a traceback
        check_writable("--save", a.save)
    except FlagError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    from megatron_corew.policy import cpu_compat

    cpu_compat.apply()  # before megatron's first import; a no-op where CUDA exists
    from checkpoints_conversion import api

    t0 = time.perf_counter()
    try:
        rec = api.hf_to_megatron(
            a.hf_dir,
            a.save,
            a.target_tensor_parallel_size,
            a.target_pipeline_parallel_size,
            a.dtype,
            a.overwrite,
            not a.no_progress_bar,
        )
    except api.CONVERSION_ERRORS as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(
        f"wrote {a.save}: {rec['architecture']} {rec['num_layers']} layers, hidden {rec['hidden_size']}, "
        f"vocab {rec['vocab_size']} (padded {rec['padded_vocab_size']}), {rec['dtype']}, "
        f"for TP={rec['target_tensor_parallel_size']} PP={rec['target_pipeline_parallel_size']} "
        f"in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
