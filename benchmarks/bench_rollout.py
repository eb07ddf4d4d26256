"""Rollout throughput: the embedded HF engine against SGLang, same model, same prompts.

    python benchmarks/bench_rollout.py                           # bundled tiny model, launches one CPU server
    python benchmarks/bench_rollout.py --model DIR --num-prompts 64 --max-new-tokens 256
    python benchmarks/bench_rollout.py --sglang-url http://127.0.0.1:30000   # a server already running DIR

Prints generated tokens/s of each (after one warm-up call each) and the ratio SGLang / embedded.
On CPU the server needs the import stubs (written to a temp dir from tests/sglang_stubs.py) and
the venv from tools/install_sglang.sh.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prompts_for(model: str, data: str | None, n: int, seed: int = 0) -> list[list[int]]:
    if data and os.path.exists(os.path.join(model, "tokenizer_config.json")):
        from transformers import AutoTokenizer

        from megatron_corew.data.dataset import load_examples

        ex = load_examples(data, AutoTokenizer.from_pretrained(model), 512)
        return [ex[i % len(ex)].prompt_ids for i in range(n)]
    import torch

    g = torch.Generator().manual_seed(seed)
    vocab = 100
    return [
        torch.randint(3, vocab, (int(torch.randint(8, 40, (1,), generator=g)),), generator=g).tolist() for _ in range(n)
    ]


def timed(engine, prompts, params, repeats: int) -> tuple[float, int, float]:
    engine.generate(prompts[: max(1, len(prompts) // 4)], params)  # warm-up
    tokens, seconds = 0, 0.0
    for r in range(repeats):
        params.seed = 1000 + r
        t0 = time.perf_counter()
        gens = engine.generate(prompts, params)
        seconds += time.perf_counter() - t0
        tokens += sum(len(g.response_ids) for g in gens)
    return tokens / seconds, tokens, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(REPO, "assets", "tiny", "model"))
    p.add_argument("--data", default=os.path.join(REPO, "assets", "tiny", "data", "train.parquet"))
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="embedded engine batch")
    p.add_argument("--sglang-url", default=None, help="attach to a running server (serving --model)")
    p.add_argument("--sglang-python", default=None)
    p.add_argument("--sglang-device", default=None)
    p.add_argument("--sglang-server-args", default="", help="extra server flags, one string")
    p.add_argument("--skip-embedded", action="store_true")
    a = p.parse_args(argv)

    import shlex

    import torch

    from megatron_corew.rollout.base import SamplingParams
    from megatron_corew.rollout.embedded import EmbeddedEngine
    from megatron_corew.rollout.factory import eos_ids
    from megatron_corew.rollout.sglang.engine import SGLangEngine
    from megatron_corew.rollout.sglang.fleet import AttachedFleet, LocalFleet
    from megatron_corew.rollout.sglang.http import HTTPConfig, http_json
    from megatron_corew.rollout.sglang.server import ServerSpec, default_sglang_python

    model = os.path.abspath(a.model)
    eos = eos_ids(model)
    prompts = prompts_for(model, a.data, a.num_prompts)
    params = SamplingParams(temperature=a.temperature, max_new_tokens=a.max_new_tokens)
    print(
        f"model {model}: {len(prompts)} prompts (mean {sum(map(len, prompts)) / len(prompts):.1f} tokens), "
        f"up to {a.max_new_tokens} new tokens, T={a.temperature}, {a.repeats} timed repeats, "
        f"torch threads {torch.get_num_threads()}"
    )

    emb_tps = None
    if not a.skip_embedded:
        emb = EmbeddedEngine(model, eos, max_batch_size=a.batch_size)
        emb_tps, tok, sec = timed(emb, prompts, params, a.repeats)
        print(f"embedded : {emb_tps:9.1f} tokens/s  ({tok} tokens in {sec:.2f} s)")
        del emb

    fleet = None
    try:
        if a.sglang_url:
            fleet = AttachedFleet([a.sglang_url], HTTPConfig())
            http_json(
                "POST",
                a.sglang_url + "/update_weights_from_disk",
                {"model_path": model, "weight_version": "default"},
                timeout=300,
            )
        else:
            sys.path.insert(0, os.path.join(REPO, "tests"))
            from sglang_stubs import write_stubs

            device = a.sglang_device or ("cuda" if torch.cuda.is_available() else "cpu")
            stubs = write_stubs(tempfile.mkdtemp(prefix="sglang-stubs-")) if device == "cpu" else None
            spec = ServerSpec(
                model_path=model,
                python=a.sglang_python or default_sglang_python(),
                device=device,
                server_args=shlex.split(a.sglang_server_args),
                extra_pythonpath=[stubs] if stubs else [],
                log_path=os.path.join(tempfile.gettempdir(), "bench_rollout_sglang.log"),
            )
            t0 = time.perf_counter()
            fleet = LocalFleet([spec], HTTPConfig()).start()
            print(f"sglang server ready in {time.perf_counter() - t0:.1f} s")
        eng = SGLangEngine(fleet, model_path=model, eos_token_ids=eos)
        sgl_tps, tok, sec = timed(eng, prompts, params, a.repeats)
        print(f"sglang   : {sgl_tps:9.1f} tokens/s  ({tok} tokens in {sec:.2f} s)")
    finally:
        if fleet is not None:
            fleet.shutdown()
    if emb_tps:
        print(f"ratio sglang/embedded: {sgl_tps / emb_tps:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
