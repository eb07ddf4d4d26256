"""Step time of Co-rewarding-II: synchronous vs --async-rollout (pipeline) vs --teacher-prefetch vs fully-async.

    python benchmarks/bench_async.py                        # tiny model, two SGLang CPU servers (policy + teacher)
    python benchmarks/bench_async.py --backend embedded --steps 6 --out gpu_results/async_gpu.md   # on a GPU

Each mode is one train_rl.py run that launches its own policy and teacher SGLang server (--sglang-teacher-engines
1); the table compares the mean step time of steps 2..N (step 1 has nothing to overlap with) side by side with
the synchronous run, and writes benchmarks/results/async_cpu.md (machine, date, load). On a shared CPU the
trainer and both servers compete for the same cores, so overlap can show no gain there: the numbers are what they
are. On CPU the servers need the import stubs (tests/sglang_stubs.py) and the venv of tools/install_sglang.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = {
    "synchronous": [],
    "async (staleness 1)": ["--async-rollout", "--max-staleness", "1"],
    "async + teacher prefetch": ["--async-rollout", "--max-staleness", "1", "--teacher-prefetch"],
    "fully-async (staleness 1)": ["--async-rollout", "--async-mode", "fully-async", "--max-staleness", "1"],
}


def run_mode(a, name: str, flags: list[str], root: str, stubs: str | None) -> dict:
    out = os.path.join(root, name.split()[0].replace("-", "_") + ("_tp" if "prefetch" in name else ""))
    cmd = [sys.executable, os.path.join(REPO, "train_rl.py")]
    cmd += ["--hf-checkpoint", a.model, "--train-data", a.data, "--reward-method", "corewarding_2"]
    cmd += ["--global-batch-size", str(a.global_batch_size), "--n-samples-per-prompt", str(a.n_samples)]
    cmd += ["--max-prompt-length", "128", "--max-response-length", str(a.max_response_length)]
    cmd += ["--micro-batch-size", "16", "--lr", "1e-4", "--train-iters", str(a.steps), "--eval-interval", "0"]
    cmd += ["--output-dir", out, "--overwrite", "--no-progress-bar", "--seed", "1234"]
    if a.backend == "sglang":
        cmd += ["--rollout-backend", "sglang", "--sglang-num-engines", "1", "--sglang-teacher-engines", "1"]
        cmd += ["--sglang-startup-timeout", "600", "--sglang-device", a.device]
        cmd += ["--sglang-extra-pythonpath", stubs] if stubs else []
    cmd += flags
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS=str(a.threads))
    t0 = time.perf_counter()
    with open(out + ".log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=a.timeout)
        finally:
            try:  # the servers the run launched, if it died before stopping them
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{name}: train_rl.py exited {rc}; see {out}.log")
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    rows = [r for r in rows if "train/loss" in r]
    later = rows[1:] or rows
    mean = lambda key: sum(r.get(key, 0.0) for r in later) / len(later)  # noqa: E731
    return {
        "step_s": mean("perf/time_step"),
        "generate_s": mean("perf/time_generate"),
        "teacher_s": mean("perf/time_teacher_generate"),
        "train_s": mean("perf/time_train"),
        "sync_s": mean("perf/time_weight_sync"),
        "staleness": max(r.get("rollout/staleness_max", 0) for r in rows),
        "label_staleness": max(r.get("rollout/teacher_label_staleness", 0) for r in rows),
        "wall_s": wall,
        "label_acc": [r.get("pseudo/label_acc", float("nan")) for r in rows],
        "reward": [r.get("reward/mean", float("nan")) for r in rows],
        "token_age": max(r.get("rollout/token_age_max", r.get("rollout/staleness_max", 0)) for r in rows),
        "steps": len(rows),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(REPO, "assets", "tiny", "model"))
    p.add_argument("--data", default=os.path.join(REPO, "assets", "tiny", "data", "train.parquet"))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--global-batch-size", type=int, default=4)
    p.add_argument("--n-samples", type=int, default=4)
    p.add_argument("--max-response-length", type=int, default=32)
    p.add_argument("--device", default="cpu", help="where the SGLang servers run")
    p.add_argument(
        "--backend",
        choices=["sglang", "embedded"],
        default="sglang",
        help="embedded: policy and teacher are HF engines in the trainer process (the GPU session's wheels have no "
        "SGLang)",
    )
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the trainer")
    p.add_argument("--timeout", type=int, default=900, help="seconds per mode")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "async_cpu.md"))
    a = p.parse_args(argv)
    stubs = None
    if a.device == "cpu" and a.backend == "sglang":
        sys.path.insert(0, os.path.join(REPO, "tests"))
        from sglang_stubs import write_stubs

        stubs = write_stubs(tempfile.mkdtemp(prefix="sglang-stubs-"))
    root = tempfile.mkdtemp(prefix="bench_async-")
    load_before = os.getloadavg()
    res = {name: run_mode(a, name, flags, root, stubs) for name, flags in MODES.items()}
    load_after = os.getloadavg()
    base = res["synchronous"]["step_s"]
    head = (
        "| mode | mean step s (steps 2..N) | vs sync | generate wait s | teacher s | train s | weight sync s "
        "| steps/s | max staleness | max token age | label staleness | label accuracy per step | reward per step "
        "| run wall s |"
    )
    lines = [head, "|" + "---|" * 14]
    per_step = lambda xs: " ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    for name, r in res.items():
        lines.append(
            f"| {name} | {r['step_s']:.2f} | {base / r['step_s']:.2f}x | {r['generate_s']:.2f} | {r['teacher_s']:.2f} "
            f"| {r['train_s']:.2f} | {r['sync_s']:.2f} | {1 / r['step_s']:.3f} | {r['staleness']:g} "
            f"| {r['token_age']:g} | {r['label_staleness']:g} | {per_step(r['label_acc'])} | {per_step(r['reward'])} "
            f"| {r['wall_s']:.0f} |"
        )
    table = "\n".join(lines)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    machine = (
        f"{platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s) visible, "
        f"{a.backend} rollouts (SGLang device {a.device}), GPU {gpu}, trainer OMP_NUM_THREADS={a.threads}; load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after (1 min)"
    )
    setup = (
        f"Co-rewarding-II, {a.model}, {a.steps} steps, {a.global_batch_size} prompts x {a.n_samples} samples, "
        f"up to {a.max_response_length} new tokens; "
        + (
            "one policy + one teacher SGLang server per run"
            if a.backend == "sglang"
            else "policy and teacher as embedded HF engines in rank 0"
        )
    )
    print(table)
    print(machine)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(f"# Rollout pipelining step time ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n")
        f.write(f"Command: `python benchmarks/bench_async.py {' '.join(argv or sys.argv[1:])}`\n\n")
        f.write(f"Setup: {setup}.\n\nMachine: {machine}.\n\n{table}\n\n")
        f.write(
            "`generate wait s` is the time the step waited for its rollouts (with --async-rollout they were made "
            "while the previous step trained); `teacher s` the teacher stage (EMA update, sync, and the wait for "
            "its rollouts); fully-async interrupts the requests in flight at each weight sync and resumes them on the "
            "new weights (`max token age`: trainer version minus the oldest token's). See docs/ASYNC.md.\n"
        )
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
