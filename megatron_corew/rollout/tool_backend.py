"""Backend selection for the offline tools (tools/evaluate.py, tools/rewrite_questions.py): the training backends'
flags plus ``--openai-url`` for any OpenAI-compatible server.
"""

from __future__ import annotations

import argparse
import os

from megatron_corew.rollout.base import RolloutEngine
from megatron_corew.rollout.config import RolloutConfig, add_rollout_args, split_sglang_passthrough
from megatron_corew.rollout.openai_client import OpenAICompatEngine


def add_tool_backend_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training backends' flags (``--rollout-backend {embedded,sglang}``, ``--sglang-*``) plus
    ``--openai-url`` for any OpenAI-compatible server (takes precedence when given)."""
    add_rollout_args(parser)
    g = parser.add_argument_group("OpenAI-compatible server (instead of --rollout-backend)")
    g.add_argument("--openai-url", default=None, help="base URL of a /v1/completions server, e.g. http://host:8000")
    g.add_argument("--openai-model", default=None, help="model name to request (default: the first of /v1/models)")
    g.add_argument("--openai-timeout", type=float, default=3600.0, help="seconds per request")
    g.add_argument("--openai-retries", type=int, default=3)
    g.add_argument("--openai-concurrency", type=int, default=16, help="requests in flight")
    g.add_argument(
        "--openai-api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the server's API key, if it needs one",
    )
    return parser


def _sigterm_to_exit(signum, frame):
    raise SystemExit(128 + signum)  # `finally` blocks run: temp files go, the engines shut down


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Start-up shared by the offline tools: parse (``--sglang-X`` pass-through split off first), log to stderr,
    and turn SIGTERM into SystemExit so a killed tool cleans up like an interrupted one."""
    import logging
    import signal

    argv, passthrough = split_sglang_passthrough(argv)
    args = parser.parse_args(argv)
    args.sglang_passthrough = passthrough
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    return args


def create_tool_engine(args, model_dir: str | None, tokenizer) -> RolloutEngine:
    if getattr(args, "openai_url", None):
        return OpenAICompatEngine(
            args.openai_url,
            model=args.openai_model,
            tokenizer=tokenizer,
            timeout=args.openai_timeout,
            retries=args.openai_retries,
            concurrency=args.openai_concurrency,
            api_key=os.environ.get(args.openai_api_key_env or "") or None,
        )
    if model_dir is None:
        raise ValueError("a model directory is needed unless --openai-url is given")
    from megatron_corew.rollout.factory import create_engine

    return create_engine(RolloutConfig.from_args(args), model_dir, tokenizer, "policy")
