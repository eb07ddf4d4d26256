"""Megatron pretrain-style entry point: ``torchrun --nproc_per_node N train_rl.py --hf-checkpoint DIR ...``

Exit codes: 0 done, 2 bad input (one line naming the file, row, flag or checkpoint), 3 stopped on non-finite
updates, 128 + signal number when stopped by SIGINT/SIGTERM (the last good checkpoint is printed).
"""

import json
import os
import sys


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))


def _claim_dirs(args) -> list[str]:
    """Rank 0 locks --output-dir and --save (and a separate --save-hf) and checks the output and checkpoint
    directories are this run's; raises LockHeld / UsedDirectory."""
    from megatron_corew.utils import run_dir, run_lock
    from megatron_corew.validation import hf_export_root

    dirs = [("--output-dir", args.output_dir)]
    if args.save:
        dirs.append(("--save", args.save))
    hf = hf_export_root(args)
    if hf and not os.path.realpath(hf).startswith(os.path.realpath(args.output_dir) + os.sep):
        dirs.append(("--save-hf", hf))
    notes = run_lock.lock_dirs(dirs)
    note = run_dir.claim(args.output_dir, resuming=bool(args.load), overwrite=args.overwrite)
    save_note = run_dir.claim_save(args.save, load=args.load, overwrite=args.overwrite) if args.save else None
    return notes + [n for n in (note, save_note) if n]


def main(argv=None) -> int:
    from megatron_corew.arguments import parse_args
    from megatron_corew.utils import lifecycle

    args = parse_args(argv)  # exit 2 on a bad flag, before anything is built
    lifecycle.set_cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), quiet=_rank() != 0)

    from checkpoints_conversion.config import ModelConfigError
    from checkpoints_conversion.hf_io import CheckpointError
    from megatron_corew.data import DataError
    from megatron_corew.policy import parallel
    from megatron_corew.rewards.spec import RewardMethodError
    from megatron_corew.rollout.sglang.http import SGLangError
    from megatron_corew.train import RLRun
    from megatron_corew.utils import run_dir, run_lock

    def fail(e, code=2) -> int:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return code

    if _rank() == 0:
        try:
            for note in _claim_dirs(args):
                print(note, file=sys.stderr, flush=True)
        except (run_lock.LockHeld, run_dir.UsedDirectory) as e:
            return fail(e)
    lifecycle.watch_launcher(on_orphan=run_lock.release_all)
    try:
        run = RLRun(args)
    except (ModelConfigError, DataError, CheckpointError) as e:
        return fail(e)
    except SGLangError as e:
        return fail(f"{e} (--rollout-backend sglang)")
    except KeyboardInterrupt:
        return fail("stopped by SIGINT during start-up (nothing was trained)", 130)
    try:
        result = run.run()
    except FloatingPointError as e:
        return fail(e, 3)
    except RewardMethodError as e:
        return fail(e)
    except SGLangError as e:
        return fail(e, 1)
    except lifecycle.Interrupted as e:
        where = f"during step {e.step + 1} (abandoned)" if e.abandoned else f"after step {e.step}"
        last = run.last_checkpoint or "none (no --save, or none written yet)"
        resume = f"; resume with --load {args.save}" if run.last_checkpoint else ""
        if parallel.is_rank0():
            print(f"stopped by {e} {where}; last good checkpoint: {last}{resume}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        return fail("stopped by SIGINT before training started", 130)
    if parallel.is_rank0():
        with open(os.path.join(args.output_dir, "result.json"), "w") as f:
            json.dump(result, f)
    parallel.destroy_distributed()
    return 0


def cli() -> None:
    """Console entry point (``corew-train``)."""
    sys.exit(main())


if __name__ == "__main__":  # dist-checkpoint workers re-import __main__: keep this guard
    sys.exit(main())
