"""GRPO training-step throughput and MFU: megatron_corew vs a plain transformers step, same shape.

  python benchmarks/gpu_train_step.py                      # GPU: Qwen2.5-0.5B, Qwen2.5-1.5B, Qwen3-1.7B, bf16 (+FP8 with TE)
  python benchmarks/gpu_train_step.py --shapes qwen2.5-1.5b --seq-len 2048 --micro-batch-size 4
  python benchmarks/gpu_train_step.py --cpu-smoke          # CI: a tiny shape in fp32 on the CPU

Models are randomly initialised from the real configs (written here); each implementation runs
``--warmup`` untimed and ``--steps`` timed GRPO steps on the same synthetic rollouts (random
prompt+response tokens, random advantages) and one log-prob pass. MFU = analytic training FLOPs /
step time / the card's *measured* dense matmul peak in the same dtype (a large GEMM timed here),
and against the datasheet number where the card is known.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {
    "qwen2.5-0.5b": dict(
        model_type="qwen2",
        architectures=["Qwen2ForCausalLM"],
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=151936,
        tie_word_embeddings=True,
        rope_theta=1000000.0,
    ),
    "qwen2.5-1.5b": dict(
        model_type="qwen2",
        architectures=["Qwen2ForCausalLM"],
        hidden_size=1536,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        intermediate_size=8960,
        vocab_size=151936,
        tie_word_embeddings=True,
        rope_theta=1000000.0,
    ),
    "qwen3-1.7b": dict(
        model_type="qwen3",
        architectures=["Qwen3ForCausalLM"],
        hidden_size=2048,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=6144,
        vocab_size=151936,
        tie_word_embeddings=True,
        rope_theta=1000000.0,
    ),
    "tiny": dict(
        model_type="qwen3",
        architectures=["Qwen3ForCausalLM"],
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        vocab_size=512,
        tie_word_embeddings=False,
        rope_theta=10000.0,
    ),
}
DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def write_config(shape: str, root: str) -> str:
    cfg = dict(SHAPES[shape])
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    cfg.update(
        hidden_act="silu",
        rms_norm_eps=1e-6,
        max_position_embeddings=32768,
        eos_token_id=2,
        bos_token_id=1,
        torch_dtype="bfloat16",
        use_sliding_window=False,
    )
    d = os.path.join(root, shape)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    return d


def train_flops_per_step(shape: str, tokens: int, seq_len: int) -> float:
    """6 x (matmul params) per token + causal attention 6 x layers x seq x (heads*head_dim) per token."""
    c = dict(SHAPES[shape])
    h, layers, heads = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"]
    hd = c.get("head_dim", h // heads)
    kv = c["num_key_value_heads"]
    per_layer = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * c["intermediate_size"]
    matmul_params = layers * per_layer + c["vocab_size"] * h  # lm head (tied or not, it is a matmul)
    attention = 6 * layers * seq_len * heads * hd / 2 * 2  # QK^T and AV, causal half, fwd+bwd (x3 of 2 flops)
    return tokens * (6 * matmul_params + attention)


def measured_peak_tflops(dtype, device) -> float:
    import torch

    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 5
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_samples(vocab: int, n_seqs: int, seq_len: int, seed: int = 0):
    import torch

    from megatron_corew.policy.trainer import TrainSample

    g = torch.Generator().manual_seed(seed)
    prompt_len = seq_len // 4
    out = []
    for _ in range(n_seqs):
        ids = torch.randint(3, vocab, (seq_len,), generator=g).tolist()
        out.append(TrainSample(ids[:prompt_len], ids[prompt_len:], advantage=float(torch.randn((), generator=g))))
    return out


def bench_megatron(model_dir, samples, args, bf16, fp8, device):
    import torch

    from checkpoints_conversion.config import load_model_args
    from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig

    margs = load_model_args(model_dir)
    trainer = PolicyTrainer(
        margs,
        TrainerConfig(
            micro_batch_size=args.micro_batch_size,
            lr=1e-6,
            train_iters=1000,
            lr_warmup_fraction=0.0,
            bf16=bf16,
            fp8=fp8,
            fp8_recipe=args.fp8_recipe if fp8 else None,
            need_anchor=False,
            recompute=args.recompute,
            use_distributed_optimizer=False,
        ),
        hf_source=False,
    )
    for _ in range(args.warmup):
        trainer.train_step(samples)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step(samples)
    sync(device)
    step = (time.perf_counter() - t0) / args.steps
    t1 = time.perf_counter()
    trainer.sequence_stats(samples)
    sync(device)
    logprob = time.perf_counter() - t1
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    del trainer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return step, logprob, peak


def bench_transformers(model_dir, samples, args, bf16, device):
    """The plain PyTorch reference: transformers model, AdamW, same loss on the same micro-batches."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dtype = torch.bfloat16 if bf16 else torch.float32
    cfg = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa").to(device)
    if args.recompute:
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=device.type == "cuda")
    n_tokens = sum(len(s.response_ids) for s in samples)
    mbs = [samples[i : i + args.micro_batch_size] for i in range(0, len(samples), args.micro_batch_size)]

    def step():
        opt.zero_grad(set_to_none=True)
        for mb in mbs:
            ids = torch.tensor([s.prompt_ids + s.response_ids for s in mb], device=device)
            logits = model(ids).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            p = len(mb[0].prompt_ids) - 1
            adv = torch.tensor([s.advantage for s in mb], device=device).unsqueeze(-1)
            loss = (-adv * logp[:, p:]).sum() / n_tokens
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    elapsed = (time.perf_counter() - t0) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    model = opt = None  # frees them: step() closes over these cells
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return elapsed, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="qwen2.5-0.5b,qwen2.5-1.5b,qwen3-1.7b")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch-size", type=int, default=4)
    ap.add_argument("--num-micro-batches", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--recompute", choices=["full", "selective"], default=None)
    ap.add_argument("--fp8-recipe", default="delayed")
    ap.add_argument("--no-fp8", action="store_true")
    ap.add_argument("--no-reference", action="store_true", help="skip the transformers baseline")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shape, fp32, CPU: checks the script runs")
    ap.add_argument("--smoke-bf16", action="store_true", help="with --cpu-smoke: the bf16 code path on the CPU")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()

    import torch

    from megatron_corew.policy import parallel
    from megatron_corew.policy.model_builder import transformer_engine_available

    if args.cpu_smoke:
        args.shapes, args.seq_len, args.micro_batch_size, args.num_micro_batches = "tiny", 64, 2, 2
        args.steps, args.warmup = 2, 1
    on_gpu = torch.cuda.is_available() and not args.cpu_smoke
    device = torch.device("cuda") if on_gpu else torch.device("cpu")
    bf16 = on_gpu or (args.cpu_smoke and args.smoke_bf16)
    parallel.init_distributed(1, 1)
    card = torch.cuda.get_device_name() if on_gpu else "CPU"
    peak = measured_peak_tflops(torch.bfloat16 if bf16 else torch.float32, device)
    sheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in card), None) if on_gpu else None
    print(
        f"device: {card}; measured dense {'bf16' if bf16 else 'fp32'} matmul peak {peak:.1f} TFLOP/s"
        + (f"; datasheet {sheet:.0f}" if sheet else ""),
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for shape in args.shapes.split(","):
            model_dir = write_config(shape, root)
            n = args.micro_batch_size * args.num_micro_batches
            samples = synthetic_samples(SHAPES[shape]["vocab_size"], n, args.seq_len)
            tokens = n * args.seq_len
            flops = train_flops_per_step(shape, tokens, args.seq_len)
            runs = [
                (
                    "megatron " + ("bf16" if bf16 else "fp32"),
                    lambda model_dir=model_dir, samples=samples: bench_megatron(
                        model_dir, samples, args, bf16, None, device
                    ),
                )
            ]
            if on_gpu and not args.no_fp8 and transformer_engine_available():
                runs.append(
                    (
                        "megatron fp8",
                        lambda model_dir=model_dir, samples=samples: bench_megatron(
                            model_dir, samples, args, True, "hybrid", device
                        ),
                    )
                )
            if not args.no_reference:
                runs.append(
                    (
                        "transformers " + ("bf16" if bf16 else "fp32"),
                        lambda model_dir=model_dir, samples=samples: (
                            bench_transformers(model_dir, samples, args, bf16, device) + (None,)
                        ),
                    )
                )
            for name, fn in runs:
                out = fn()
                step = out[0]
                if name.startswith("megatron"):
                    logprob, mem = out[1], out[2]
                else:
                    logprob, mem = None, out[1]
                tflops = flops / step / 1e12
                rows.append(
                    {
                        "shape": shape,
                        "impl": name,
                        "tokens_per_step": tokens,
                        "step_s": step,
                        "tokens_per_s": tokens / step,
                        "logprob_pass_s": logprob,
                        "peak_mem_gib": mem,
                        "tflops": tflops,
                        "mfu_measured_peak": tflops / peak,
                        "mfu_datasheet": tflops / sheet if sheet else None,
                    }
                )
                print(f"  {shape:14s} {name:18s} {step:8.3f} s/step  {tokens / step:10.0f} tok/s", flush=True)
    print()
    print(
        "| shape | impl | tokens/step | step (s) | tokens/s | log-prob pass (s) | peak mem (GiB) | TFLOP/s | MFU (measured peak) | MFU (datasheet) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lp = f"{r['logprob_pass_s']:.3f}" if r["logprob_pass_s"] is not None else "-"
        ds = f"{r['mfu_datasheet']:.1%}" if r["mfu_datasheet"] else "-"
        print(
            f"| {r['shape']} | {r['impl']} | {r['tokens_per_step']} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {lp} | "
            f"{r['peak_mem_gib']:.1f} | {r['tflops']:.2f} | {r['mfu_measured_peak']:.1%} | {ds} |"
        )
    by_shape = {}
    for r in rows:
        by_shape.setdefault(r["shape"], {})[r["impl"].split()[0]] = r
    for shape, d in by_shape.items():
        if "megatron" in d and "transformers" in d:
            print(
                f"{shape}: megatron / transformers MFU ratio = {d['megatron']['tflops'] / d['transformers']['tflops']:.2f}x"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": card, "peak_tflops": peak, "rows": rows}, f, indent=1)
    parallel.destroy_distributed()


if __name__ == "__main__":
    main()
