"""Stage timing: ``with timer.stage("generate"):`` adds the block's seconds to ``perf/time_generate``."""

from __future__ import annotations

import time
from contextlib import contextmanager


class StageTimer:
    def __init__(self):
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            key = f"perf/time_{name}"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0

    def total(self) -> float:
        return time.perf_counter() - self.start
