"""Packed vs padded vs transformers logits of one megatron GPTModel (local spec, fp32, one process), and the
gradient of the same loss in both layouts (tests/test_packed_attention.py).

Usage: tests/workers/packed_logits_worker.py --model DIR --out FILE
"""

import argparse
import json
import random

import torch

from megatron_corew.policy import parallel

PACKS = [[1, 7, 7, 3, 12, 1, 37, 2, 20, 19], [5, 5, 5, 1], [30], [1]]  # the last two: a pack of one sequence


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from checkpoints_conversion.config import load_model_args
    from megatron_corew.policy import model_builder, packing
    from megatron_corew.policy.weights import load_hf_weights

    torch.set_num_threads(1)
    parallel.init_distributed(1, 1)
    args = load_model_args(a.model)
    config = model_builder.build_transformer_config(args)
    model = model_builder.build_gpt_model(args, config, use_te=False)
    load_hf_weights(model, args, a.model)
    hf = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    vocab = args.vocab_size
    rng = random.Random(0)
    out = []
    for lengths in PACKS:
        seqs = [[rng.randrange(3, vocab) for _ in range(n)] for n in lengths]
        g = torch.Generator().manual_seed(len(out))
        weights = [torch.randn(n, vocab, generator=g) for n in lengths]  # a loss that reads every logit

        with torch.no_grad():
            ref = [hf(torch.tensor([s])).logits[0] for s in seqs]

        # packed: one row, THD boundaries
        layout = packing.pack_layout(lengths)
        model.zero_grad(set_to_none=True)
        tokens = torch.tensor([sum(seqs, [])])
        positions = torch.tensor([layout["positions"]])
        params = model_builder.packed_seq_params(layout["cu_seqlens"])
        logits = model(tokens, positions, None, packed_seq_params=params)[0, :, :vocab]
        packed = [logits[o : o + n] for o, n in zip(layout["offsets"], lengths)]
        sum((x * w).sum() for x, w in zip(packed, weights)).backward()
        grad_packed = {n: p.grad.clone() for n, p in model.named_parameters()}

        # padded: right-padded rows, plain causal attention
        model.zero_grad(set_to_none=True)
        width = max(lengths)
        tokens = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
        positions = torch.arange(width).unsqueeze(0).expand(len(seqs), -1)
        logits = model(tokens, positions, None)[:, :, :vocab]
        padded = [logits[i, :n] for i, n in enumerate(lengths)]
        sum((x * w).sum() for x, w in zip(padded, weights)).backward()
        grad_padded = {n: p.grad.clone() for n, p in model.named_parameters()}

        def gap(xs, ys):
            return max(float((x.detach() - y.detach()).abs().max()) for x, y in zip(xs, ys))

        out.append(
            {
                "lengths": lengths,
                "packed_vs_hf": gap(packed, ref),
                "padded_vs_hf": gap(padded, ref),
                "packed_vs_padded": gap(packed, padded),
                "grad_packed_vs_padded": gap(grad_packed.values(), grad_padded.values()),
                "grad_max": max(float(v.abs().max()) for v in grad_padded.values()),
                "grad_norm": float(torch.sqrt(sum((v.double() ** 2).sum() for v in grad_padded.values()))),
            }
        )
    with open(a.out, "w") as f:
        json.dump({"packs": out}, f, indent=1)


if __name__ == "__main__":
    main()
