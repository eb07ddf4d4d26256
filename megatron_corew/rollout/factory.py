"""Rollout backend flags and engine construction (embedded HF engine or SGLang).

Wiring (train.py / arguments.py):
    arguments.build_parser:  ``add_rollout_args(p)`` (replaces the old ``--rollout-backend`` line)
    arguments.parse_args:    ``argv, passthrough = split_sglang_passthrough(argv)`` before parsing,
                             ``args.sglang_server_args += passthrough`` after
    train.RLRun.__init__:    ``self.engine = create_engine(a, a.hf_checkpoint, self.tokenizer, "policy")``
                             ``self.teacher_engine = create_engine(a, a.hf_checkpoint, self.tokenizer, "teacher")``

SGLang server flags pass through with a ``--sglang-`` prefix: the common ones are declared here
(``--sglang-mem-fraction-static``, ``--sglang-tp-size``, ``--sglang-dtype``,
``--sglang-attention-backend``, ...); any other ``--sglang-X [value]`` that is not one of this
module's own flags is forwarded as ``--X [value]`` by ``split_sglang_passthrough``, and
``--sglang-server-args "..."`` takes a raw string.
"""
from __future__ import annotations

import atexit
import json
import os
import shlex
import sys

# flag (without the --sglang- prefix) -> SGLang server flag; value None: a switch
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
PASSTHROUGH_SWITCHES = {"enable-deterministic-inference": "--enable-deterministic-inference",
                        "disable-radix-cache": "--disable-radix-cache"}


def add_rollout_args(parser):
    g = parser.add_argument_group("rollout backend (embedded HF engine or SGLang)")
    g.add_argument("--rollout-backend", choices=["embedded", "sglang"], default="embedded")
    g.add_argument("--sglang-urls", nargs="+", default=None,
                   help="attach to running SGLang servers instead of launching them (never restarted)")
    g.add_argument("--sglang-router-url", default=None, help="with --sglang-urls: a router already in front of them")
    g.add_argument("--sglang-num-engines", type=int, default=1, help="servers to launch for the policy")
    g.add_argument("--sglang-teacher-engines", default="shared",
                   help="Co-rewarding-II teacher: 'shared' (teacher weights swapped into the policy's engines "
                        "before each teacher generation) or a number of dedicated engines")
    g.add_argument("--sglang-weight-sync", choices=["tensor", "distributed", "disk"], default=None,
                   help="tensor: shared memory/CUDA IPC (colocated); distributed: NCCL/gloo group trainer->engines; "
                        "disk: HF checkpoint + update_weights_from_disk (portable). Default: tensor for launched "
                        "engines, disk with --sglang-urls")
    g.add_argument("--sglang-bucket-mb", type=float, default=512, help="weight-sync bucket size")
    g.add_argument("--sglang-sync-dir", default=None, help="disk sync and kept weights; default OUTPUT_DIR/rollout_weights")
    g.add_argument("--sglang-keep-weights", choices=["auto", "on", "off"], default="auto",
                   help="keep the last pushed weights to refill a restarted engine (auto: when engines can restart)")
    g.add_argument("--sglang-python", default=None,
                   help="interpreter that runs the servers (default: .venv-sglang/bin/python if present)")
    g.add_argument("--sglang-extra-pythonpath", action="append", default=[],
                   help="prepended to the servers' PYTHONPATH (e.g. the CPU import stubs); repeatable")
    g.add_argument("--sglang-device", default=None, help="cpu or cuda (default: cuda if available)")
    g.add_argument("--sglang-host", default="127.0.0.1")
    g.add_argument("--sglang-base-port", type=int, default=None, help="first server port (default: free ports)")
    g.add_argument("--sglang-router", choices=["auto", "on", "off"], default="auto",
                   help="sglang_router in front of several engines (auto: when >1 engine and it is installed)")
    g.add_argument("--sglang-log-dir", default=None, help="server logs; default OUTPUT_DIR/sglang_logs")
    g.add_argument("--sglang-startup-timeout", type=float, default=600.0)
    g.add_argument("--sglang-request-timeout", type=float, default=3600.0, help="one /generate call")
    g.add_argument("--sglang-sync-timeout", type=float, default=600.0, help="one weight-update call")
    g.add_argument("--sglang-control-timeout", type=float, default=60.0, help="health, pause, flush calls")
    g.add_argument("--sglang-http-retries", type=int, default=3)
    g.add_argument("--sglang-max-restarts", type=int, default=1,
                   help="restarts of a dead engine per call before the step fails")
    g.add_argument("--sglang-request-batch-size", type=int, default=None,
                   help="prompts per /generate request (default: one request per engine per call)")
    g.add_argument("--sglang-no-pause", action="store_true", help="do not pause generation around weight updates")
    g.add_argument("--sglang-dist-backend", default=None, help="distributed sync backend (default nccl on GPU, gloo on CPU)")
    g.add_argument("--sglang-dist-master-addr", default="127.0.0.1")
    g.add_argument("--sglang-use-ray", action="store_true", help="engines owned by the Ray rollout manager")
    g.add_argument("--sglang-ray-address", default=None, help="existing Ray cluster (default: a local one)")
    g.add_argument("--sglang-reward-workers", type=int, default=0, help="Ray reward-grading workers")
    for flag in PASSTHROUGH:
        g.add_argument(f"--sglang-{flag}", default=None, help=f"SGLang {PASSTHROUGH[flag]}")
    for flag in PASSTHROUGH_SWITCHES:
        g.add_argument(f"--sglang-{flag}", action="store_true", help=f"SGLang {PASSTHROUGH_SWITCHES[flag]}")
    g.add_argument("--sglang-server-args", default="", help="raw extra SGLang server flags, one string")
    parser.set_defaults(sglang_passthrough=[])
    return parser


def build_rollout_parser():
    import argparse

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
            flag = "--" + name[len("--sglang-"):]
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
    out += list(getattr(args, "sglang_server_args_list", None) or [])
    return out


def eos_ids(model_dir: str, tokenizer=None) -> list[int]:
    ids = []
    for fname in ("config.json", "generation_config.json"):  # config first, as model_builder does
        path = os.path.join(model_dir, fname)
        if os.path.exists(path):
            with open(path) as f:
                e = json.load(f).get("eos_token_id")
            if e is not None:
                ids = e if isinstance(e, list) else [e]
                break
    if not ids and tokenizer is not None and tokenizer.eos_token_id is not None:
        ids = [tokenizer.eos_token_id]
    return [int(x) for x in ids]


_ENGINES: list = []


def _shutdown_all():
    for e in reversed(_ENGINES):
        try:
            e.shutdown()
        except Exception:  # noqa: BLE001
            pass
    _ENGINES.clear()


atexit.register(_shutdown_all)


def _get(args, name, default=None):
    return getattr(args, name, default) if getattr(args, name, None) is not None else default


def create_engine(args, model_dir: str, tokenizer=None, role: str = "policy"):
    """The rollout engine for ``role`` ("policy" or "teacher") on global rank 0.

    For the sglang backend the policy call launches (or attaches to) the engines; the teacher
    call either returns a view that swaps teacher weights into the same engines
    (``--sglang-teacher-engines shared``) or launches its own group."""
    backend = _get(args, "rollout_backend", "embedded")
    eos = eos_ids(model_dir, tokenizer)
    if backend == "embedded":
        from megatron_corew.rollout.embedded import EmbeddedEngine

        pad = tokenizer.pad_token_id if tokenizer is not None else None
        return EmbeddedEngine(model_dir, eos_token_ids=eos, pad_token_id=pad,
                              max_batch_size=_get(args, "rollout_batch_size", 64))
    if backend != "sglang":
        raise ValueError(f"unknown rollout backend {backend!r}")
    if role == "teacher" and str(_get(args, "sglang_teacher_engines", "shared")) == "shared":
        policy = getattr(args, "_sglang_policy_engine", None)
        if policy is None:
            raise RuntimeError("create the policy engine before the shared teacher view")
        return policy.role_view("teacher")
    engine = _build_sglang(args, model_dir, eos, role)
    _ENGINES.append(engine)
    if role == "policy":
        args._sglang_policy_engine = engine
    return engine


def _build_sglang(args, model_dir: str, eos: list[int], role: str):
    import torch

    from megatron_corew.rollout.sglang import engine as se

    http = se.HTTPConfig(control_timeout=_get(args, "sglang_control_timeout", 60.0),
                         request_timeout=_get(args, "sglang_request_timeout", 3600.0),
                         sync_timeout=_get(args, "sglang_sync_timeout", 600.0),
                         retries=_get(args, "sglang_http_retries", 3))
    out_dir = _get(args, "output_dir", "runs/default")
    log_dir = os.path.abspath(_get(args, "sglang_log_dir", os.path.join(out_dir, "sglang_logs")))
    sync_dir = os.path.abspath(_get(args, "sglang_sync_dir", os.path.join(out_dir, "rollout_weights")))
    urls = _get(args, "sglang_urls")
    if urls:
        if role == "teacher":
            raise ValueError("--sglang-urls serves the policy; a separate teacher group needs launched engines "
                             "(use --sglang-teacher-engines shared)")
        fleet = se.AttachedFleet(urls, http, router_url=_get(args, "sglang_router_url"))
        default_sync = "disk"
    else:
        device = _get(args, "sglang_device", "cuda" if torch.cuda.is_available() else "cpu")
        n = _get(args, "sglang_num_engines", 1)
        if role == "teacher":
            n = int(_get(args, "sglang_teacher_engines"))
        tp = int(_get(args, "sglang_tp_size", 1))
        python = _get(args, "sglang_python") or se.default_sglang_python()
        base_port = _get(args, "sglang_base_port")
        if base_port and role == "teacher":
            base_port += _get(args, "sglang_num_engines", 1)
        specs = []
        for i in range(n):
            specs.append(se.ServerSpec(
                model_path=os.path.abspath(model_dir), python=python, host=_get(args, "sglang_host", "127.0.0.1"),
                port=(base_port + i) if base_port else 0, device=device, tp_size=tp,
                server_args=(["--base-gpu-id", str(i * tp)] if device == "cuda" and n > 1 else []) + server_args_from(args),
                extra_pythonpath=list(_get(args, "sglang_extra_pythonpath", [])),
                log_path=os.path.join(log_dir, f"{role}_engine{i}.log"), name=f"{role}-engine{i}"))
        router = _get(args, "sglang_router", "auto")
        use_router = n > 1 and (router == "on" or (router == "auto" and se.router_available(python)))
        if _get(args, "sglang_use_ray", False):
            from megatron_corew.rollout.sglang.ray_fleet import RayRolloutManager

            fleet = RayRolloutManager(specs, http=http, startup_timeout=_get(args, "sglang_startup_timeout", 600.0),
                                      use_router=use_router, address=_get(args, "sglang_ray_address"),
                                      num_reward_workers=_get(args, "sglang_reward_workers", 0), log_dir=log_dir)
            fleet.start()
        else:
            fleet = se.LocalFleet(specs, http, startup_timeout=_get(args, "sglang_startup_timeout", 600.0),
                                  use_router=use_router, log_dir=log_dir).start()
        default_sync = "tensor"
    keep = {"on": True, "off": False}.get(_get(args, "sglang_keep_weights", "auto"))
    try:
        return se.SGLangEngine(
            fleet, model_path=os.path.abspath(model_dir), eos_token_ids=eos, role=role,
            weight_sync=_get(args, "sglang_weight_sync", default_sync), sync_dir=sync_dir,
            bucket_bytes=int(_get(args, "sglang_bucket_mb", 512) * (1 << 20)), http=http,
            max_restarts=_get(args, "sglang_max_restarts", 1), keep_weights=keep,
            request_batch_size=_get(args, "sglang_request_batch_size"),
            dist_backend=_get(args, "sglang_dist_backend"),
            dist_master_addr=_get(args, "sglang_dist_master_addr", "127.0.0.1"),
            pause_during_sync=not _get(args, "sglang_no_pause", False))
    except BaseException:
        fleet.shutdown()
        raise

