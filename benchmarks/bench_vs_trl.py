"""Our RL step (train_rl.py's ``RLRun.step``) against TRL's ``GRPOTrainer`` on one CPU machine, side by side.

  python benchmarks/bench_vs_trl.py                         # both workloads, alternating rounds, writes results
  python benchmarks/bench_vs_trl.py --workloads variable --rounds 4 --ours-variant "packed=--micro-batch-layout packed"
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
p90 ~115, ~5% reach the limit).

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
    "smoke": dict(B=2, G=4, max_len=16, eos_scale=None, lr=1e-4, mbs=4),
}
PROTO = "@@bench "
NOTES = """
Shared settings: the same checkpoint and training prompts (the same chat-rendered token ids, checked), B prompts x G
samples, the same maximum response length, temperature 1, top-p 1 (TRL: top-k 0), KL off (`--kl-loss-coef 0` /
`beta=0`), one optimizer step per rollout batch (no old-policy log-prob pass in either), micro-batch 64, the same
lr, clip 0.2, weight decay 0.01, grad clip 1, fp32, CPU, and the same reward: our ground-truth grader
(`rewards.grading.grade`) is TRL's `reward_func`. Workloads: fixed = the tiny task (responses ~18 tokens, narrow);
variable = the tiny checkpoint with its EOS row of `lm_head` scaled by 0.3, so that the model goes on after its
answer until a rarer EOS (lengths: median ~46, p90 ~115, ~5% reach the 384 limit). lr 1e-6 there keeps the length
distribution steady over the run.

How to read it: samples/s = B x G x steps / their total step time; response tokens/s = generated tokens / the same
time; step, generate, reward, train and other are means per step. Ours: `perf/time_generate`, `perf/time_reward`,
`perf/time_train` of `RLRun.step`, other = the rest (weight sync into the engine). TRL: `_generate_single_turn`
(generate), `_calculate_rewards` (reward), the rest of `_generate_and_score_completions` (other: tokenize, decode,
pad, advantages), and the remainder of the optimizer step from `on_step_begin` to `on_step_end` (train: forward,
backward, optimizer). Logging is outside both.

Variants: TRL (defaults) is `GRPOTrainer` with the shared settings above (plain `generate`, padded training);
TRL (continuous batching) adds `use_transformers_continuous_batching=True` (transformers' paged continuous-batching
generation). Ours (defaults) is `train_rl.py` with its default layout (embedded engine in batches of
`--rollout-batch-size 64`, padded micro-batches); ours (fast) adds `--rollout-drop-finished --rollout-batch-size 128
--micro-batch-layout packed`: finished sequences leave the decode batch, all 128 samples decode together, and
training packs whole sequences into rows (no padding). These flags are not the default because they change the
samples of a seeded run (a smaller decode batch rounds its matmuls differently, and one batch of 128 draws from the
sampler in another order); default seeded runs stay bitwise identical.

This machine is shared (2 cores, load 6-25 while measuring): a step's wall time varies by 2x from one moment to
the next. The systems take turns step by step, so both meet the same load on average; read the ratios.
"""


# ---------------------------------------------------------------- shared set-up
def workload_model(base: str, eos_scale: float | None, work_dir: str) -> str:
    """The checkpoint a workload runs: the tiny model, or a copy whose EOS row of lm_head is scaled."""
    if eos_scale is None:
        return base
    import shutil

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


def summarize(w: Worker, n: int) -> dict:
    rs = w.results
    total = sum(r["step_s"] for r in rs)
    mean = {k: sum(r[k] for r in rs) / len(rs) for k in ("step_s", "generate_s", "reward_s", "train_s", "other_s")}
    tokens = sum(r["tokens"] for r in rs)
    return {
        **mean,
        "samples_per_s": n * len(rs) / total,
        "tokens_per_s": tokens / total,
        "mean_len": tokens / (n * len(rs)),
        "max_len": max(r["max_len"] for r in rs),
        "reward": sum(r["reward"] for r in rs) / len(rs),
        "steps": len(rs),
    }


def run_workload(name: str, a, work_dir: str) -> tuple[list[tuple[str, dict]], dict]:
    spec = WORKLOADS[name]
    model = workload_model(a.model, spec["eos_scale"], work_dir)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONPATH=REPO, TOKENIZERS_PARALLELISM="false")
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
        for r in range(a.rounds):
            for w in workers:  # A B A B ...: the systems take turns
                w.results.append(w.step())
            print(
                f"[{name}] round {r + 1}/{a.rounds}: "
                + ", ".join(f"{w.name} {w.results[-1]['step_s']:.2f} s" for w in workers),
                flush=True,
            )
    finally:
        for w in workers:
            w.close()
    n = spec["B"] * spec["G"]
    return [(w.name, summarize(w, n)) for w in workers], spec


def table(name: str, spec: dict, rows: list[tuple[str, dict]]) -> str:
    trl = rows[0][1]
    head = (
        f"### {name}: B {spec['B']} x G {spec['G']}, at most {spec['max_len']} tokens, lr {spec['lr']}, "
        f"micro-batch {spec['mbs']}"
        + (f", EOS row of lm_head x {spec['eos_scale']}" if spec["eos_scale"] else "")
        + "\n\n| system | samples/s | response tokens/s | vs TRL (samples/s) | step (s) | generate (s) | reward (s) "
        "| train (s) | other (s) | mean / max length | mean reward |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {label} | {s['samples_per_s']:.1f} | {s['tokens_per_s']:.0f} | {s['samples_per_s'] / trl['samples_per_s']:.2f}x "
        f"| {s['step_s']:.3f} | {s['generate_s']:.3f} | {s['reward_s']:.3f} | {s['train_s']:.3f} | {s['other_s']:.3f} "
        f"| {s['mean_len']:.1f} / {s['max_len']:.0f} | {s['reward']:.3f} |"
        for label, s in rows
    ]
    return head + "\n".join(lines) + "\n"


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
    p.add_argument("--workloads", default="fixed,variable")
    p.add_argument("--rounds", type=int, default=6, help="measured steps per system (alternating)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps per system first")
    p.add_argument("--threads", type=int, default=2, help="torch threads per worker (OMP_NUM_THREADS)")
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
    if a.smoke:
        a.rounds, a.warmup = 1, 0
    work_dir = a.work_dir or tempfile.mkdtemp(prefix="bench_vs_trl_")
    os.makedirs(work_dir, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = machine()
    sections = []
    for name in names:
        rows, spec = run_workload(name, a, work_dir)
        text = table(name, spec, rows)
        print("\n" + text, flush=True)
        sections.append(text)
    if a.smoke:
        return 0
    cmd = "python benchmarks/bench_vs_trl.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    with open(a.out, "w") as f:
        f.write(
            f"# bench_vs_trl.py: our RL step vs TRL GRPOTrainer, {started}\n\n"
            f"Machine: {load_before} at the start, {os.getloadavg()[0]:.1f} at the end (shared with other jobs).\n"
            f"Software: {versions()}. Command: `{cmd.strip()}`; {a.threads} torch thread(s) per worker, "
            f"{a.warmup} warm-up step(s), then {a.rounds} steps per system taken in turns.\n\n"
            + "\n".join(sections)
            + NOTES
        )
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
