"""Start-up checks of the training flags: every mistake is one line naming the flag and what would be valid,
raised before any process group, model or engine exists (``arguments.parse_args`` turns it into exit code 2).

Flag values and how flags relate (ranges, what a flag needs or excludes) are one table, :mod:`megatron_corew.flags`;
this module runs it and adds the checks that read the world: the model directory, the launched layout, paths (the
output, checkpoint and export directories must be writable; ``--load`` must be an RL checkpoint directory) and
attached servers.
"""

from __future__ import annotations

import json
import os

from megatron_corew import flags, rewards


class FlagError(ValueError):
    """A bad flag or path; its message is the whole one-line diagnosis."""


# the table of every flag's range and rules lives in flags.py; these names are kept for the tools that import them
RANGES, flag, describe_range = flags.RANGES, flags.flag, flags.describe_range

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def check_ranges(args, ranges: dict | None = None) -> None:
    """Each numeric flag in ``ranges`` (default :data:`flags.RANGES`) within its range; None (unset) passes."""
    err = flags.range_error(args, ranges)
    if err:
        raise FlagError(err)


def check_applicable(args, defaults: dict) -> list[str]:
    """The ranges, the off-policy correction resolved (its default depends on the other flags), then the rules of
    :mod:`megatron_corew.flags`: raise the first refusal, return the warnings."""
    check_ranges(args)  # a value out of range is the first thing to say
    from megatron_corew.rewards.extract import parse_format

    try:
        parse_format(args.answer_format)
    except ValueError as e:
        raise FlagError(f"--answer-format: {e}") from None
    warnings = []
    if hasattr(args, "rollout_is"):  # namespaces built without the off-policy flags skip it
        from megatron_corew import offpolicy_options

        given = lambda dest: getattr(args, dest, defaults.get(dest)) != defaults.get(dest)  # noqa: E731
        warnings += offpolicy_options.resolve_off_policy(args, given, FlagError)
    err, more = flags.check(args, defaults, rewards.get_method(args.reward_method))
    if err:
        raise FlagError(err)
    warnings += more
    return warnings


def launched_world_size() -> int:
    """Processes the launcher started (torchrun's WORLD_SIZE, srun's SLURM_NTASKS), 1 for a plain ``python``."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_PROCID" in os.environ and "MASTER_ADDR" in os.environ:
        return int(os.environ.get("SLURM_NTASKS", "1"))
    return 1


def check_layout(args) -> None:
    tp, pp, world = args.tensor_model_parallel_size, args.pipeline_model_parallel_size, launched_world_size()
    if world % (tp * pp):
        how = "launch with torchrun --nproc_per_node N (or srun)" if world == 1 else f"{world} processes were started"
        raise FlagError(
            f"--tensor-model-parallel-size {tp} x --pipeline-model-parallel-size {pp} needs a multiple of "
            f"{tp * pp} processes; {how}"
        )


def check_config_json(path: str) -> None:
    """``path/config.json`` parses (a missing directory or file is left to the model-config check, which names it)."""
    cfg = os.path.join(path, "config.json")
    if not os.path.isfile(cfg):
        return
    try:
        with open(cfg) as f:
            json.load(f)
    except json.JSONDecodeError as e:
        raise FlagError(f"{cfg} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except OSError as e:
        raise FlagError(f"{cfg} cannot be read ({e.strerror})") from None


def check_writable(option: str, path: str) -> None:
    """``path`` is a directory we can write, or can be created: fail now, not at the first save after training."""
    probe = os.path.abspath(path)
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise FlagError(f"{option} {path} exists and is not a directory")
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise FlagError(f"{option} {path} cannot be created: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == os.path.abspath(path) else f" ({probe} is not writable)"
        raise FlagError(f"{option} {path} is not writable{where}")


def check_load(path: str) -> None:
    """``--load`` resumes an RL checkpoint directory (``--save``'s ``iter_*/`` and ``latest``); anything else would
    silently start at step 0 and, with ``--load X --save X``, overwrite the real checkpoints."""
    if not os.path.exists(path):
        raise FlagError(f"--load {path}: directory not found (to start a new run, leave out --load)")
    if not os.path.isdir(path):
        raise FlagError(f"--load {path} is a file; it must be a checkpoint directory written by --save")
    if os.path.isfile(os.path.join(path, "config.json")):
        raise FlagError(
            f"--load {path} is an HF model directory; start from it with --hf-checkpoint {path} "
            "(--load resumes a checkpoint directory written by --save)"
        )
    if not os.path.lexists(os.path.join(path, "latest")):
        raise FlagError(
            f"--load {path} holds no checkpoint (no 'latest' pointer); to start a new run, leave out --load"
        )
    from checkpoints_conversion.hf_io import CheckpointError
    from megatron_corew.policy.checkpointing import latest_checkpoint

    try:  # what the loader will read, read now: a pointer it cannot follow would start the run at step 0
        latest_checkpoint(path)
    except CheckpointError as e:
        raise FlagError(f"--load {path}: {e}") from None


def hf_export_root(args) -> str | None:
    if not args.save_hf_interval:
        return None
    return args.save_hf or os.path.join(args.output_dir, "hf")


def check_model(args) -> None:
    """config.json readable, architecture supported, layout dividing the heads (names the file or flag)."""
    from checkpoints_conversion.config import ModelConfigError, load_model_args, validate_layout

    check_config_json(args.hf_checkpoint)
    try:
        validate_layout(
            load_model_args(args.hf_checkpoint), args.tensor_model_parallel_size, args.pipeline_model_parallel_size
        )
    except ModelConfigError as e:
        raise FlagError(str(e)) from None
    check_tokenizer_files("--hf-checkpoint", args.hf_checkpoint)


def check_tokenizer_files(option: str, path: str) -> None:
    """transformers builds an empty tokenizer from a directory without them, and the run dies deep in attention."""
    if not any(os.path.isfile(os.path.join(path, n)) for n in TOKENIZER_FILES):
        raise FlagError(
            f"{option} {path} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); "
            "copy them from the model's release"
        )


def check_paths(args) -> None:
    for option, path in (
        ("--output-dir", args.output_dir),
        ("--save", args.save),
        ("--save-hf", hf_export_root(args)),
        ("--tensorboard-dir", args.tensorboard_dir),
    ):
        if path:
            check_writable(option, path)
    if args.load:
        check_load(args.load)


def check_servers(args) -> None:
    """Attached SGLang servers answer ``/health`` now (rank 0 talks to them), not after the model is built."""
    if getattr(args, "rollout_backend", None) != "sglang" or int(os.environ.get("RANK", "0")) != 0:
        return
    import urllib.error
    import urllib.request

    for option, urls in (("--sglang-urls", args.sglang_urls or []), ("--sglang-router-url", [args.sglang_router_url])):
        for url in filter(None, urls):
            try:
                urllib.request.urlopen(url.rstrip("/") + "/health", timeout=10).close()
            except urllib.error.HTTPError:
                pass  # it answers: the server's own errors are reported by the rollout calls
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", e)
                raise FlagError(
                    f"{option} {url} is not reachable ({reason}); start the server or fix the URL"
                ) from None


def check_ray_resource(args) -> None:
    """``--sglang-ray-resource NAME[=AMOUNT]`` applies to Ray-owned engines only and must parse (whether the cluster
    offers it is checked when rank 0 connects, before the placement group would wait out its timeout)."""
    spec = getattr(args, "sglang_ray_resource", None)
    if spec is None:
        return
    from megatron_corew.rollout.sglang.ray_fleet import parse_resource

    try:
        parse_resource(spec)
    except ValueError as e:
        raise FlagError(f"--sglang-ray-resource {e}") from None


def validate(args, defaults: dict) -> list[str]:
    """All start-up checks; raises :class:`FlagError`, returns warnings to print once."""
    warnings = check_applicable(args, defaults)
    check_model(args)
    check_layout(args)
    check_paths(args)
    check_servers(args)
    check_ray_resource(args)
    return warnings
