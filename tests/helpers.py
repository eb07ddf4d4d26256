"""Shared test utilities: tiny random HF models written to disk, and launches of the worker scripts in
tests/workers/ (each layout runs in fresh processes, as it would in production)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = os.path.join(REPO, "tests", "workers")
ARCHS = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}


def make_tiny_hf_model(path: str, arch: str, tie: bool = False, vocab: int = 100, seed: int = 0, **over) -> str:
    """A random tiny HF model whose norms and biases are perturbed, so a mapping that confuses
    them (or drops them) changes the logits."""
    from transformers import AutoConfig, AutoModelForCausalLM

    dims = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
    )
    dims.update(over)
    # pad_token_id stays unset: HF gives the pad row nn.Embedding(padding_idx) semantics (zero init,
    # gradient masked) which megatron's embedding does not have; random rollouts do sample it.
    cfg = AutoConfig.for_model(
        arch, vocab_size=vocab, tie_word_embeddings=tie, eos_token_id=2, pad_token_id=None, bos_token_id=1, **dims
    )
    cfg.architectures = [ARCHS[arch]]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.2)
    model.save_pretrained(path)
    return path


def random_samples(n: int = 6, vocab: int = 100, seed: int = 1) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        plen = int(torch.randint(3, 9, (1,), generator=g))
        rlen = int(torch.randint(1, 12, (1,), generator=g))
        rows.append(
            {
                "prompt": torch.randint(3, vocab, (plen,), generator=g).tolist(),
                "response": torch.randint(3, vocab, (rlen,), generator=g).tolist(),
                "adv": float(torch.randn(1, generator=g)),
                "view": int(torch.randint(0, 2, (1,), generator=g)),
            }
        )
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(script: str, args, nproc: int = 1) -> list[str]:
    """``python script args`` for one process, ``torchrun`` (free port) for several."""
    if nproc == 1:
        return [sys.executable, script, *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(free_port()),
        script,
        *args,
    ]


def run_python_worker(worker: str, args, nproc: int = 1, timeout: int = 300) -> None:
    """Run a test worker script (single process or torchrun); a failure raises with its output."""
    full = launch_command(worker, args, nproc)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    proc = run_in_own_session(full, env, timeout)
    if proc.returncode != 0:
        raise AssertionError(f"worker failed ({' '.join(full)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


def run_in_own_session(cmd: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session with output through files, not pipes, and kill the whole process group
    at the end: a SIGKILLed trainer can leave megatron's checkpoint-writer helpers behind holding pipes."""
    import signal
    import tempfile

    env = dict(env, PYTHONFAULTHANDLER="1")  # SIGABRT prints every thread's Python stack
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, env=env, start_new_session=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # say where it hung before it goes
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGABRT)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out.seek(0)
        err.seek(0)
        if timed_out:
            raise AssertionError(f"timed out after {timeout} s: {' '.join(cmd)[:300]}\n{err.read()[-6000:]}")
        return subprocess.CompletedProcess(cmd, rc, out.read(), err.read())


def run_worker(job: str, model: str, tmp_path, nproc: int = 1, samples=None, extra=(), timeout=300) -> dict:
    """Run tests/workers/dist_worker.py under torchrun (or plain python for one process); return rank 0's json."""
    out = os.path.join(str(tmp_path), f"{job}-{nproc}-{'_'.join(extra) or 'base'}.json")
    cmd = [job, "--model", model, "--out", out, *extra]
    if samples is not None:
        spath = os.path.join(str(tmp_path), "samples.json")
        with open(spath, "w") as f:
            json.dump(samples, f)
        cmd += ["--samples", spath]
    run_python_worker(os.path.join(WORKERS, "dist_worker.py"), cmd, nproc, timeout)
    with open(out) as f:
        return json.load(f)


def hf_reference_logprobs(model_dir: str, samples: list[dict]) -> list[dict]:
    """Per-token log-probs, mean entropy and mean self-certainty of each response from transformers,
    computed in float64 from the fp32 logits."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for s in samples:
        ids = torch.tensor([s["prompt"] + s["response"]])
        with torch.no_grad():
            logits = model(ids).logits[0].double()
        p0, n = len(s["prompt"]) - 1, len(s["response"])
        lp = torch.log_softmax(logits[p0 : p0 + n], dim=-1)
        vocab = lp.shape[-1]
        out.append(
            {
                "logp": [lp[j, t].item() for j, t in enumerate(s["response"])],
                "entropy": (-(lp.exp() * lp).sum(-1)).mean().item(),
                "self_certainty": (
                    -(
                        lp
                        + torch.log(
                            torch.tensor(
                                float(
                                    vocab,
                                ),
                                dtype=torch.float64,
                            )
                        )
                    ).mean(-1)
                )
                .mean()
                .item(),
            }
        )
    return out


def hf_reference_grad_norm(model_dir: str, samples: list[dict], temperature: float = 1.0) -> float:
    """Gradient norm of the on-policy GRPO loss sum_t(-A_t * logp_t) / N_tokens in transformers
    autograd (ratio == 1 at the first update, so the clipped loss has this gradient)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    n_tokens = sum(len(s["response"]) for s in samples)
    loss = 0.0
    for s in samples:
        ids = torch.tensor([s["prompt"] + s["response"]])
        logits = model(ids).logits[0].double() / temperature
        p0, n = len(s["prompt"]) - 1, len(s["response"])
        lp = torch.log_softmax(logits[p0 : p0 + n], dim=-1)
        picked = lp.gather(-1, torch.tensor(s["response"]).unsqueeze(-1)).squeeze(-1)
        loss = loss + (-s["adv"] * picked).sum() / n_tokens
    loss.backward()
    return float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None)))


def _with_parquet_files(root: str, out: dict, train, val) -> dict:
    """``out`` plus the bundle's verl-schema files: train, its rephrased view, and validation."""
    from megatron_corew.demo.tiny_task import verl_rows, write_parquet

    for name, probs, split, phrasing in [
        ("train", train, "train", "original"),
        ("train_rephrased", train, "train", "rephrased"),
        ("val", val, "test", "original"),
    ]:
        out[name] = os.path.join(root, f"{name}.parquet")
        write_parquet(verl_rows(probs, split, phrasing), out[name])
    return out


def make_tiny_bundle(root: str, arch: str = "qwen3", num_train: int = 64, num_val: int = 8) -> dict:
    """A random tiny model with the tiny task's tokenizer plus small verl-schema parquet files:
    enough for end-to-end runs of train_rl.py in seconds (no warm start, so rewards are mostly 0)."""
    from megatron_corew.demo.tiny_task import build_tokenizer, generate_problems

    model = make_tiny_hf_model(os.path.join(root, "model"), arch, vocab=512)
    build_tokenizer().save_pretrained(model)
    train, val = generate_problems(num_train=num_train, num_val=num_val, seed=0)
    out = {"model": model}
    return _with_parquet_files(root, out, train, val)


WARM_SFT_STEPS = 200  # 16 problems x 2 phrasings, batch 32: about 10 s on one idle core


def make_warm_bundle(root: str, sft_steps: int = WARM_SFT_STEPS, num_train: int = 16, num_val: int = 8) -> dict:
    """The tiny task's model (megatron_corew/demo) warm-started to answer with a bare ``\\boxed{N}`` (7 tokens with
    the end of turn), operands 1..9, on targets that are right 60% of the time and one off otherwise (redrawn at
    every draw): its samples at temperature 1 are right some of the time and agree with each other some of the
    time, so gt AND the label-free methods earn non-zero, varying rewards within a group for several steps of
    training (the random tiny bundle's reward is identically 0: its runs train no policy gradient). Same keys as
    ``make_tiny_bundle``. Deterministic: fixed seeds, one thread, deterministic algorithms."""
    import random

    from transformers import GenerationConfig

    from megatron_corew.data.prompts import chat_messages, prompt_ids
    from megatron_corew.demo.tiny_model import build_model, supervised_finetune
    from megatron_corew.demo.tiny_task import IM_END, build_tokenizer, generate_problems

    tok = build_tokenizer()
    eos = tok.convert_tokens_to_ids(IM_END)
    train, val = generate_problems(num_train=num_train, num_val=num_val, seed=0, max_operand=9)

    def boxed(n: int) -> list[int]:
        return list(tok(f"\\boxed{{{n}}}", add_special_tokens=False)["input_ids"]) + [eos]

    items = []
    for p in train:
        answers = [boxed(p.answer), boxed(p.answer - 1), boxed(p.answer + 1)]
        items += [(prompt_ids(tok, chat_messages(p.question(ph))), answers) for ph in ("original", "rephrased")]
    rng = random.Random(0)

    def target(item):  # right 60% of the time, one off otherwise
        prompt, (right, below, above) = item
        return prompt, right if rng.random() < 0.6 else rng.choice((below, above))

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        model = build_model(tok, "qwen3", seed=0)
        supervised_finetune(model, tok, items, sft_steps, target, batch_size=32, lr=3e-3, seed=0)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    model.generation_config = GenerationConfig(bos_token_id=None, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    out = {"model": os.path.join(root, "model")}
    model.save_pretrained(out["model"])
    tok.save_pretrained(out["model"])
    return _with_parquet_files(root, out, train, val)


def assert_real_signal(rows: list[dict], steps) -> None:
    """The compared steps trained a real GRPO update: some group's rewards varied (so some advantage is non-zero)
    and the policy-gradient term saw a non-zero advantage on trained tokens with a non-zero gradient norm. An
    equality test of two runs is evidence only then (with reward 0 everywhere it compares weight decay and KL)."""
    by_step: dict[int, dict] = {}
    for r in rows:  # a step can have several rows (validation): merge them
        by_step.setdefault(r.get("step"), {}).update(r)
    for step in steps:
        r = by_step.get(step)
        assert r is not None, f"step {step} not in the metrics ({sorted(by_step)})"
        assert r["reward/zero_variance_groups"] < 1, (step, "every group's reward was constant")
        assert r["train/adv_abs_mean"] > 0, (step, "no trained token had a non-zero advantage")
        assert r["train/grad_norm"] > 0, (step, "zero gradient")


def tiny_run_args(bundle: dict, out: str | None = None, method: str = "corewarding_2", steps: int | None = 2, extra=()):
    """train_rl.py flags of the small e2e runs: B 4 x G 4, 8 response tokens, lr 1e-3, no validation; ``steps``
    or ``out`` None leaves that flag to the caller."""
    args = ["--hf-checkpoint", bundle["model"], "--train-data", bundle["train"], "--reward-method", method,
            "--global-batch-size", "4", "--n-samples-per-prompt", "4", "--max-response-length", "8",
            "--lr", "1e-3", "--eval-interval", "0", "--no-progress-bar"]  # fmt: skip
    if steps is not None:
        args += ["--train-iters", str(steps)]
    if out is not None:
        args += ["--output-dir", out]
    return args + list(extra)


def run_train(args: list[str], env_extra: dict | None = None, nproc: int = 1, timeout: int = 600):
    """Run train_rl.py as a user would (torchrun when ``nproc`` > 1), in its own session."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO, **(env_extra or {}))
    return run_in_own_session(launch_command("train_rl.py", args, nproc), env, timeout)


def read_metrics(out_dir: str) -> list[dict]:
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


class RunAhead:
    """The slow subprocess runs of a parametrised test, two at a time: while a test waits for its own run, the next
    selected test's run (pytest's order, after -k / -m) starts on a second worker. The runs are single-threaded for
    much of their time (imports, model build, OMP_NUM_THREADS=1), so a 2-core machine finishes the set in about
    two thirds of the time; each test still asserts on its own run only."""

    def __init__(self, test_name: str, param: str):
        from concurrent.futures import ThreadPoolExecutor

        self.test_name, self.param = test_name, param
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.futures: dict = {}

    def submit(self, key, start):
        """``start()``'s result for ``key``, started now unless it already runs (a future)."""
        if key not in self.futures:
            self.futures[key] = self.pool.submit(start)
        return self.futures[key]

    def result(self, request, key, start):
        """This test's run (``start(value)`` for its parameter value, ``key(value)`` names it) after starting the
        next selected test's."""
        here = request.node.callspec.params[self.param]
        fut = self.submit(key(here), lambda: start(here))
        values = [
            i.callspec.params[self.param]
            for i in request.session.items
            if getattr(i, "originalname", "") == self.test_name
        ]
        keys = [key(v) for v in values]
        nxt = values[keys.index(key(here)) + 1 :][:1]
        for v in nxt:
            self.submit(key(v), lambda v=v: start(v))
        return fut.result()
