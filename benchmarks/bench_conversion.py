"""Benchmark the HF <-> Megatron converters on a model of Qwen2.5-1.5B's real shape.

    python benchmarks/bench_conversion.py [--workdir /tmp/bench_conversion] [--dtype bfloat16] [--keep]

1. Writes a Qwen2.5-1.5B config (hidden 1536, 28 layers, 12 heads, 2 KV heads, FFN 8960, vocab 151936,
   tied embeddings, QKV bias) and random weights, streamed shard by shard with write_hf_checkpoint
   (the model is never built in memory).
2. Runs tools/convert_hf_to_megatron.py and tools/convert_megatron_to_hf.py as separate processes
   and reports each one's wall time and peak RSS (the child's own ru_maxrss from wait4), next to a
   process that only imports torch, transformers and megatron-core (the floor). This parent process
   never imports torch (generation and verification run in their own processes): a child's
   ru_maxrss starts from its parent's RSS at fork time.
3. Checks the round trip is bitwise (tensor by tensor) unless --no-verify.

Exits non-zero when a converter's peak RSS reaches --rss-limit-gb (default 2.5).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QWEN25_15B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 21,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "use_cache": True,
}


def write_random_model(out_dir: str, dtype_name: str, layers: int | None) -> float:
    import torch

    from checkpoints_conversion.config import load_model_args
    from checkpoints_conversion.families import expected_hf_shapes
    from checkpoints_conversion.hf_io import write_hf_checkpoint

    cfg = dict(QWEN25_15B, dtype=dtype_name)
    if layers:
        cfg["num_hidden_layers"] = layers
    cfg_dir = out_dir + ".cfg"
    os.makedirs(cfg_dir, exist_ok=True)
    with open(os.path.join(cfg_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(cfg_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"], "do_sample": False}, f)
    args = load_model_args(cfg_dir)
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)

    def tensors():
        for name, shape in expected_hf_shapes(args).items():
            if name.endswith("norm.weight"):
                t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
            else:
                t = torch.empty(shape, dtype=dtype).normal_(0.0, 0.02, generator=gen)
            yield name, t.to(dtype)

    t0 = time.perf_counter()
    write_hf_checkpoint(out_dir, tensors(), config_dir=cfg_dir, max_shard_bytes=10**9)
    shutil.rmtree(cfg_dir)
    return time.perf_counter() - t0


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS GB of the child itself, output tail)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO, text=True)
    out_chunks = []
    # drain output while it runs (a full pipe would block the child)
    import threading

    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = "".join(out_chunks)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{output[-4000:]}")
    return wall, usage.ru_maxrss * 1024 / 1e9, output.strip().splitlines()[-1] if output.strip() else ""


def dir_gb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs) / 1e9


def verify(a_dir: str, b_dir: str) -> int:
    import torch

    from checkpoints_conversion.hf_io import HFCheckpointReader

    a, b = HFCheckpointReader(a_dir), HFCheckpointReader(b_dir)
    if sorted(a.keys()) != sorted(b.keys()):
        raise SystemExit(f"round trip changed the tensor names: {sorted(set(a.keys()) ^ set(b.keys()))[:5]}")
    for name in a.keys():
        x, y = a.get(name), b.get(name)
        if x.dtype != y.dtype or not torch.equal(x, y):
            raise SystemExit(f"round trip changed {name}")
    return len(a.weight_map)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="/tmp/bench_conversion")
    ap.add_argument(
        "--dtype",
        choices=["bfloat16", "float32"],
        default="bfloat16",
        help="dtype of the random HF checkpoint (the real Qwen2.5-1.5B is bfloat16)",
    )
    ap.add_argument("--layers", type=int, default=None, help="override num_hidden_layers (smoke runs)")
    ap.add_argument("--max-shard-size", default="1GB", help="HF output shard size of the back conversion")
    ap.add_argument("--rss-limit-gb", type=float, default=2.5)
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the written checkpoints")
    ap.add_argument("--_generate", nargs=3, metavar=("DIR", "DTYPE", "LAYERS"), help=argparse.SUPPRESS)
    ap.add_argument("--_verify", nargs=2, metavar=("A", "B"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._generate:
        secs = write_random_model(a._generate[0], a._generate[1], int(a._generate[2]) or None)
        print(f"generated in {secs:.1f}s")
        return 0
    if a._verify:
        print(f"round trip bitwise equal: {verify(*a._verify)} tensors")
        return 0

    hf, mc, back = (os.path.join(a.workdir, d) for d in ("hf", "megatron", "hf_back"))
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    py = sys.executable
    rows = []
    try:
        me = os.path.abspath(__file__)
        gen_s, _, _ = run_measured([py, me, "--_generate", hf, a.dtype, str(a.layers or 0)])
        print(
            f"random {a.dtype} checkpoint of Qwen2.5-1.5B's shape: {dir_gb(hf):.2f} GB written in {gen_s:.1f}s",
            flush=True,
        )
        wall, rss, _ = run_measured(
            [
                py,
                "-c",
                "import torch, transformers; "
                "from megatron_corew.policy import cpu_compat; cpu_compat.apply(); "
                "import megatron.core, megatron.core.dist_checkpointing",
            ]
        )
        rows.append(("imports only (floor)", wall, rss, None))
        wall, rss, last = run_measured(
            [py, "tools/convert_hf_to_megatron.py", "--hf-dir", hf, "--save", mc, "--no-progress-bar"]
        )
        print(last, flush=True)
        rows.append(("HF -> Megatron", wall, rss, dir_gb(mc)))
        wall, rss, last = run_measured(
            [
                py,
                "tools/convert_megatron_to_hf.py",
                "--load",
                mc,
                "--hf-config-dir",
                hf,
                "--save",
                back,
                "--max-shard-size",
                a.max_shard_size,
                "--no-progress-bar",
            ]
        )
        print(last, flush=True)
        rows.append(("Megatron -> HF", wall, rss, dir_gb(back)))
        verified = None if a.no_verify else run_measured([py, me, "--_verify", hf, back])[2]
    finally:
        if not a.keep:
            shutil.rmtree(a.workdir, ignore_errors=True)
    print()
    print("| direction | wall time (s) | peak RSS (GB) | output (GB) |")
    print("|---|---:|---:|---:|")
    for name, wall, rss, size in rows:
        print(f"| {name} | {wall:.1f} | {rss:.2f} | {'' if size is None else f'{size:.2f}'} |")
    if verified is not None:
        print(f"\n{verified}")
    worst = max(r[2] for r in rows[1:])
    if worst >= a.rss_limit_gb:
        print(f"FAIL: peak RSS {worst:.2f} GB >= {a.rss_limit_gb} GB", file=sys.stderr)
        return 1
    print(f"peak RSS {worst:.2f} GB < {a.rss_limit_gb} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
