"""The embedded engine's interruptible generation (the ``submit`` / ``collect`` / ``interrupt`` contract of
``rollout/base.py``): one background thread decodes the submitted requests in batches, in-process; an interrupt
stops it after the current token and hands the unfinished requests back with what they kept.

Resumes are exact: a request's token ``j`` is drawn from (request seed, j) by the engine's one sampler
(rollout/sampler.py), never from a batch-wide stream, so neither the batch a request shares nor where it was
interrupted changes which token it draws. A resumed request is prefilled with ``prompt + kept tokens`` and
continues at index ``len(kept)``: with unchanged weights it yields the tokens of an uninterrupted run
(``tests/test_partial_rollouts.py``). A batch is decoded by the engine's own loop (``decode_rows``), so the
requests of a call submitted at once are decoded exactly as ``generate`` decodes the same call.
"""

from __future__ import annotations

import threading
import time

import torch

from megatron_corew.rollout.base import Request


class PartialDecoder:
    """Background decoding of ``Request``s for one ``EmbeddedEngine``. Requests of one batch share sampling
    parameters (temperature, top-p, greedy); a submit of mixed parameters is decoded in one batch per kind."""

    def __init__(self, engine):
        self.engine = engine
        self.cond = threading.Condition()
        self.pending: list[Request] = []  # submitted, waiting for a batch
        self.running: list[Request] = []  # in the batch being decoded
        self.finished: list[Request] = []  # done, not yet collected
        self.stopped: list[Request] = []  # interrupted mid-batch
        self.stop = False
        self.error: str | None = None
        self.thread: threading.Thread | None = None

    def busy(self) -> bool:
        with self.cond:
            return bool(self.pending or self.running)

    def submit(self, requests: list[Request]) -> None:
        with self.cond:
            for r in requests:
                if r.finish_reason is not None:
                    raise ValueError(f"request {r.rid} already finished ({r.finish_reason})")
                if r.seed is None:  # fixed now, so a resume draws from the same stream
                    r.seed = int(torch.randint(0, 2**62, ()).item())
                if r.remaining == 0:
                    r.finish_reason = "length"
                    self.finished.append(r)
                else:
                    self.pending.append(r)
            if self.pending and self.thread is None:
                self.thread = threading.Thread(target=self._loop, name="embedded-partial", daemon=True)
                self.thread.start()
            self.cond.notify_all()

    def collect(self, timeout: float | None = None) -> list[Request]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not self.finished and self.error is None and (self.pending or self.running):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self.cond.wait(left)
            self._raise_error()
            out, self.finished = self.finished, []
        return out

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(error)

    def interrupt(self) -> list[Request]:
        with self.cond:
            self.stop = True
            self.cond.notify_all()
            while self.running:
                self.cond.wait()
            out = self.stopped + self.pending
            self.stopped, self.pending = [], []
            thread = self.thread
        if thread is not None:
            thread.join()
        with self.cond:
            self.stop = False
            if self.error is not None:
                self.stopped = out  # handed back by the next interrupt
                self._raise_error()
        for r in out:
            r.interruptions += 1
        return sorted(out, key=lambda r: r.rid)

    # ------------------------------------------------------------------ the decoding thread
    def _loop(self) -> None:
        try:
            with torch.no_grad():  # grad mode is per thread
                while True:
                    with self.cond:
                        if self.stop or not self.pending:
                            return
                        kind = _kind(self.pending[0])
                        batch = [r for r in self.pending if _kind(r) == kind][: self.engine.max_batch_size]
                        self.pending = [r for r in self.pending if not any(r is b for b in batch)]
                        self.running = batch
                    try:
                        self._decode(batch)
                    except Exception as e:  # noqa: BLE001  (handed to the caller by collect / interrupt)
                        with self.cond:
                            self.error = f"embedded decoding failed: {type(e).__name__}: {e}"
                            self.stopped += [
                                r for r in batch if r.finish_reason is None and all(r is not s for s in self.stopped)
                            ]
                        return
                    finally:
                        with self.cond:
                            self.running = []
                            self.cond.notify_all()
        finally:
            with self.cond:
                self.thread = None  # a submit from now on starts a new thread
                self.cond.notify_all()

    def _finish(self, r: Request, ids, lps, version: int, reason: str | None) -> None:
        r.keep(ids, lps, version)
        with self.cond:
            if reason is None:
                self.stopped.append(r)
            else:
                r.finish_reason = reason
                self.finished.append(r)
            self.cond.notify_all()

    def _decode(self, batch: list[Request]) -> None:
        eng = self.engine
        version = int(eng.weight_version)
        t0 = time.perf_counter()
        tokens, logps, lengths, reasons = eng.decode_rows(
            [list(r.prompt_ids) + list(r.response_ids) for r in batch],
            batch[0].params,
            [r.seed for r in batch],
            [len(r.response_ids) for r in batch],
            [r.remaining for r in batch],
            stop=lambda: self.stop,
            on_finish=lambda k, ids, lps, reason: self._finish(batch[k], ids, lps, version, reason),
        )
        for k, r in enumerate(batch):
            if reasons[k] is None:  # interrupted: keep what was decoded
                self._finish(r, tokens[k, : lengths[k]].tolist(), logps[k, : lengths[k]].tolist(), version, None)
        eng.stats["seconds"] += time.perf_counter() - t0
        eng.stats["tokens"] += sum(lengths)


def _kind(r: Request) -> tuple:
    p = r.params
    return (bool(p.greedy), float(p.temperature), float(p.top_p))
