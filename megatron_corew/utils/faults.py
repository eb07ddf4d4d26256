"""Fault injection for crash-safety tests: ``COREW_FAULT=<point>:<step>`` SIGKILLs this process at
that point (``after_step`` once step N is logged and saved, ``during_save`` between writing
checkpoint N and publishing it, ``nan_loss`` makes step N's loss NaN, ``before_commit:0`` just before an
atomic rename, ``rewrite_mid_batch`` / ``rewrite_between_outputs`` inside the rephrasing tool,
``lose_weights_policy`` / ``lose_weights_teacher`` makes that role's embedded engine come back from a restart
without its weights at its N-th generate call; several points separated by commas). Unset in
normal runs, where this costs one dict lookup."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable


def active(point: str, step: int) -> bool:
    spec = os.environ.get("COREW_FAULT")
    return bool(spec) and f"{point}:{step}" in spec.split(",")


def maybe_kill(point: str, step: int) -> None:
    if active(point, step):
        os.kill(os.getpid(), signal.SIGKILL)


def kill_hook(point: str, step: int) -> Callable[[], None]:
    """``maybe_kill(point, step)`` as a callback, for ``before_replace`` of the atomic writers."""
    return lambda: maybe_kill(point, step)
