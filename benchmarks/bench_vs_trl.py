"""Our RL step (train_rl.py's ``RLRun.step``) against TRL's ``GRPOTrainer`` on one CPU machine, side by side.

  python benchmarks/bench_vs_trl.py                         # three workloads, all cores, writes the results file
  python benchmarks/bench_vs_trl.py --workloads variable --rounds 4 --threads 1 \
      --ours-variant defaults= --ours-variant "padded=--micro-batch-layout padded"
  python benchmarks/bench_vs_trl.py --smoke                 # tiny sizes, one round (the e2e test)

Each system lives in its own long-lived worker process (this file with ``--worker``); the parent steps them in
turn, A B A B ..., so both see the same machine load and never run at the same time. Shared settings: the same
HF checkpoint and training prompts, B prompts x G samples, the same maximum response length, temperature 1,
top-p 1 (TRL: top-k 0), KL off (``--kl-loss-coef 0`` / ``beta=0``), one optimizer step per rollout batch (so
neither computes an old-policy log-prob pass), the same micro-batch size, learning rate and clipping (0.2), fp32,
CPU, and the same reward: our ground-truth grader (``rewards.grading.grade``: last ``\\boxed{}`` answer of the
response decoded without special tokens, reference MATH normalisation) is TRL's ``reward_func``. The prompts are
the same chat-rendered token ids (checked); the two samplers draw different prompts each step.

Workloads: ``fixed`` is the tiny task (assets/tiny, B 16 x G 8, at most 48 tokens; responses ~18 tokens, narrow).
``variable`` is the same checkpoint with its EOS row of ``lm_head`` scaled by 0.3 (written once to --work-dir), so
that after its answer the model goes on until a now rarer EOS: at most 384 tokens, long-tailed lengths (median ~46,
p90 ~115, ~5% reach the limit). ``25M`` is a randomly initialised 25.7M-parameter Qwen3 with the same tokenizer
(B 4 x G 8, 64-token responses: a random model rarely samples its EOS), where the matmuls, not the per-step
overhead, set the pace. Both systems run with the same torch thread count (``--threads``, default all cores); the
headline table of each workload holds the default configurations only, other ``--ours-variant`` /
``--trl-variant`` rows follow it.

Where the time goes: ours from the step's ``perf/time_*`` stages; TRL by wrapping its own methods
(``_generate_single_turn``: generate; ``_calculate_rewards``: reward; the rest of
``_generate_and_score_completions``: tokenize, decode, pad, advantages; the remainder of the optimizer step, from
``on_step_begin`` to ``on_step_end``: train). TRL is a benchmark-only dependency (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

WORKLOADS = {
    "fixed": dict(B=16, G=8, max_len=48, eos_scale=None, lr=1e-4, mbs=64),
    "variable": dict(B=16, G=8, max_len=384, eos_scale=0.3, lr=1e-6, mbs=64),
    "25M": dict(B=4, G=8, max_len=64, eos_scale=None, lr=1e-5, mbs=32, dims="25M"),
    "smoke": dict(B=2, G=4, max_len=16, eos_scale=None, lr=1e-4, mbs=4),
}
# a randomly initialised Qwen3 of ~25.7M parameters with the tiny task's tokenizer: a random model rarely samples
# its EOS, so nearly every response runs to the length limit (a fixed-length decode of a model 137x the tiny one)
DIMS = {
    "25M": dict(
        hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
        head_dim=64,
    ),
}  # fmt: skip
PROTO = "@@bench "
NOTES = """
Shared settings: the same checkpoint and training prompts (the same chat-rendered token ids, checked), B prompts x G
samples, the same maximum response length, temperature 1, top-p 1 (TRL: top-k 0), KL off (`--kl-loss-coef 0` /
`beta=0`), one optimizer step per rollout batch (no old-policy log-prob pass in either), the same micro-batch size,
lr, clip 0.2, weight decay 0.01, grad clip 1, fp32, CPU, the same torch thread count, and the same reward: our
ground-truth grader (`rewards.grading.grade`) is TRL's `reward_func`. Workloads: fixed = the tiny task (responses
~18 tokens, narrow); variable = the tiny checkpoint with its EOS row of `lm_head` scaled by 0.3, so that the model
goes on after its answer until a rarer EOS (lengths: median ~46, p90 ~115, ~5% reach the 384 limit; lr 1e-6 keeps
the distribution steady over the run); 25M = a random 25.7M-parameter Qwen3 with the tiny tokenizer, 64-token
responses (its reward is 0: a throughput measurement of a model 137x the tiny one).

How to read it: samples/s = B x G / step time, the median over the rounds with the slowest and fastest round in
brackets; response tokens/s, step, generate, reward, train and other are medians per step too. Ours:
`perf/time_generate`, `perf/time_reward`, `perf/time_train` of `RLRun.step`, other = the rest (weight sync into the
engine). TRL: `_generate_single_turn` (generate), `_calculate_rewards` (reward), the rest of
`_generate_and_score_completions` (other: tokenize, decode, pad, advantages), and the remainder of the optimizer
step from `on_step_begin` to `on_step_end` (train: forward, backward, optimizer). Logging is outside both.

Defaults: TRL (defaults) is `GRPOTrainer` with the shared settings above (plain `generate`, padded training); ours
(defaults) is `train_rl.py` with no extra flag: the embedded engine decodes a step's samples in one batch from which
finished sequences leave (`--rollout-drop-finished`, on by default), and training runs packed micro-batches
(`--micro-batch-layout packed`, the default; `padded` opts out).
`--no-rollout-drop-finished --rollout-batch-size 64` is the earlier layout (every row decoded to the longest, in
batches of 64).

The machine may be shared: the header of each table gives the load average (1 minute) before and after its
rounds. The systems take turns step by step, so both meet the same load on average; read the ratios, and rerun
on an idle machine for absolute rates.
"""


# ---------------------------------------------------------------- shared set-up
def workload_model(base: str, eos_scale: float | None, work_dir: str, dims: str | None = None) -> str:
    """The checkpoint a workload runs: the tiny model, a copy whose EOS row of lm_head is scaled, or a random model
    of other ``dims`` with the tiny model's tokenizer."""
    import shutil

    if dims is not None:
        return sized_model(base, dims, work_dir)
    if eos_scale is None:
        return base

    from safetensors.torch import load_file, save_file

    out = os.path.join(work_dir, f"model_eos{eos_scale}")
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return out
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    state = load_file(os.path.join(base, "model.safetensors"))
    eos = json.load(open(os.path.join(base, "config.json")))["eos_token_id"]
    head = state["lm_head.weight"].clone()
    for e in eos if isinstance(eos, list) else [eos]:
        head[e] *= eos_scale
    state["lm_head.weight"] = head
    save_file(state, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    os.replace(tmp, out)
    return out


def sized_model(base: str, dims: str, work_dir: str) -> str:
    """A random Qwen3 of ``DIMS[dims]`` with ``base``'s tokenizer, written once to ``work_dir``."""
    import shutil

    from transformers import AutoTokenizer

    from megatron_corew.demo.tiny_model import build_model

    out = os.path.join(work_dir, f"model_{dims}")
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return out
    tok = AutoTokenizer.from_pretrained(base)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    build_model(tok, seed=0, **DIMS[dims]).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def gt_reward(completions, ground_truth, **_):
    """Our GT-GRPO reward, as TRL calls a reward function (same grader and mode as ``--reward-method gt``)."""
    from megatron_corew.rewards.grading import grade

    return [grade(c, g, "reference") if g is not None else 0.0 for c, g in zip(completions, ground_truth)]


# ---------------------------------------------------------------- workers
class Channel:
    """The worker's protocol lines go to the original stdout; everything libraries print goes to stderr."""

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)

    def send(self, obj) -> None:
        self.out.write(PROTO + json.dumps(obj) + "\n")
        self.out.flush()

    @staticmethod
    def wait() -> bool:
        return sys.stdin.readline().strip() == "step"


def ours_worker(a, chan: Channel) -> None:
    from megatron_corew.arguments import parse_args
    from megatron_corew.train import RLRun

    argv = [
        "--hf-checkpoint", a.model, "--train-data", a.train_data, "--reward-method", "gt",
        "--global-batch-size", str(a.B), "--n-samples-per-prompt", str(a.G), "--max-prompt-length", "128",
        "--max-response-length", str(a.max_len), "--micro-batch-size", str(a.mbs), "--lr", str(a.lr),
        "--lr-warmup-fraction", "0", "--rollout-temperature", "1.0", "--rollout-top-p", "1.0",
        "--kl-loss-coef", "0", "--train-iters", "100000", "--seed", str(a.seed), "--output-dir", a.out_dir,
        "--overwrite", "--no-progress-bar",
    ] + shlex.split(a.extra)  # fmt: skip
    run = RLRun(parse_args(argv))
    n = a.B * a.G
    chan.send({"ready": True})
    step = 0
    while chan.wait():
        t0 = time.perf_counter()
        m = run.step(step)
        wall = time.perf_counter() - t0
        gen, rew, train = (m.get(f"perf/time_{k}", 0.0) for k in ("generate", "reward", "train"))
        chan.send(
            {
                "step_s": wall,
                "generate_s": gen,
                "reward_s": rew,
                "train_s": train,
                "other_s": wall - gen - rew - train,
                "tokens": m["rollout/response_length_mean"] * n,
                "max_len": m.get("rollout/response_length_max", 0),
                "reward": m["reward/mean"],
            }
        )
        step += 1


def trl_worker(a, chan: Channel) -> None:
    import datasets
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from megatron_corew import data

    tok = AutoTokenizer.from_pretrained(a.model)
    examples = data.load_examples(a.train_data, tok, 128)
    rows = [{"prompt": e.prompt_text, "ground_truth": e.ground_truth} for e in examples]
    for e in examples:  # TRL tokenizes the text itself: it must see the ids our engine generates from
        if tok(text=e.prompt_text)["input_ids"] != e.prompt_ids:
            raise SystemExit(f"row {e.index}: TRL's tokenization of the prompt differs from ours")
    n = a.B * a.G
    cfg = GRPOConfig(
        output_dir=a.out_dir,
        per_device_train_batch_size=a.mbs,
        gradient_accumulation_steps=n // a.mbs,
        num_generations=a.G,
        max_completion_length=a.max_len,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        num_iterations=1,
        epsilon=0.2,
        loss_type="dapo",  # token mean over the whole batch, as ours
        scale_rewards="group",
        learning_rate=a.lr,
        lr_scheduler_type="constant",
        weight_decay=0.01,
        max_grad_norm=1.0,
        bf16=False,
        fp16=False,
        use_cpu=True,
        activation_checkpointing=False,
        max_steps=100000,
        logging_steps=100000,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=a.seed,
        dataloader_num_workers=0,
        **json.loads(a.trl_config or "{}"),
    )
    trainer = GRPOTrainer(
        model=a.model, reward_funcs=gt_reward, args=cfg, train_dataset=datasets.Dataset.from_list(rows)
    )
    timers, counts = defaultdict(float), defaultdict(float)

    def timed(name, fn, after=None):
        def wrapper(*args, **kw):
            t = time.perf_counter()
            try:
                out = fn(*args, **kw)
            finally:
                timers[name] += time.perf_counter() - t
            if after is not None:
                after(out)
            return out

        return wrapper

    def count_tokens(out):
        counts["tokens"] += sum(len(c) for c in out[0])
        counts["max_len"] = max([counts["max_len"]] + [len(c) for c in out[0]])

    def count_reward(out):  # [samples, reward functions]
        counts["reward"] += float(out.sum(dim=1).mean())

    trainer._generate_single_turn = timed("generate", trainer._generate_single_turn, count_tokens)
    trainer._calculate_rewards = timed("reward", trainer._calculate_rewards, count_reward)
    trainer._generate_and_score_completions = timed("rollout", trainer._generate_and_score_completions)

    class Pace(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not chan.wait():
                chan.out.flush()
                os._exit(0)  # mid-training: nothing to save
            timers.clear()
            counts.clear()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            wall = time.perf_counter() - self.t0
            chan.send(
                {
                    "step_s": wall,
                    "generate_s": timers["generate"],
                    "reward_s": timers["reward"],
                    "train_s": wall - timers["rollout"],
                    "other_s": timers["rollout"] - timers["generate"] - timers["reward"],
                    "tokens": counts["tokens"],
                    "max_len": counts["max_len"],
                    "reward": counts["reward"],
                }
            )

    trainer.add_callback(Pace())
    chan.send({"ready": True})
    trainer.train()


# ---------------------------------------------------------------- parent
class Worker:
    def __init__(self, name: str, kind: str, argv: list[str], env: dict, log_path: str):
        self.name, self.kind, self.results = name, kind, []
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", kind] + argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        self.read()  # ready

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PROTO):
                return json.loads(line[len(PROTO) :])
        self.log.flush()
        tail = open(self.log_path).read()[-3000:]
        raise RuntimeError(f"{self.name} worker exited (code {self.proc.wait()}); its log ends:\n{tail}")

    def step(self) -> dict:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def summarize(results: list[dict], n: int) -> dict:
    """Per-round numbers -> medians (and min / max of the rate) over the rounds; ``n`` samples per step."""
    import statistics

    med = {
        k: statistics.median(r[k] for r in results) for k in ("step_s", "generate_s", "reward_s", "train_s", "other_s")
    }
    rates = [n / r["step_s"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {
        **med,
        "samples_per_s": statistics.median(rates),
        "samples_per_s_min": min(rates),
        "samples_per_s_max": max(rates),
        "tokens_per_s": statistics.median(r["tokens"] / r["step_s"] for r in results),
        "mean_len": tokens / (n * len(results)),
        "max_len": max(r["max_len"] for r in results),
        "reward": sum(r["reward"] for r in results) / len(results),
        "steps": len(results),
    }


def run_workload(name: str, a, work_dir: str) -> tuple[list[tuple[str, dict]], dict, tuple[float, float]]:
    """Both systems' workers, stepped in turns; returns (label, summary) rows, the spec and the load average
    (1 min) before and after the measured rounds."""
    spec = WORKLOADS[name]
    model = workload_model(a.model, spec["eos_scale"], work_dir, spec.get("dims"))
    threads = str(a.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONPATH=REPO)
    env["TOKENIZERS_PARALLELISM"] = "false"
    common = ["--model", model, "--train-data", a.train_data, "--seed", str(a.seed)]
    for k in ("B", "G", "max_len", "lr", "mbs"):
        common += [f"--{k.replace('_', '-')}", str(spec[k])]
    systems = [(f"TRL GRPOTrainer ({label})", "trl", [f"--trl-config={cfg}"]) for label, cfg in a.trl_variants]
    systems += [(f"ours ({label})", "ours", [f"--extra={flags}"]) for label, flags in a.ours_variants]
    workers = []
    try:
        for i, (label, kind, extra) in enumerate(systems):
            out = os.path.join(work_dir, f"{name}_{i}_{kind}")
            log = out + ".log"
            workers.append(Worker(label, kind, common + extra + ["--out-dir", out], env, log))
        for _ in range(a.warmup):
            for w in workers:
                w.step()
        load_before = os.getloadavg()[0]
        for r in range(a.rounds):
            for w in workers:  # A B A B ...: the systems take turns
                w.results.append(w.step())
            print(
                f"[{name}] round {r + 1}/{a.rounds} (load {os.getloadavg()[0]:.1f}): "
                + ", ".join(f"{w.name} {w.results[-1]['step_s']:.2f} s" for w in workers),
                flush=True,
            )
        load_after = os.getloadavg()[0]
    finally:
        for w in workers:
            w.close()
    n = spec["B"] * spec["G"]
    return [(w.name, summarize(w.results, n)) for w in workers], spec, (load_before, load_after)


def table(name: str, spec: dict, rows: list[tuple[str, dict]], load: tuple[float, float], threads: int) -> str:
    """The headline table (the systems' default configurations), then any other variants, vs TRL's defaults."""
    trl = rows[0][1]
    head = (
        f"### {name}: B {spec['B']} x G {spec['G']}, at most {spec['max_len']} tokens, lr {spec['lr']}, "
        f"micro-batch {spec['mbs']}"
        + (f", EOS row of lm_head x {spec['eos_scale']}" if spec["eos_scale"] else "")
        + (f", random {spec['dims']}-parameter Qwen3" if spec.get("dims") else "")
        + f"; {threads} threads per system, load average {load[0]:.1f} -> {load[1]:.1f}\n\n"
    )
    cols = (
        "| system | samples/s, median (min-max) | response tokens/s | vs TRL (samples/s) | step (s) | generate (s) "
        "| reward (s) | train (s) | other (s) | mean / max length | mean reward |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )

    def line(label, s):
        return (
            f"| {label} | {s['samples_per_s']:.1f} ({s['samples_per_s_min']:.1f}-{s['samples_per_s_max']:.1f}) "
            f"| {s['tokens_per_s']:.0f} | {s['samples_per_s'] / trl['samples_per_s']:.2f}x "
            f"| {s['step_s']:.3f} | {s['generate_s']:.3f} | {s['reward_s']:.3f} | {s['train_s']:.3f} "
            f"| {s['other_s']:.3f} | {s['mean_len']:.1f} / {s['max_len']:.0f} | {s['reward']:.3f} |"
        )

    defaults = [(label, s) for label, s in rows if label.endswith("(defaults)")]
    others = [(label, s) for label, s in rows if not label.endswith("(defaults)")]
    text = head + cols + "\n".join(line(label, s) for label, s in defaults) + "\n"
    if others:
        text += "\nOther configurations (not the defaults):\n\n" + cols
        text += "\n".join(line(label, s) for label, s in others) + "\n"
    return text


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "trl", "accelerate", "megatron-core"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--workloads", default="fixed,variable,25M", help=f"comma-separated, of {', '.join(WORKLOADS)}")
    p.add_argument("--rounds", type=int, default=6, help="measured steps per system (taken in turns)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps per system first")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads of each system, the same for both (default: all cores, as a user's run gets)",
    )
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--model", default=os.path.join(REPO, "assets/tiny/model"))
    p.add_argument("--train-data", default=os.path.join(REPO, "assets/tiny/data/train.parquet"))
    p.add_argument(
        "--ours-variant",
        action="append",
        default=None,
        metavar="LABEL=FLAGS",
        help='our configurations, each a label and extra train_rl.py flags (default: "defaults=")',
    )
    p.add_argument(
        "--trl-variant",
        action="append",
        default=None,
        metavar="LABEL=JSON",
        help='TRL configurations, each a label and extra GRPOConfig fields as JSON (default: "defaults={}"); the '
        "first is the reference of the vs-TRL column",
    )
    p.add_argument("--trl-config", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one round, no results file")
    p.add_argument("--work-dir", default=None, help="where workers write (default: a temp dir)")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks/results/vs_trl.md"))
    # worker-only
    for k in ("out-dir", "extra"):
        p.add_argument(f"--{k}", default="", help=argparse.SUPPRESS)
    for k, t in (("B", int), ("G", int), ("max-len", int), ("lr", float), ("mbs", int)):
        p.add_argument(f"--{k}", type=t, help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker:
        chan = Channel()
        (ours_worker if a.worker == "ours" else trl_worker)(a, chan)
        return 0

    import importlib.util

    if importlib.util.find_spec("trl") is None:
        print('bench_vs_trl: TRL is not installed (pip install -e ".[bench]"); nothing to compare, skipping')
        return 0
    for path, flag in ((os.path.join(a.model, "config.json"), "--model"), (a.train_data, "--train-data")):
        if not os.path.exists(path):
            print(f"bench_vs_trl: {flag}: {path} does not exist (python tools/make_tiny_task.py --out assets/tiny)")
            return 2
    a.ours_variants = [tuple(v.split("=", 1)) for v in (a.ours_variant or ["defaults="])]
    a.trl_variants = [tuple(v.split("=", 1)) for v in (a.trl_variant or ["defaults={}"])]
    names = ["smoke"] if a.smoke else a.workloads.split(",")
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        print(f"bench_vs_trl: --workloads: unknown {', '.join(unknown)}; valid: {', '.join(WORKLOADS)}")
        return 2
    if a.smoke:
        a.rounds, a.warmup = 1, 0
    work_dir = a.work_dir or tempfile.mkdtemp(prefix="bench_vs_trl_")
    os.makedirs(work_dir, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = machine()
    sections = []
    for name in names:
        rows, spec, load = run_workload(name, a, work_dir)
        text = table(name, spec, rows, load, a.threads)
        print("\n" + text, flush=True)
        sections.append(text)
    if a.smoke:
        return 0
    cmd = "python benchmarks/bench_vs_trl.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    with open(a.out, "w") as f:
        f.write(
            f"# bench_vs_trl.py: our RL step vs TRL GRPOTrainer, {started}\n\n"
            f"Machine: {load_before} at the start, {os.getloadavg()[0]:.1f} at the end (shared with other jobs).\n"
            f"Software: {versions()}. Command: `{cmd.strip()}`; {a.threads} torch thread(s) per system, "
            f"{a.warmup} warm-up step(s), then {a.rounds} steps per system taken in turns; rates are medians over "
            "the rounds (min-max in brackets).\n\n" + "\n".join(sections) + NOTES
        )
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
