"""Rollout engine construction from a ``RolloutConfig``: the embedded HF engine, or SGLang servers (launched,
attached, or owned by Ray) with their weight-sync mode.

Wiring (train.py)::

    cfg = RolloutConfig.from_args(args)
    policy = create_engine(cfg, args.hf_checkpoint, tokenizer, "policy")
    teacher = create_engine(cfg, args.hf_checkpoint, tokenizer, "teacher", policy_engine=policy)

An engine whose fleet grades rewards off the training process (Ray reward workers) exposes that as
``engine.grader``; other engines have none.
"""

from __future__ import annotations

import atexit
import json
import os

from megatron_corew.rollout.base import RolloutEngine, SamplingParams
from megatron_corew.rollout.config import RolloutConfig

__all__ = ["RolloutConfig", "SamplingParams", "create_engine", "eos_ids"]  # the rollout stage as train.py sees it


def stop_token_sources(model_dir: str, tokenizer=None) -> dict[str, list[int]]:
    """The eos ids each source names: config.json, generation_config.json and the tokenizer (empty if none)."""
    found = {}
    for fname in ("config.json", "generation_config.json"):
        path = os.path.join(model_dir, fname)
        e = None
        if os.path.exists(path):
            with open(path) as f:
                e = json.load(f).get("eos_token_id")
        found[fname] = [] if e is None else [int(x) for x in (e if isinstance(e, list) else [e])]
    tok_eos = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
    found["tokenizer"] = [] if tok_eos is None else [int(tok_eos)]
    return found


def eos_ids(model_dir: str, tokenizer=None) -> list[int]:
    """Stop tokens: the union of the three sources in order of first appearance (vLLM in the reference stops on
    all of them: an instruct model's generation_config.json often adds <|im_end|> or <|eot_id|> to config's)."""
    ids: list[int] = []
    for source in stop_token_sources(model_dir, tokenizer).values():
        ids += [i for i in source if i not in ids]
    return ids


_ANNOUNCED: set = set()


def announce_stop_tokens(model_dir: str, tokenizer=None) -> list[int]:
    """eos_ids, printed once per process and model: which sources named which ids."""
    ids = eos_ids(model_dir, tokenizer)
    if model_dir not in _ANNOUNCED:
        _ANNOUNCED.add(model_dir)
        parts = ", ".join(f"{k} {v}" for k, v in stop_token_sources(model_dir, tokenizer).items())
        print(f"rollout stop tokens {ids} (union of {parts})", flush=True)
    return ids


_ENGINES: list = []


def leave_a_core_for_servers(cfg: RolloutConfig, log=print) -> int | None:
    """CPU SGLang servers launched on this machine decode in their own scheduler process; a trainer whose torch
    threads take every core makes the two wait on each other. The rule: the trainer runs on cores - 1 threads
    (at least 1) while such servers share the machine; an explicit OMP_NUM_THREADS is left as it is. Returns the
    new thread count, or None when nothing changed."""
    import torch

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    shared = cfg.backend == "sglang" and not cfg.urls and not cfg.use_ray and device == "cpu"
    threads = torch.get_num_threads()
    if not shared or "OMP_NUM_THREADS" in os.environ or threads < 2:
        return None
    torch.set_num_threads(threads - 1)
    log(f"trainer: {threads - 1} torch threads, one core left for the SGLang CPU server (OMP_NUM_THREADS overrides)")
    return threads - 1


def _shutdown_all():
    for e in reversed(_ENGINES):
        try:
            e.shutdown()
        except Exception:  # noqa: BLE001
            pass
    _ENGINES.clear()


atexit.register(_shutdown_all)


def create_engine(
    cfg: RolloutConfig, model_dir: str, tokenizer=None, role: str = "policy", policy_engine: RolloutEngine | None = None
) -> RolloutEngine:
    """The rollout engine for ``role`` ("policy" or "teacher") on global rank 0.

    For the sglang backend the policy call launches (or attaches to) the engines; the teacher call either returns
    a view of ``policy_engine`` that swaps teacher weights into the same engines (``--sglang-teacher-engines
    shared``) or launches its own group."""
    eos = announce_stop_tokens(model_dir, tokenizer)
    if cfg.backend == "embedded":
        from megatron_corew.rollout.embedded import EmbeddedEngine

        pad = tokenizer.pad_token_id if tokenizer is not None else None
        return EmbeddedEngine(
            model_dir,
            eos_token_ids=eos,
            pad_token_id=pad,
            max_batch_size=cfg.batch_size,
            drop_finished=cfg.drop_finished,
            role=role,
            shared_prefill=not cfg.no_shared_prefill,
        )
    if cfg.backend != "sglang":
        raise ValueError(f"unknown rollout backend {cfg.backend!r}")
    if role == "teacher" and str(cfg.teacher_engines) == "shared":
        if policy_engine is None:
            raise RuntimeError("the shared teacher view needs the policy engine: pass policy_engine=")
        return policy_engine.role_view("teacher")
    engine = _build_sglang(cfg, model_dir, eos, role)
    _ENGINES.append(engine)
    return engine


def _build_sglang(cfg: RolloutConfig, model_dir: str, eos: list[int], role: str):
    import torch

    from megatron_corew.rollout.sglang.engine import SGLangEngine
    from megatron_corew.rollout.sglang.fleet import AttachedFleet, LocalFleet
    from megatron_corew.rollout.sglang.http import HTTPConfig
    from megatron_corew.rollout.sglang.server import ServerSpec, default_sglang_python, router_available

    http = HTTPConfig(
        control_timeout=cfg.control_timeout,
        request_timeout=cfg.request_timeout,
        sync_timeout=cfg.sync_timeout,
        retries=cfg.http_retries,
    )
    log_dir = os.path.abspath(cfg.log_dir or os.path.join(cfg.output_dir, "sglang_logs"))
    sync_dir = os.path.abspath(cfg.sync_dir or os.path.join(cfg.output_dir, "rollout_weights"))
    if cfg.urls:
        if role == "teacher":
            raise ValueError(
                "--sglang-urls serves the policy; a separate teacher group needs launched engines "
                "(use --sglang-teacher-engines shared)"
            )
        fleet = AttachedFleet(cfg.urls, http, router_url=cfg.router_url)
        default_sync = "disk"
    else:
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        n = int(cfg.teacher_engines) if role == "teacher" else cfg.num_engines
        tp = cfg.tp_size
        python = cfg.python or default_sglang_python()
        base_port = cfg.base_port
        if base_port and role == "teacher":
            base_port += cfg.num_engines
        specs = []
        for i in range(n):
            first = cfg.base_gpu_id + i * tp
            gpu_flags = ["--base-gpu-id", str(first)] if device == "cuda" and (n > 1 or first) else []
            specs.append(
                ServerSpec(
                    model_path=os.path.abspath(model_dir),
                    python=python,
                    host=cfg.host,
                    port=(base_port + i) if base_port else 0,
                    device=device,
                    tp_size=tp,
                    server_args=gpu_flags + list(cfg.server_args),
                    extra_pythonpath=list(cfg.extra_pythonpath),
                    log_path=os.path.join(log_dir, f"{role}_engine{i}.log"),
                    name=f"{role}-engine{i}",
                )
            )
        use_router = n > 1 and (cfg.router == "on" or (cfg.router == "auto" and router_available(python)))
        if cfg.use_ray:
            from megatron_corew.rollout.sglang.ray_fleet import RayRolloutManager

            fleet = RayRolloutManager(
                specs,
                http=http,
                startup_timeout=cfg.startup_timeout,
                use_router=use_router,
                address=cfg.ray_address,
                num_reward_workers=cfg.reward_workers,
                log_dir=log_dir,
                resource=cfg.ray_resource,
            )
            fleet.start()
        else:
            fleet = LocalFleet(
                specs, http, startup_timeout=cfg.startup_timeout, use_router=use_router, log_dir=log_dir
            ).start()
        default_sync = "tensor"
    keep = cfg.keep_weights == "on"  # auto: only shared role views keep a copy (role_view); restarts re-push
    try:
        return SGLangEngine(
            fleet,
            model_path=os.path.abspath(model_dir),
            eos_token_ids=eos,
            role=role,
            weight_sync=cfg.weight_sync or default_sync,
            sync_dir=sync_dir,
            bucket_bytes=int(cfg.bucket_mb * (1 << 20)),
            http=http,
            max_restarts=cfg.max_restarts,
            keep_weights=keep,
            request_batch_size=cfg.request_batch_size,
            dist_backend=cfg.dist_backend,
            dist_master_addr=cfg.dist_master_addr,
            pause_during_sync=not cfg.no_pause,
            layout=cfg.sync_layout,
            delta=cfg.sync_delta == "all" or (cfg.sync_delta == "teacher" and role == "teacher"),
        )
    except BaseException:
        fleet.shutdown()
        raise
