"""The combination matrix: train_rl.py launched as a user would (torchrun for 2 ranks) on a pairwise design over the
features a user turns on together, each run classified as trained, refused or failed, plus twin runs where an
independent check exists (packed vs padded, async staleness 0 vs synchronous, --offload-train vs plain).

    python tools/combination_matrix.py                        # every cell, table to stdout and docs/COMBINATIONS.md
    python tools/combination_matrix.py --only DP2 --no-doc    # cells whose id contains DP2

A cell is "trained" when it exits 0 with finite metrics, some step with non-zero reward variance (from its
--rollout-dump, not the run's own metrics) and a non-zero gradient on every such step; "refused" when it exits 2
with one error line naming the flags of the combination (a documented refusal). Anything else is a failure.
The bundle is the warm-started tiny task (tools/make_tiny_task.py), built when --bundle does not hold one."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tools.pairwise import all_pairs  # noqa: E402

# factor -> value -> train_rl.py flags
FLAGS: dict[str, dict[str, list[str]]] = {
    "layout": {"padded": ["--micro-batch-layout", "padded"], "packed": ["--micro-batch-layout", "packed"]},
    "is": {"none": [], "tis": ["--rollout-is", "tis"], "mis": ["--rollout-is", "mis"]},
    "async": {
        "off": [],
        "s1": ["--async-rollout", "--max-staleness", "1"],
        "fa2": ["--async-rollout", "--async-mode", "fully-async", "--max-staleness", "2"],
    },
    "prefetch": {"off": [], "on": ["--teacher-prefetch"]},
    "dynamic": {"off": [], "on": ["--dynamic-sampling"]},
    "steps_per_rollout": {"1": [], "2": ["--num-steps-per-rollout", "2"]},
    "offload": {"off": [], "offload": ["--offload-train"], "colocate": ["--colocate"]},
    "parallel": {
        "TP1": [],
        "TP2": ["--tensor-model-parallel-size", "2"],
        "PP2": ["--pipeline-model-parallel-size", "2"],
        "DP2": ["--use-distributed-optimizer"],
    },
    "method": {m: ["--reward-method", m] for m in ("gt", "corewarding_1", "corewarding_2", "entropy")},
}
FACTORS = {name: list(values) for name, values in FLAGS.items()}
# values outside the pairwise design, used by twins and extra cells only
EXTRA_FLAGS = {
    ("async", "s0"): ["--async-rollout", "--max-staleness", "0"],
    ("parallel", "TP2+SP"): ["--tensor-model-parallel-size", "2", "--sequence-parallel"],
    ("layout", "packed40"): ["--micro-batch-layout", "packed", "--max-tokens-per-gpu", "40"],
}
TEACHER_METHODS = ("corewarding_2",)
STEPS = 3  # train iterations per cell: staleness 2 first shows at step 3
TIMEOUT_S = 300
RUN_FLAGS = ["--global-batch-size", "4", "--n-samples-per-prompt", "4", "--max-response-length", "24",
             "--lr", "1e-3", "--eval-interval", "0", "--no-progress-bar", "--rollout-dump", "--seed", "1234"]  # fmt: skip


def forbidden(row: dict) -> str | None:
    """The documented start-up refusals among the factors (megatron_corew/rollout/pipeline.py); pairwise."""
    ahead = row.get("async", "off") != "off" or row.get("prefetch") == "on"
    if row.get("prefetch") == "on" and "method" in row and row["method"] not in TEACHER_METHODS:
        return "--teacher-prefetch needs a method with an EMA teacher"
    if ahead and row.get("dynamic") == "on":
        return "pipelined rollouts and --dynamic-sampling do not combine (refill rounds are generated on demand)"
    if ahead and row.get("offload") == "colocate":
        return "pipelined rollouts and --colocate do not combine (the engines give their memory to the trainer)"
    return None


@dataclass
class Cell:
    """One configuration: a value per factor, what it should do, and extra flags (twins, extra cells)."""

    values: dict
    expect: str = "trained"  # or "refused"
    note: str = ""
    tag: str = ""  # "twin of <id>" / "extra" / "" for design rows
    pair: tuple = ()  # a refusal cell: the excluded pair ((factor, value), (factor, value)) it sets
    names: tuple = ()  # flags its refusal line must name besides the pair's

    @property
    def id(self) -> str:
        v = self.values
        parts = [v["layout"], v["is"], "sync" if v["async"] == "off" else v["async"]]
        parts += ["pf"] if v["prefetch"] == "on" else []
        parts += ["ds"] if v["dynamic"] == "on" else []
        parts += [f"n{v['steps_per_rollout']}"]
        parts += [] if v["offload"] == "off" else [v["offload"]]
        return "-".join(parts + [v["parallel"], v["method"]])

    @property
    def nproc(self) -> int:
        return 1 if self.values["parallel"] == "TP1" else 2

    def flags(self) -> list[str]:
        out = []
        for f, v in self.values.items():
            out += FLAGS[f][v] if v in FLAGS[f] else EXTRA_FLAGS[(f, v)]
        return out


def design() -> tuple[list[Cell], list[Cell]]:
    """The pairwise rows (expected to train) and one refusal cell per excluded pair (the first design value of
    every other factor, the pair set)."""
    rows, excluded = all_pairs(FACTORS, forbidden)
    cells = [Cell(r) for r in rows]
    refusals = []
    for pair, why in excluded.items():
        row = dict(pair)
        for f, vs in FACTORS.items():  # the first value of each other factor that refuses nothing else
            if f not in row:
                row[f] = next(v for v in vs if not any(forbidden({a: row[a], f: v}) for a in row))
        refusals.append(Cell({f: row[f] for f in FACTORS}, expect="refused", note=why, pair=pair))
    return cells, refusals


def extra_cells() -> list[Cell]:
    """Configurations beyond pairs that users run: TP 2 with --sequence-parallel (refused without Transformer
    Engine and CUDA, as on the CPU machines this matrix runs on); packed + TIS on DP 2 with a token budget of
    about one sequence per micro-batch (a rank gets an empty micro-batch)."""
    base = {f: vs[0] for f, vs in FACTORS.items()}
    return [
        Cell({**base, "parallel": "TP2+SP", "layout": "packed"}, expect="refused", tag="extra",
             note="no Transformer Engine / CUDA here", names=("--sequence-parallel",)),
        Cell({**base, "layout": "packed40", "is": "tis", "parallel": "DP2"}, tag="extra"),
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------- running one cell
def task_bundle(directory: str) -> dict:
    """The paths of a tools/make_tiny_task.py bundle (keys as the tests' bundles: model, train, train_rephrased)."""
    return {
        "model": os.path.join(directory, "model"),
        "train": os.path.join(directory, "data", "train.parquet"),
        "train_rephrased": os.path.join(directory, "data", "train_rephrased.parquet"),
    }


def tiny_task(directory: str) -> dict:
    from megatron_corew.demo.tiny_bundle import is_complete, make_tiny_task

    if not is_complete(directory):
        make_tiny_task(directory)
    return task_bundle(directory)


def warm_bundle(out_root: str) -> dict:
    """The tests' warm-started bundle (tests/helpers.py ``make_warm_bundle``, the ``warm_bundle`` fixture): the
    matrix the tests run and the table this tool writes see the same model. Built once under ``out_root``."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from helpers import make_warm_bundle

    root = os.path.abspath(os.path.join(out_root, "warm_bundle"))
    names = {"model": "model", **{k: f"{k}.parquet" for k in ("train", "train_rephrased", "val")}}
    if not os.path.exists(os.path.join(root, "train_rephrased.parquet")):
        shutil.rmtree(root + ".tmp", ignore_errors=True)
        make_warm_bundle(root + ".tmp")
        shutil.rmtree(root, ignore_errors=True)
        os.rename(root + ".tmp", root)
    return {k: os.path.join(root, v) for k, v in names.items()}


def train_args(cell: Cell, bundle: dict, out_dir: str, steps: int = STEPS) -> list[str]:
    args = ["--hf-checkpoint", bundle["model"], "--train-data", bundle["train"], "--output-dir", out_dir]
    if cell.values["method"] == "corewarding_1":
        args += ["--train-data-rephrased", bundle["train_rephrased"]]
    return args + ["--train-iters", str(steps)] + RUN_FLAGS + cell.flags()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, args: list[str]) -> list[str]:
    if nproc == 1:
        return [sys.executable, "train_rl.py", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_port", str(_free_port()), "train_rl.py", *args]  # fmt: skip


def reproduction(cell: Cell, bundle: dict | None = None, out_dir: str = "runs/cell") -> str:
    """The one-line command a user runs to see the cell's outcome (paths of the bundle the default run builds)."""
    head = ["python"] if cell.nproc == 1 else ["torchrun", "--nproc_per_node", str(cell.nproc)]
    w = "runs/combinations/warm_bundle/"
    default = {"model": w + "model", "train": w + "train.parquet", "train_rephrased": w + "train_rephrased.parquet"}
    return shlex.join(head + ["train_rl.py", *train_args(cell, bundle or default, out_dir)])


@dataclass
class Result:
    cell: Cell
    outcome: str  # trained / refused / FAIL: <why>
    seconds: float
    cpu_s: float = 0.0
    steps: list = field(default_factory=list)  # per step: reward mean, reward std, loss, grad norm
    line: str = ""  # the refusal line or the last error line
    out_dir: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == self.cell.expect


def _run(cmd: list[str], timeout: int) -> tuple[int | None, str]:
    """Run in its own session with output to a file; kill the whole group at the end (no stray ranks). The run's
    CPU seconds (all its processes) are in :data:`LAST_CPU_S`: wall time depends on the machine's load, this not."""
    global LAST_CPU_S
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        LAST_CPU_S = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        log.seek(0)
        return rc, log.read()


LAST_CPU_S = 0.0
EXCEPTION_LINE = re.compile(r"^(?:\[rank\d+\]: )?((?:[\w.]+\.)?\w*(?:Error|Exception)\w*: .*)")
ERROR_LINE = re.compile(r"^(?:\S+: )?error: .+")


def _error_lines(output: str) -> list[str]:
    seen = []
    for line in output.splitlines():
        line = line.strip()
        if ERROR_LINE.match(line) and line not in seen:
            seen.append(line)
    return seen


def read_steps(out_dir: str) -> list[dict]:
    """Per trained step: the logged loss / grad norm and, from the rollout dump, the reward mean and the largest
    within-group reward standard deviation (a group: the samples of one prompt and view)."""
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    steps = []
    for m in metrics:
        s = int(m["step"])
        groups: dict = {}
        dumps = sorted(n for n in os.listdir(os.path.join(out_dir, "rollouts")) if n.startswith(f"step_{s:06d}"))
        for name in dumps:
            with open(os.path.join(out_dir, "rollouts", name)) as f:
                for line in f:
                    r = json.loads(line)
                    groups.setdefault((name, r["index"], r["view"]), []).append(float(r["reward"]))
        std = max((_std(g) for g in groups.values()), default=0.0)
        rewards = [x for g in groups.values() for x in g]
        steps.append(
            {
                "step": s,
                "reward_mean": sum(rewards) / max(len(rewards), 1),
                "reward_std_max": std,
                "loss": m.get("train/loss"),
                "grad_norm": m.get("train/grad_norm"),
                "nonfinite": [k for k, v in m.items() if isinstance(v, float) and not math.isfinite(v)],
                "responses": [r for name in dumps for r in _responses(out_dir, name)],
                "rewards": rewards,
                "metrics": m,
            }
        )
    return steps


def _std(xs: list[float]) -> float:
    mu = sum(xs) / len(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / len(xs))


def _responses(out_dir: str, name: str) -> list[str]:
    with open(os.path.join(out_dir, "rollouts", name)) as f:
        return [json.loads(line)["response"] for line in f]


def torchrun_exit(rc: int | None, output: str) -> tuple[int | None, str]:
    """torchrun exits 1 with its own traceback when a rank fails; when the ranks exited 2 (a start-up refusal; a
    rank torchrun stopped first shows -15) that is the run's exit and output, the launcher's report cut off."""
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", output)
    cut = output.rfind("Traceback (most recent call last):")
    if rc == 1 and "2" in codes and set(codes) <= {"2", "-15"} and "ChildFailedError" in output[cut:]:
        return 2, output[:cut]
    return rc, output


def classify(cell: Cell, rc: int | None, output: str, out_dir: str, steps: int = STEPS) -> tuple[str, list, str]:
    rc, output = torchrun_exit(rc, output)
    errors = _error_lines(output)
    last = errors[-1] if errors else ""
    if rc is None:
        return "FAIL: timeout", [], last
    if "Traceback" in output:
        causes = [m.group(1) for m in map(EXCEPTION_LINE.match, output.splitlines()) if m]
        causes = [c for c in causes if not c.startswith(("ChildFailedError", "torch.distributed.elastic"))]
        return f"FAIL: traceback (rc {rc})", [], (causes[0] if causes else last)[:300]
    if rc == 2:
        if len(errors) != 1:
            return f"FAIL: exit 2 with {len(errors)} error lines", [], last
        return "refused", [], errors[0]
    if rc != 0:
        return f"FAIL: exit {rc}", [], last
    try:
        got = read_steps(out_dir)
    except (OSError, ValueError, KeyError) as e:
        return f"FAIL: unreadable metrics or rollout dump ({e})", [], last
    if len(got) != steps:
        return f"FAIL: {len(got)} of {steps} steps logged", got, last
    for s in got:
        if s["nonfinite"] or s["grad_norm"] is None or not math.isfinite(s["grad_norm"]):
            return f"FAIL: non-finite metrics at step {s['step']} ({', '.join(s['nonfinite'][:3])})", got, last
        if s["reward_std_max"] > 0 and s["grad_norm"] == 0:
            return f"FAIL: zero gradient at step {s['step']} despite reward variance", got, last
        if s["metrics"].get("train/skipped_updates", 0):
            return f"FAIL: skipped update at step {s['step']}", got, last
    if not any(s["reward_std_max"] > 0 and s["grad_norm"] > 0 for s in got):
        return "FAIL: no step with reward variance and a gradient (no evidence)", got, last
    return "trained", got, last


def run_cell(cell: Cell, bundle: dict, out_root: str, steps: int = STEPS, timeout: int = TIMEOUT_S) -> Result:
    out_dir = os.path.join(out_root, cell.id + (f"~{cell.tag.split()[0]}" if cell.tag else ""))
    os.makedirs(out_root, exist_ok=True)
    for _ in range(3):  # torchrun's port can be taken between choosing and binding it: a launcher race, rerun
        shutil.rmtree(out_dir, ignore_errors=True)
        t0 = time.monotonic()
        rc, output = _run(launch(cell.nproc, train_args(cell, bundle, out_dir, steps)), timeout)
        seconds = time.monotonic() - t0
        if "EADDRINUSE" not in output:
            break
    outcome, got, line = classify(cell, rc, output, out_dir, steps)
    if cell.expect == "refused" and outcome == "refused":
        flags = [FLAGS[f][v][0] for f, v in cell.pair] + list(cell.names)
        wanted = [fl for fl in flags if fl not in line]
        if wanted:
            outcome = f"FAIL: refusal line does not name {' '.join(wanted)}"
    if not outcome.startswith(("trained", "refused")):
        with open(out_dir + ".log", "w") as f:
            f.write(output)
    return Result(cell, outcome, seconds, LAST_CPU_S, got, line, out_dir)


# ------------------------------------------------------------------------------------------------------ the twins
@dataclass
class Twin:
    """An independent check: the same run with one factor changed must give the same numbers."""

    name: str
    factor: str
    base_value: str
    twin_value: str
    bitwise: bool
    tolerance: float = 0.0


TWINS = [
    Twin("packed vs padded", "layout", "packed", "padded", bitwise=False, tolerance=1e-5),
    Twin("async staleness 0 vs synchronous", "async", "off", "s0", bitwise=True),
    Twin("--offload-train vs plain", "offload", "offload", "off", bitwise=True),
]


def twin_candidate(twin: Twin, cell: Cell) -> bool:
    """A design cell with the twin's base value (without refill rounds, colocation or prefetch for the async twin,
    which could not take --async-rollout)."""
    v = cell.values
    if cell.tag or v[twin.factor] != twin.base_value:
        return False
    return twin.factor != "async" or (v["dynamic"], v["offload"], v["prefetch"]) == ("off", "off", "off")


def twin_base(twin: Twin, results: list[Result]) -> Result | None:
    """The first trained candidate."""
    return next((r for r in results if r.outcome == "trained" and twin_candidate(twin, r.cell)), None)


def compare(twin: Twin, a: Result, b: Result) -> tuple[bool, str]:
    """Loss and grad norm of every step whose rollouts and rewards are identical in both runs (all of them for a
    bitwise twin); the compared steps must carry a gradient and reward variance."""
    if b.outcome != "trained":
        return False, f"twin {b.outcome}"
    worst, compared = 0.0, []
    for x, y in zip(a.steps, b.steps):
        if (x["responses"], x["rewards"]) != (y["responses"], y["rewards"]):
            if twin.bitwise:
                return False, f"step {x['step']}: rollouts or rewards differ"
            # weights equal within tolerance may change a later sample, or a reward the model computes (entropy:
            # a 1e-7 difference over a group std of 0.01 moves the advantages by 1e-5): stop comparing there
            break
        if not (x["grad_norm"] > 0 and x["reward_std_max"] > 0):
            continue
        for k in ("loss", "grad_norm"):
            d = abs(x[k] - y[k])
            worst = max(worst, d)
            if (twin.bitwise and x[k] != y[k]) or d > twin.tolerance * max(1.0, abs(x[k])):
                return False, f"step {x['step']} {k}: {x[k]!r} vs {y[k]!r}"
        compared.append(x["step"])
    if not compared:
        return False, "no compared step with a gradient and reward variance"
    how = "bitwise" if twin.bitwise else f"max |diff| {worst:.1e} <= {twin.tolerance:g}"
    return True, f"steps {','.join(map(str, compared))} equal ({how})"


def twin_cell(twin: Twin, base: Cell) -> Cell:
    return Cell({**base.values, twin.factor: twin.twin_value}, tag=f"twin of {base.id}")


# ------------------------------------------------------------------------------------------------------- the table
def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def table(results: list[Result], twins: list, header: str, bundle: dict | None = None) -> str:
    cols = (
        "# | configuration | ranks | expected | outcome | reward mean / max group std per step | grad norm | s | CPU s"
    )
    lines = [header, "", f"| {cols} |", "|---" * (cols.count("|") + 1) + "|"]
    for i, r in enumerate(results, 1):
        rew = " ".join(f"{s['reward_mean']:.2f}/{s['reward_std_max']:.2f}" for s in r.steps) or "-"
        grad = " ".join(_fmt(s["grad_norm"]) for s in r.steps) or "-"
        name = r.cell.id + (f" ({r.cell.tag})" if r.cell.tag else "")
        outcome = r.outcome if r.ok else f"**{r.outcome}**"
        if r.line and not r.outcome == "trained":
            outcome += f": `{r.line.replace('|', '/')}`"
        lines.append(
            f"| {i} | {name} | {r.cell.nproc} | {r.cell.expect} | {outcome} | {rew} | {grad} | {r.seconds:.0f} | {r.cpu_s:.0f} |"
        )
    lines += ["", "Twin checks:", "", "| check | base | result |", "|---|---|---|"]
    for twin, a, _b, ok, why in twins:
        lines.append(f"| {twin.name} | {a.cell.id} | {'equal' if ok else '**DIFFERENT**'}: {why} |")
    fails = [r for r in results if not r.ok]
    lines += ["", f"Failures: {len(fails)}", ""]
    for r in fails:
        lines.append(f"- {r.cell.id}: {r.outcome} `{r.line}`\n  `{reproduction(r.cell)}`")
    lines += [
        "",
        "One cell again: `python tools/combination_matrix.py --only ID` (every cell whose id contains ID, and its twin).",
    ]
    return "\n".join(lines) + "\n"


DOC_HEAD = """# Combination matrix

`tools/combination_matrix.py` runs `train_rl.py` as a user would (torchrun for 2 ranks) on a pairwise design
(`tools/pairwise.py`: every pair of values of any two factors appears in at least one row) over

{factors}

on the warm-started tiny task (`make_warm_bundle` in `tests/helpers.py`, the tests' `warm_bundle`), {steps} steps of
4 prompts x 4 samples each. Pairs that start-up refuses by design are not in the rows; each is one refusal cell
instead, which must exit 2 with one line naming the flags. A trained cell must exit 0 with finite metrics, reward variance within some prompt's samples
(read from its `--rollout-dump`) and a non-zero gradient on every step that has it. Twin checks rerun a trained
cell with one factor changed and compare loss and gradient norm. The tests are `tests/test_combination_matrix.py`.

Regenerate: `python tools/combination_matrix.py` (writes this file).
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--bundle",
        default=None,
        help="a tools/make_tiny_task.py bundle (built when missing); default: the tests' warm bundle, built under OUT",
    )
    p.add_argument("--out", default="runs/combinations", help="run directories of the cells")
    p.add_argument("--only", default=None, help="run only the cells whose id contains this text")
    p.add_argument("--doc", default="docs/COMBINATIONS.md")
    p.add_argument("--no-doc", action="store_true", help="print the table only")
    p.add_argument("--timeout", type=int, default=TIMEOUT_S, help="seconds per run before it counts as a hang")
    a = p.parse_args(argv)

    bundle = warm_bundle(a.out) if a.bundle is None else tiny_task(a.bundle)
    cells, refusals = design()
    todo = [c for c in cells + extra_cells() + refusals if not a.only or a.only in c.id]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
    t0 = time.monotonic()
    results, twins = [], []

    def report(final: bool) -> str:
        """The table so far (rewritten after every run, so an interrupted matrix keeps what it measured)."""
        total, cpu = time.monotonic() - t0, sum(r.cpu_s for r in results)
        factors = "\n".join(f"- {f}: {', '.join(vs)}" for f, vs in FACTORS.items())
        head = DOC_HEAD.format(factors=factors, steps=STEPS) + (
            f"\n{len(results)} runs{'' if final else ' so far (interrupted)'}: {total / 60:.1f} min wall on "
            f"{os.cpu_count()} CPU cores at load average {os.getloadavg()[0]:.0f} (other jobs running), "
            f"{cpu / 60:.1f} CPU-minutes of the runs' processes, {time.strftime('%Y-%m-%d')}, commit {commit.strip()}.\n"
        )
        text = table(results, twins, head, bundle)
        if not a.no_doc and not a.only:
            with open(os.path.join(REPO, a.doc), "w") as f:
                f.write(text)
        return text

    for c in todo:
        r = run_cell(c, bundle, a.out, timeout=a.timeout)
        results.append(r)
        print(f"{len(results):3d}/{len(todo)} {c.id:60s} {r.outcome} ({r.seconds:.0f}s) {r.line}", flush=True)
        report(final=False)
    for twin in TWINS:
        base = twin_base(twin, results)
        if base is None:
            continue
        b = run_cell(twin_cell(twin, base.cell), bundle, a.out, timeout=a.timeout)
        results.append(b)
        ok, why = compare(twin, base, b)
        twins.append((twin, base, b, ok, why))
        print(f"twin {twin.name}: {'equal' if ok else 'DIFFERENT'} ({why})", flush=True)
        report(final=False)
    print(report(final=True))
    return 0 if all(r.ok for r in results) and all(t[3] for t in twins) else 1


if __name__ == "__main__":
    sys.exit(main())
