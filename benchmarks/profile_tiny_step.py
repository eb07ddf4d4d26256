"""Where one RL step of the tiny task spends its time: generate / logprob / train / weight sync / other.

    python benchmarks/profile_tiny_step.py                       # assets/tiny, gt, 2 warm-up + 8 measured steps
    python benchmarks/profile_tiny_step.py --steps 12 --cprofile 30 -- --rollout-batch-size 64

It builds ``RLRun`` in-process with the README's tiny-task settings (B 16 x G 8, at most 48 tokens, micro-batch
64), runs warm-up steps, then times N steps with the step's own stage timers (``perf/time_*``: generate, teacher,
logprob, reward, train, weight_sync; other = the step's wall time minus those) and prints the median and min-max of
each, and the process's CPU time per step (``time.process_time``: on a machine shared with other jobs it moves
less than wall time). ``--cprofile K`` then runs the same number of steps again under cProfile (Python's deterministic profiler;
its hooks slow the step, so the timed steps run without it) and prints the K functions with the most own time and
the K with the most cumulative time: that is where per-step Python overhead shows. Flags after ``--`` go to
``train_rl.py`` (they override the defaults here).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

STAGES = ("generate", "teacher_generate", "logprob", "reward", "train", "weight_sync")


def build_run(a, extra: list[str]):
    from megatron_corew.arguments import parse_args
    from megatron_corew.train import RLRun

    argv = [
        "--hf-checkpoint", a.model, "--train-data", a.train_data, "--reward-method", a.method,
        "--global-batch-size", "16", "--n-samples-per-prompt", "8", "--max-prompt-length", "128",
        "--max-response-length", "48", "--micro-batch-size", "64", "--lr", "1e-4", "--train-iters", "100000",
        "--seed", str(a.seed), "--output-dir", a.out_dir, "--overwrite", "--no-progress-bar",
    ] + extra  # fmt: skip
    return RLRun(parse_args(argv))


def timed_steps(run, first: int, n: int) -> list[dict]:
    rows = []
    for step in range(first, first + n):
        t0, c0 = time.perf_counter(), time.process_time()
        m = run.step(step)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        row = {s: m.get(f"perf/time_{s}", 0.0) for s in STAGES}
        row["other"] = wall - sum(row.values())
        row["step"] = wall
        row["step CPU time"] = cpu  # this process's CPU seconds: less sensitive to other jobs than wall time
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    cols = [s for s in STAGES if any(r[s] for r in rows)] + ["other", "step", "step CPU time"]
    step = statistics.median(r["step"] for r in rows)
    lines = ["| stage | median (s) | min - max (s) | share of the median step |", "|---|---:|---:|---:|"]
    for c in cols:
        v = [r[c] for r in rows]
        med = statistics.median(v)
        lines.append(f"| {c} | {med:.4f} | {min(v):.4f} - {max(v):.4f} | {100 * med / step:.0f}% |")
    return "\n".join(lines)


def profile(run, first: int, n: int, top: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for step in range(first, first + n):
        run.step(step)
    prof.disable()
    out = []
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(key).print_stats(top)
        out.append(f"--- cProfile over {n} steps, top {top} by {key} ---\n" + buf.getvalue().split("\n\n", 2)[-1])
    return "\n".join(out)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(REPO, "assets/tiny/model"))
    p.add_argument("--train-data", default=os.path.join(REPO, "assets/tiny/data/train.parquet"))
    p.add_argument("--method", default="gt", help="--reward-method (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=8, help="timed steps (the table's median is over these)")
    p.add_argument("--cprofile", type=int, default=0, metavar="K", help="then profile as many steps; print top K")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args(argv)
    for path, flag in ((os.path.join(a.model, "config.json"), "--model"), (a.train_data, "--train-data")):
        if not os.path.exists(path):
            print(
                f"profile_tiny_step: {flag}: {path} does not exist (python tools/make_tiny_task.py --out assets/tiny)"
            )
            return 2
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    a.out_dir = tempfile.mkdtemp(prefix="profile_tiny_step_")
    run = build_run(a, extra)
    timed_steps(run, 0, a.warmup)
    rows = timed_steps(run, a.warmup, a.steps)
    load = os.getloadavg()[0]
    print(
        f"\n{a.steps} steps after {a.warmup} warm-up, {torch.get_num_threads()} torch threads, "
        f"load average {load:.1f}, extra flags: {' '.join(extra) or '(none)'}\n"
    )
    print(table(rows), flush=True)
    if a.cprofile:
        print("\n" + profile(run, a.warmup + a.steps, a.steps, a.cprofile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
