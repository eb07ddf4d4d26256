"""Rollout flags and the typed ``RolloutConfig`` built from them once.

Each setting is declared once, in ``RolloutConfig``: its default, its help text and its flag. ``add_rollout_args``
declares those flags; ``RolloutConfig.from_args`` reads the parsed namespace, so no engine code touches it.

SGLang server flags pass through with a ``--sglang-`` prefix: the common ones are declared here
(``--sglang-mem-fraction-static``, ``--sglang-tp-size``, ``--sglang-dtype``, ``--sglang-attention-backend``, ...);
any other ``--sglang-X [value]`` that is not one of this module's own flags is forwarded as ``--X [value]`` by
``split_sglang_passthrough``, and ``--sglang-server-args "..."`` takes a raw string.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import MISSING, dataclass, field, fields

# flag (without the --sglang- prefix) -> SGLang server flag
PASSTHROUGH = {
    "mem-fraction-static": "--mem-fraction-static",
    "tp-size": "--tp-size",
    "dtype": "--dtype",
    "attention-backend": "--attention-backend",
    "sampling-backend": "--sampling-backend",
    "context-length": "--context-length",
    "max-running-requests": "--max-running-requests",
    "max-total-tokens": "--max-total-tokens",
    "chunked-prefill-size": "--chunked-prefill-size",
    "random-seed": "--random-seed",
    "log-level": "--log-level",
}
PASSTHROUGH_SWITCHES = {
    "enable-deterministic-inference": "--enable-deterministic-inference",
    "disable-radix-cache": "--disable-radix-cache",
}


def _setting(default, doc: str, flag: str | None = None):
    """A config field: ``doc`` is its help text; ``flag`` the option that sets it (None: read from the training
    flags under the field's own name). A list default is copied per instance."""
    meta = {"doc": doc, "flag": flag}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RolloutConfig:
    """Everything the rollout factory needs, typed; built once by ``from_args``."""

    backend: str = _setting("embedded", "rollout backend: embedded (HF transformers) or sglang", "--rollout-backend")
    batch_size: int | None = _setting(
        None,
        "embedded engine: sequences per decode batch (default: all of a call's prompts, one batch; a smaller cap "
        "bounds the KV cache of a large model)",
        "--rollout-batch-size",
    )
    drop_finished: bool = _setting(
        True,
        "embedded engine: finished sequences leave the decode batch (several times faster on long-tailed lengths); "
        "--no-rollout-drop-finished decodes every row to the longest (the same samples for a seed, slower)",
        "--rollout-drop-finished",
    )
    no_shared_prefill: bool = _setting(
        False,
        "embedded engine: prefill every sample's prompt on its own instead of once per distinct prompt "
        "(slower; for timing comparisons)",
        "--rollout-no-shared-prefill",
    )
    output_dir: str = _setting("runs/default", "run directory; SGLang logs and synced weights default to it")
    urls: list[str] | None = _setting(
        None, "attach to running SGLang servers instead of launching them (never restarted)", "--sglang-urls"
    )
    router_url: str | None = _setting(
        None, "with --sglang-urls: a router already in front of them", "--sglang-router-url"
    )
    num_engines: int = _setting(1, "servers to launch for the policy", "--sglang-num-engines")
    teacher_engines: str = _setting(
        "shared",
        "Co-rewarding-II teacher: 'shared' (teacher weights swapped into the policy's engines before each "
        "teacher generation) or a number of dedicated engines",
        "--sglang-teacher-engines",
    )
    weight_sync: str | None = _setting(
        None,
        "tensor: shared memory/CUDA IPC (colocated); distributed: NCCL/gloo group trainer->engines; disk: HF "
        "checkpoint + update_weights_from_disk (portable). Default: tensor for launched engines, disk with "
        "--sglang-urls",
        "--sglang-weight-sync",
    )
    bucket_mb: float = _setting(512, "weight-sync bucket size", "--sglang-bucket-mb")
    sync_dir: str | None = _setting(
        None, "disk sync and kept weights; default OUTPUT_DIR/rollout_weights", "--sglang-sync-dir"
    )
    keep_weights: str = _setting(
        "auto",
        "keep a host copy of the last pushed weights on rank 0 to refill a restarted engine (auto: only where a "
        "role swap needs it, the shared teacher; otherwise a restarted engine gets a re-push from the trainer)",
        "--sglang-keep-weights",
    )
    # weight sync layout (docs/WEIGHT_SYNC.md)
    sync_layout: str = _setting(
        "sharded",
        "sharded: each pipeline stage's sender pushes its own stage's tensors to the engines (tensor or "
        "distributed sync without a host copy); funnel: every tensor through global rank 0 (always used for disk "
        "sync, kept copies and the embedded engine)",
        "--weight-sync-layout",
    )
    sync_delta: str = _setting(
        "off",
        "send only tensors whose wire bytes changed since the engines' last push of that role (sharded layout): "
        "off, teacher (the Co-rewarding-II EMA teacher) or all",
        "--weight-sync-delta",
    )
    python: str | None = _setting(
        None, "interpreter that runs the servers (default: .venv-sglang/bin/python if present)", "--sglang-python"
    )
    extra_pythonpath: list[str] = _setting(
        [], "prepended to the servers' PYTHONPATH (e.g. the CPU import stubs); repeatable", "--sglang-extra-pythonpath"
    )
    device: str | None = _setting(None, "cpu or cuda (default: cuda if available)", "--sglang-device")
    host: str = _setting("127.0.0.1", "address the launched servers listen on", "--sglang-host")
    base_port: int | None = _setting(None, "first server port (default: free ports)", "--sglang-base-port")
    router: str = _setting(
        "auto",
        "sglang_router in front of several engines (auto: when >1 engine and it is installed)",
        "--sglang-router",
    )
    log_dir: str | None = _setting(None, "server logs; default OUTPUT_DIR/sglang_logs", "--sglang-log-dir")
    startup_timeout: float = _setting(600.0, "seconds for a server to become ready", "--sglang-startup-timeout")
    request_timeout: float = _setting(3600.0, "one /generate call", "--sglang-request-timeout")
    sync_timeout: float = _setting(600.0, "one weight-update call", "--sglang-sync-timeout")
    control_timeout: float = _setting(60.0, "health, pause, flush calls", "--sglang-control-timeout")
    http_retries: int = _setting(
        3, "extra attempts after a connection failure or a 502/503/504", "--sglang-http-retries"
    )
    max_restarts: int = _setting(1, "restarts of a dead engine per call before the step fails", "--sglang-max-restarts")
    request_batch_size: int | None = _setting(
        None, "prompts per /generate request (default: one request per engine per call)", "--sglang-request-batch-size"
    )
    no_pause: bool = _setting(False, "do not pause generation around weight updates", "--sglang-no-pause")
    dist_backend: str | None = _setting(
        None, "distributed sync backend (default nccl on GPU, gloo on CPU)", "--sglang-dist-backend"
    )
    dist_master_addr: str = _setting(
        "127.0.0.1", "address the engines reach the trainer at for distributed sync", "--sglang-dist-master-addr"
    )
    use_ray: bool = _setting(False, "engines owned by the Ray rollout manager", "--sglang-use-ray")
    ray_address: str | None = _setting(None, "existing Ray cluster (default: a local one)", "--sglang-ray-address")
    reward_workers: int = _setting(0, "Ray reward-grading workers", "--sglang-reward-workers")
    ray_resource: str | None = _setting(
        None,
        "NAME or NAME=AMOUNT: every engine's Ray bundle also asks for AMOUNT (default 0.001) of the custom resource "
        "NAME, so engines only run on nodes started with ray start --resources '{\"NAME\": 1}' (node:IP names one "
        "node); needs --sglang-use-ray",
        "--sglang-ray-resource",
    )
    tp_size: int = _setting(1, "SGLang --tp-size: tensor-parallel GPUs per server", "--sglang-tp-size")
    base_gpu_id: int = _setting(
        0,
        "first GPU of the launched engines (engine i: GPUs base + i x tp...); disaggregated on one node: the "
        "GPU after the trainer's",
        "--sglang-base-gpu-id",
    )
    server_args: list[str] = _setting(
        [], "SGLang server flags: the declared --sglang-X values, then --sglang-server-args, then the pass-through"
    )

    @classmethod
    def from_args(cls, args) -> "RolloutConfig":
        """From parsed flags (training or tool parser); a missing or None value takes the field's default."""
        values = {}
        for f in fields(cls):
            dest = _dest(f.metadata["flag"]) if f.metadata["flag"] else f.name
            value = getattr(args, dest, None)
            if value is not None:
                values[f.name] = list(value) if isinstance(value, list) else value
        if "tp_size" in values:  # declared with the pass-through flags, so parsed as a string
            values["tp_size"] = int(values["tp_size"])
        values["server_args"] = server_args_from(args)
        return cls(**values)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _option(name: str) -> dict:
    """``default``/``help`` for ``add_argument`` from the field ``name`` of RolloutConfig."""
    f = _FIELDS[name]
    default = f.default_factory() if f.default is MISSING else f.default
    return {"default": default, "help": f.metadata["doc"]}


def _flag(name: str) -> str:
    return _FIELDS[name].metadata["flag"]


_FIELDS = {f.name: f for f in fields(RolloutConfig)}


def add_rollout_args(parser):
    g = parser.add_argument_group("rollout backend (embedded HF engine or SGLang)")

    def add(name, **kw):
        g.add_argument(_flag(name), **_option(name), **kw)

    add("backend", choices=["embedded", "sglang"])
    add("batch_size", type=int)
    add("drop_finished", action=argparse.BooleanOptionalAction)
    add("no_shared_prefill", action="store_true")
    add("urls", nargs="+")
    add("router_url")
    add("num_engines", type=int)
    add("teacher_engines")
    add("weight_sync", choices=["tensor", "distributed", "disk"])
    add("bucket_mb", type=float)
    add("sync_dir")
    add("keep_weights", choices=["auto", "on", "off"])
    add("sync_layout", choices=["sharded", "funnel"])
    add("sync_delta", choices=["off", "teacher", "all"])
    add("python")
    add("extra_pythonpath", action="append")
    add("device")
    add("host")
    add("base_port", type=int)
    add("router", choices=["auto", "on", "off"])
    add("log_dir")
    add("startup_timeout", type=float)
    add("request_timeout", type=float)
    add("sync_timeout", type=float)
    add("control_timeout", type=float)
    add("http_retries", type=int)
    add("max_restarts", type=int)
    add("request_batch_size", type=int)
    add("no_pause", action="store_true")
    add("dist_backend")
    add("dist_master_addr")
    add("use_ray", action="store_true")
    add("ray_address")
    add("reward_workers", type=int)
    add("base_gpu_id", type=int)
    add("ray_resource")
    for flag in PASSTHROUGH:
        g.add_argument(f"--sglang-{flag}", default=None, help=f"SGLang {PASSTHROUGH[flag]}")
    for flag in PASSTHROUGH_SWITCHES:
        g.add_argument(f"--sglang-{flag}", action="store_true", help=f"SGLang {PASSTHROUGH_SWITCHES[flag]}")
    g.add_argument("--sglang-server-args", default="", help="raw extra SGLang server flags, one string")
    parser.set_defaults(sglang_passthrough=[])
    return parser


def build_rollout_parser():
    return add_rollout_args(argparse.ArgumentParser(add_help=False))


def split_sglang_passthrough(argv):
    """Move ``--sglang-X [value]`` flags this module does not declare out of argv; they are
    SGLang server flags ``--X [value]``. Returns (remaining argv, server flags)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known = {a for action in build_rollout_parser()._actions for a in action.option_strings}
    rest, server = [], []
    i = 0
    while i < len(argv):
        tok = argv[i]
        name = tok.split("=", 1)[0]
        if tok.startswith("--sglang-") and name not in known:
            flag = "--" + name[len("--sglang-") :]
            if "=" in tok:
                server += [flag, tok.split("=", 1)[1]]
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                server += [flag, argv[i + 1]]
                i += 1
            else:
                server.append(flag)
        else:
            rest.append(tok)
        i += 1
    return rest, server


def server_args_from(args) -> list[str]:
    """The SGLang server flags the parsed rollout flags ask for, in the order they are applied."""
    out = []
    for flag, server_flag in PASSTHROUGH.items():
        v = getattr(args, "sglang_" + flag.replace("-", "_"), None)
        if v is not None:
            out += [server_flag, str(v)]
    for flag, server_flag in PASSTHROUGH_SWITCHES.items():
        if getattr(args, "sglang_" + flag.replace("-", "_"), False):
            out.append(server_flag)
    out += shlex.split(getattr(args, "sglang_server_args", "") or "")
    out += list(getattr(args, "sglang_passthrough", None) or [])
    return out
