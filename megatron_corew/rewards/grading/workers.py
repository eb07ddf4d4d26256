"""One grading contract, three places to run it: this process, a process pool, Ray reward workers.

Every grader takes answers already extracted from their boxes (the caller extracts once, so no path ever wraps
an answer in ``\\boxed{}`` again and re-extracts it) and applies the same per-item rule: an item that raises or
runs past ``timeout_s`` scores 0.0 and the others are still graded, so one pathological answer can never stall a
training step. Blank answers and missing ground truths score 0.0 without being graded. Every item that finishes
scores exactly ``grade_answer(answer, ground_truth, mode)``.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from megatron_corew.rewards.grading.equivalence import check_grade_mode, grade_answer

__all__ = ["DEFAULT_ITEM_TIMEOUT_S", "grade_answers", "Grader", "InlineGrader", "ProcessPoolGrader", "RayGrader"]

DEFAULT_ITEM_TIMEOUT_S = 5.0

# Test hook: lets tests make one item slow inside a worker process (a monkeypatch in the parent
# would not reach a spawned worker). Inactive unless the environment variable is set; the marked
# answer is graded without its marker once the sleep is over.
TEST_SLEEP_ENV = "COREW_GRADER_TEST_SLEEP_S"
TEST_SLEEP_PREFIX = "<<corew-grader-test-sleep>>"


class _ItemTimeout(Exception):
    """Raised by SIGALRM inside ``_grade_items`` when one item exceeds its time limit."""


def _on_alarm(signum, frame):
    raise _ItemTimeout()


def _grade_one(answer: str, ground_truth: str, mode: str) -> float:
    if answer.startswith(TEST_SLEEP_PREFIX) and os.environ.get(TEST_SLEEP_ENV):
        time.sleep(float(os.environ[TEST_SLEEP_ENV]))
        answer = answer[len(TEST_SLEEP_PREFIX) :]
    return grade_answer(answer, ground_truth, mode)


def _grade_items(answers: Sequence[str], ground_truths: Sequence[str | None], mode: str, timeout_s: float):
    """Scores under the per-item rule, and how many items timed out.

    The limit uses SIGALRM, which only works in a process's main thread: that is where pool workers and Ray
    workers run tasks. Called from another thread, items run unlimited (use a process pool there).
    """
    use_alarm = bool(
        timeout_s
        and timeout_s > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    previous_handler = signal.signal(signal.SIGALRM, _on_alarm) if use_alarm else None
    scores, timeouts = [], 0
    try:
        for answer, ground_truth in zip(answers, ground_truths):
            if not (answer or "").strip() or ground_truth is None:
                scores.append(0.0)
                continue
            try:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, timeout_s)
                try:
                    score = _grade_one(answer, ground_truth, mode)
                finally:
                    if use_alarm:
                        signal.setitimer(signal.ITIMER_REAL, 0)
            except _ItemTimeout:
                score, timeouts = 0.0, timeouts + 1
            except Exception:
                score = 0.0
            scores.append(score)
    finally:
        if use_alarm:
            signal.signal(signal.SIGALRM, previous_handler)
    return scores, timeouts


def _checked(answers: Sequence[str], ground_truths: Sequence[str | None], mode: str):
    check_grade_mode(mode)
    answers, ground_truths = list(answers), list(ground_truths)
    if len(answers) != len(ground_truths):
        raise ValueError(f"{len(answers)} answers for {len(ground_truths)} ground truths")
    return answers, ground_truths


def grade_answers(
    answers: Sequence[str],
    ground_truths: Sequence[str | None],
    mode: str = "reference",
    timeout_s: float = DEFAULT_ITEM_TIMEOUT_S,
) -> list[float]:
    """Grade extracted answers in this process, each under the per-item rule of the module docstring."""
    answers, ground_truths = _checked(answers, ground_truths, mode)
    return _grade_items(answers, ground_truths, mode, timeout_s)[0]


class Grader(Protocol):
    """Scores of extracted answers against their ground truths, in order (1.0 or 0.0 each)."""

    def grade(
        self, answers: Sequence[str], ground_truths: Sequence[str | None], mode: str = "reference"
    ) -> list[float]: ...


class _TimeoutCounter:
    """``last_num_timeouts`` (the latest call) and ``num_timeouts`` (all calls), for run metrics."""

    def __init__(self):
        self.num_timeouts = 0
        self.last_num_timeouts = 0
        self._lock = threading.Lock()

    def _count_timeouts(self, timeouts: int) -> None:
        with self._lock:
            self.last_num_timeouts = timeouts
            self.num_timeouts += timeouts


class InlineGrader(_TimeoutCounter):
    """Grades in the calling process: no start-up cost; the time limit holds in the main thread only."""

    def __init__(self, timeout_s: float = DEFAULT_ITEM_TIMEOUT_S):
        super().__init__()
        self.timeout_s = timeout_s

    def grade(
        self, answers: Sequence[str], ground_truths: Sequence[str | None], mode: str = "reference"
    ) -> list[float]:
        answers, ground_truths = _checked(answers, ground_truths, mode)
        scores, timeouts = _grade_items(answers, ground_truths, mode, self.timeout_s)
        self._count_timeouts(timeouts)
        return scores


class ProcessPoolGrader(_TimeoutCounter):
    """Grades in worker processes, so the time limit holds whatever thread calls it.

    * Workers are started with ``spawn`` by default, which is safe in a process that already runs threads or CUDA.
    * Items travel in chunks, so inter-process overhead is paid per chunk, not per item.
    * An item over ``timeout_s`` scores 0.0 and is counted in ``num_timeouts``. If a worker is stuck somewhere
      SIGALRM cannot interrupt, a global deadline kills the pool, the unfinished items score 0.0 (counted too)
      and a fresh pool is started on the next call.
    """

    def __init__(
        self,
        workers: int = 4,
        timeout_s: float = DEFAULT_ITEM_TIMEOUT_S,
        chunk_size: int | None = None,
        start_method: str = "spawn",
        deadline_slack_s: float = 60.0,
    ):
        if workers < 1:
            raise ValueError("workers must be >= 1 (InlineGrader grades in this process)")
        super().__init__()
        self.workers = workers
        self.timeout_s = timeout_s
        self.chunk_size = chunk_size
        self.start_method = start_method
        self.deadline_slack_s = deadline_slack_s
        self._executor: cf.ProcessPoolExecutor | None = None
        self._closed = False

    def _get_executor(self) -> cf.ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("ProcessPoolGrader is closed")
            if self._executor is None:
                context = multiprocessing.get_context(self.start_method)
                self._executor = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
            return self._executor

    def _chunk_bounds(self, n: int) -> list[tuple[int, int]]:
        size = self.chunk_size or max(1, min(512, math.ceil(n / (4 * self.workers))))
        return [(i, min(i + size, n)) for i in range(0, n, size)]

    def grade(
        self, answers: Sequence[str], ground_truths: Sequence[str | None], mode: str = "reference"
    ) -> list[float]:
        answers, ground_truths = _checked(answers, ground_truths, mode)
        if not answers:
            self._count_timeouts(0)
            return []
        executor = self._get_executor()
        bounds = self._chunk_bounds(len(answers))
        futures = [
            executor.submit(_grade_items, answers[a:b], ground_truths[a:b], mode, self.timeout_s) for a, b in bounds
        ]
        deadline = (self.timeout_s or 0) * math.ceil(len(answers) / self.workers) + self.deadline_slack_s
        cf.wait(futures, timeout=deadline)
        scores, timeouts, pool_broken = [], 0, False
        for (a, b), future in zip(bounds, futures):
            if future.done() and future.exception() is None:
                chunk_scores, chunk_timeouts = future.result()
                scores.extend(chunk_scores)
                timeouts += chunk_timeouts
            else:
                pool_broken = True
                scores.extend([0.0] * (b - a))
                timeouts += b - a
        if pool_broken:
            self._discard_executor()
        self._count_timeouts(timeouts)
        return scores

    def _discard_executor(self) -> None:
        """Kill the workers of a pool that missed its deadline (or broke) so none keeps running."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        for process in list(getattr(executor, "_processes", {}).values()):
            try:
                process.kill()
            except Exception:
                pass
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessPoolGrader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RayGrader:
    """Grades on a Ray fleet's reward workers: ``fleet.grade_answers`` runs :func:`grade_answers` there."""

    def __init__(self, fleet, timeout_s: float = DEFAULT_ITEM_TIMEOUT_S):
        self.fleet = fleet
        self.timeout_s = timeout_s

    def grade(
        self, answers: Sequence[str], ground_truths: Sequence[str | None], mode: str = "reference"
    ) -> list[float]:
        answers, ground_truths = _checked(answers, ground_truths, mode)
        return list(self.fleet.grade_answers(answers, ground_truths, mode, self.timeout_s))
