"""Packed vs padded micro-batches, token balance over DP ranks, and chunked log-prob memory, side by side.

  python benchmarks/bench_packing.py                        # all three tables (CPU, a few minutes)
  python benchmarks/bench_packing.py --only step --samples 64
  python benchmarks/bench_packing.py --only step --workload tiny --cprofile 15
  python benchmarks/bench_packing.py --only memory --tokens 2048,16384

1. Training-step time of the same GRPO step, padded vs packed (+ chunked statistics), alternating, one in-process
   trainer each, on two workloads: ``longtail`` (a tiny random Qwen3 on a lognormal 16..2048-token batch) and
   ``tiny`` (the README's tiny task: the assets/tiny model's own sampled responses to 16 prompts x 8, at most 48
   tokens, micro-batch 64). ``--cprofile K`` also profiles one step of each layout (K functions by own time).
2. Data-parallel token imbalance (max / mean tokens per rank) of today's round-robin deal vs the LPT split.
3. Peak memory of a log-prob pass (log-probs, entropy, self-certainty) over a 151,936-token vocabulary with a
   tiny hidden size, unchunked vs chunked, each in a fresh process (peak RSS growth); results compared.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def lognormal_lengths(n: int, seed: int, lo: int = 16, hi: int = 2048, mu: float = 5.6, sigma: float = 1.0):
    rng = random.Random(seed)
    return [min(hi, max(lo, int(rng.lognormvariate(mu, sigma)))) for _ in range(n)]


# ---------------------------------------------------------------- 1. step time
def _tiny_model(path: str, vocab: int) -> str:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(
        "qwen3",
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    cfg.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path


def _tiny_task_samples(model_dir: str, seed: int):
    """The tiny task's training batch: 16 prompts x 8 samples of the warm-started model (temperature 1, at most 48
    new tokens, stopped at its end-of-turn token), as ``RLRun`` would hand them to the trainer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_corew.data.prompts import chat_messages, prompt_ids
    from megatron_corew.demo.tiny_task import IM_END, generate_problems

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    train, _ = generate_problems(seed=seed)
    prompts = [prompt_ids(tok, chat_messages(p.original)) for p in train[:16] for _ in range(8)]
    eos, pad = tok.convert_tokens_to_ids(IM_END), tok.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attn = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts]).unsqueeze(1)).long()
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=attn, max_new_tokens=48, do_sample=True, temperature=1.0, top_p=1.0,
            top_k=0, eos_token_id=eos, pad_token_id=pad,
        )  # fmt: skip
    pairs = []
    for p, row in zip(prompts, out[:, width:].tolist()):
        resp = row[: row.index(eos) + 1] if eos in row else row
        pairs.append((p, resp))
    return pairs


def _workload(a, name: str):
    """(model dir or config, hf_source, vocab, micro-batch size, description, [(prompt ids, response ids)])."""
    rng = random.Random(1)
    if name == "tiny":
        model = os.path.join(REPO, "assets/tiny/model")
        if not os.path.exists(os.path.join(model, "config.json")):
            sys.exit(f"error: --workload tiny needs {model} (python tools/make_tiny_task.py)")
        pairs = _tiny_task_samples(model, a.seed)
        return model, None, None, 64, "the tiny task (assets/tiny model, 16 prompts x 8 sampled responses)", pairs
    if a.shape == "tiny":
        model, hf_source, vocab = _tiny_model(os.path.join(tempfile.mkdtemp(), "m"), a.vocab), None, a.vocab
        shape = f"tiny Qwen3 (hidden 128, 2 layers, vocab {a.vocab})"
    else:  # a real shape, megatron's random init (only config.json is written; the GPU section of gpu_session.sh)
        from benchmarks.gpu_train_step import SHAPES, write_config

        model, hf_source, vocab = write_config(a.shape, tempfile.mkdtemp()), False, SHAPES[a.shape]["vocab_size"]
        shape = f"{a.shape} shape (random init)"
    pairs = []
    for n in lognormal_lengths(a.samples, a.seed):
        p = min(n - 1, rng.randint(8, 64))
        pairs.append(([rng.randrange(3, vocab) for _ in range(p)], [rng.randrange(3, vocab) for _ in range(n - p)]))
    return model, hf_source, vocab, a.micro_batch_size, f"lognormal lengths 16..2048, {shape}", pairs


def _profile(trainer, samples, top: int) -> list[str]:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    trainer.train_step(samples)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    body = buf.getvalue().strip().splitlines()
    start = next(i for i, line in enumerate(body) if line.lstrip().startswith("ncalls"))
    return ["```", *[line.rstrip() for line in body[start:]], "```"]


def bench_step(a) -> list[str]:
    import torch

    from checkpoints_conversion.config import load_model_args
    from megatron_corew.policy import parallel
    from megatron_corew.policy.trainer import PolicyTrainer, TrainerConfig, TrainSample

    parallel.init_distributed(1, 1)
    torch.set_num_threads(a.threads)
    cuda = torch.cuda.is_available()
    rows = []
    for workload in ("tiny", "longtail") if a.workload == "both" else (a.workload,):
        model, hf_source, vocab, mbs_size, what, pairs = _workload(a, workload)
        margs = load_model_args(model)
        rng = random.Random(2)
        samples = []
        for p, r in pairs:
            samples.append(TrainSample(list(p), list(r)))
            samples[-1].advantage = rng.gauss(0, 1)
        budget = a.max_tokens_per_gpu if workload == "longtail" else None  # tiny: the default budget
        variants = {
            "padded": dict(micro_batch_layout="padded"),
            "packed": dict(micro_batch_layout="packed", max_tokens_per_gpu=budget),
            "packed + chunked": dict(micro_batch_layout="packed", max_tokens_per_gpu=budget, logits_chunk_tokens=1024),
        }
        trainers = {}
        for name, kw in variants.items():
            cfg = TrainerConfig(
                micro_batch_size=mbs_size, lr=1e-5, train_iters=100, need_anchor=False, bf16=a.bf16, **kw
            )
            trainers[name] = PolicyTrainer(margs, cfg, hf_source=hf_source)
        times = {name: [] for name in variants}
        losses = {}
        for rep in range(a.warmup + a.steps):  # alternate: a slow moment of the machine hits every variant
            for name, tr in trainers.items():
                t0 = time.perf_counter()
                m = tr.train_step(samples)
                if cuda:
                    torch.cuda.synchronize()
                if rep >= a.warmup:
                    times[name].append(time.perf_counter() - t0)
                losses.setdefault(name, m["loss"])
        total = sum(s.length for s in samples)
        rows += [
            f"### {workload}",
            "",
            f"{len(samples)} sequences, {what}: total {total} tokens, mean {total / len(samples):.0f}, lengths "
            f"{min(s.length for s in samples)}..{max(s.length for s in samples)}; {'bf16' if a.bf16 else 'fp32'}, "
            f"{torch.cuda.get_device_name(0) if cuda else f'{a.threads} CPU thread(s)'}, micro-batch {mbs_size} "
            f"(padded), packed budget {budget or 'micro-batch x longest'}; median of {a.steps} steps after "
            f"{a.warmup} warm-up, load average {os.getloadavg()[0]:.1f} at the end",
            "",
            "| layout | micro-batches | tokens computed | step time (s) | min - max (s) | speed-up vs padded "
            "| step-1 loss |",
            "|---|---|---|---|---|---|---|",
        ]
        base = None
        for name, tr in trainers.items():
            mbs = tr._local_microbatches(samples)
            computed = sum(mb["tokens"].numel() for mb in mbs)
            med = sorted(times[name])[len(times[name]) // 2]
            base = base or med
            rows.append(
                f"| {name} | {len(mbs)} | {computed} | {med:.3f} | {min(times[name]):.3f} - {max(times[name]):.3f} "
                f"| {base / med:.2f}x | {losses[name]:.9f} |"
            )
        rows.append("")
        if a.cprofile:
            for name in ("padded", "packed"):
                rows += [
                    f"cProfile of one {name} step ({workload}), by own time:",
                    "",
                    *_profile(trainers[name], samples, a.cprofile),
                    "",
                ]
    return rows


# ---------------------------------------------------------------- 2. DP balance
def bench_balance(a) -> list[str]:
    from megatron_corew.policy import packing

    rows = [
        f"{a.samples * 4} sequences, lognormal 16..2048; tokens per DP rank, max / mean",
        "",
        "| DP ranks | round-robin of sorted lengths (padded) | LPT split (packed) | micro-batches per rank (packed) |",
        "|---|---|---|---|",
    ]
    lengths = lognormal_lengths(a.samples * 4, a.seed)
    for dp in (2, 4, 8, 16):
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        before = [sum(lengths[i] for i in order[r::dp]) for r in range(dp)]
        split = packing.balanced_microbatches(lengths, dp, a.max_tokens_per_gpu)
        after = [sum(lengths[i] for mb in r for i in mb) for r in split]
        rows.append(
            f"| {dp} | {packing.imbalance(before):.3f} | {packing.imbalance(after):.3f} | "
            f"{sorted({len(r) for r in split})} |"
        )
    return rows


# ---------------------------------------------------------------- 3. memory
def _memory_child(tokens: int, chunk: int, out: str) -> None:
    """One log-prob pass in this fresh process; writes peak RSS growth and the results."""
    import torch

    from megatron_corew.policy.vocab_parallel import VocabParallelStats, chunked_stats

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    vocab, hidden = 151936, 16
    h = torch.randn(tokens, hidden, generator=g)
    w = 0.3 * torch.randn(vocab, hidden, generator=g)
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            if chunk:
                res = chunked_stats(h, w, labels, vocab, 1.0, chunk)
            else:
                st = VocabParallelStats(h @ w.t(), vocab)
                res = {
                    "logp": st.token_logprobs(labels),
                    "entropy": st.entropy(),
                    "self_certainty": st.self_certainty(),
                }
    except (RuntimeError, MemoryError) as e:  # the address-space limit: this pass does not fit
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        torch.save({"error": str(e).splitlines()[0][:200], "peak_mib": (peak - base) / 1024}, out)
        return
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    torch.save({"peak_mib": (peak - base) / 1024, "seconds": dt, **res}, out)


def _available_mib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1024
    return float("inf")


def bench_memory(a) -> list[str]:
    import torch

    rows = [
        "log-probs + entropy + self-certainty, vocab 151,936, hidden 16, fp32, forward (no grad); peak RSS growth "
        "of a fresh process",
        "",
        "| tokens | unchunked peak (MiB) | chunked peak (MiB), chunk | unchunked s | chunked s | max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    # every pass runs in a fresh process under an address-space limit (RLIMIT_AS): what is free now minus a margin
    # for the other jobs on this machine, so a pass that does not fit fails there, alone, with a clear error
    limit = int(min(a.memory_limit_gib * 2**30 if a.memory_limit_gib else float("inf"),
                    (_available_mib() - 3 * 1024) * 2**20))  # fmt: skip

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    for tokens in [int(t) for t in a.tokens.split(",")]:
        got = {}
        for chunk in (0, a.chunk):
            out = os.path.join(tempfile.mkdtemp(), "res.pt")
            cmd = [sys.executable, __file__, "--memory-child", f"{tokens},{chunk},{out}"]
            env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
            proc = subprocess.run(cmd, env=env, preexec_fn=cap)
            if os.path.exists(out):
                got[chunk] = torch.load(out)
            else:  # -9: the kernel's OOM killer (other jobs hold the rest of the memory), before the limit was hit
                why = "killed (SIGKILL, out of memory)" if proc.returncode == -9 else f"exit code {proc.returncode}"
                got[chunk] = {"error": why}
        c, u = got[a.chunk], got[0]
        need = tokens * 151936 * 4 * 5 / 2**30  # logits, shifted and three temporaries at once (measured at 1k)
        if "error" in u:
            rows.append(
                f"| {tokens} | did not fit: {u['error']} under a {limit / 2**30:.1f} GiB address-space limit "
                f"(estimate ~{need:.0f} GiB) | {c['peak_mib']:.0f}, {a.chunk} | - | {c['seconds']:.1f} | - |"
            )
            continue
        diff = max(float((u[k] - c[k]).abs().max()) for k in ("logp", "entropy", "self_certainty"))
        rows.append(
            f"| {tokens} | {u['peak_mib']:.0f} | {c['peak_mib']:.0f}, {a.chunk} | {u['seconds']:.1f} | "
            f"{c['seconds']:.1f} | {diff:.2e} |"
        )
    rows += ["", f"Address-space limit per pass: {limit / 2**30:.1f} GiB (free memory at the start minus 3 GiB)."]
    return rows


def write_sections(path: str, sections: dict[str, str]) -> None:
    """Replace the ``## name`` sections of ``path`` that this run measured; keep the others (and the title)."""
    old = open(path).read() if os.path.exists(path) else "# bench_packing.py results\n\n"
    head, *parts = old.split("\n## ")
    kept = {p.split("\n", 1)[0].strip(): "## " + p.rstrip() + "\n" for p in parts}
    for name, body in sections.items():
        kept[name] = body.rstrip() + "\n"
    order = [n for n in ("step", "balance", "memory") if n in kept] + [
        n for n in kept if n not in ("step", "balance", "memory")
    ]
    with open(path, "w") as f:
        f.write(head.rstrip() + "\n\n" + "\n\n".join(kept[n].rstrip() for n in order) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("step", "balance", "memory"), default=None)
    ap.add_argument("--samples", type=int, default=64, help="longtail workload: sequences per step")
    ap.add_argument("--workload", choices=("tiny", "longtail", "both"), default="both", help="step section")
    ap.add_argument("--cprofile", type=int, default=0, help="step: profile one step per layout, K functions")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--shape", default="tiny", help="tiny, or a shape of benchmarks/gpu_train_step.py (GPU)")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--micro-batch-size", type=int, default=8, help="sequences per padded micro-batch")
    ap.add_argument("--max-tokens-per-gpu", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", default="1024,16384")
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--memory-limit-gib", type=float, default=None, help="cap of the passes' address space")
    ap.add_argument("--out", default=None, help="also write the measured sections (markdown) into this file")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.memory_child:
        tokens, chunk, out = a.memory_child.split(",")
        _memory_child(int(tokens), int(chunk), out)
        return
    stamp = (
        f"`{' '.join(['python', 'benchmarks/bench_packing.py', *(argv if argv is not None else sys.argv[1:])])}` on "
        f"{platform.node()} ({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.1f} at the start"
    )
    sections = {}
    for name, fn in (("step", bench_step), ("balance", bench_balance), ("memory", bench_memory)):
        if a.only in (None, name):
            sections[name] = "\n".join([f"## {name}", "", stamp, "", *fn(a), ""])
    text = "\n".join(sections.values())
    print(text)
    if a.out:
        write_sections(a.out, sections)
    sys.stdout.flush()
    os._exit(0)  # the in-process trainers hold gloo groups; skip their teardown


if __name__ == "__main__":
    main()
