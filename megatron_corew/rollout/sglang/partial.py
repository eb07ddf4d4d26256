"""Interruptible generation on SGLang servers (the ``submit`` / ``collect`` / ``interrupt`` contract of
``rollout/base.py``), built on SGLang's own pause and abort API.

* ``submit``: one ``/generate`` per request, ``input_ids`` = prompt + kept tokens, ``max_new_tokens`` = the
  remaining budget, sent from a thread pool (spread over the engines, or to the router).
* ``interrupt``: ``/pause_generation`` with mode ``abort`` on every engine aborts every request it holds and
  returns only when its scheduler is drained; each aborted ``/generate`` answers with finish reason ``abort`` and
  the ``output_ids`` and ``output_token_logprobs`` it had produced, which the request keeps. Then
  ``/continue_generation``; a request that was still on its way to a server when the pause came is caught by
  ``/abort_request`` (``abort_all``), repeated until every call has answered.

Every token a call returns is stamped with the engine's integer ``weight_version`` at submit, after checking that
the server reports the matching tag (``"<role>-<version>"``) for the whole answer (its ``weight_versions`` spans
included): a call that overlapped a weight update fails instead of mixing versions silently.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

import torch

from megatron_corew.rollout.base import Request
from megatron_corew.rollout.sglang.generate_api import post_generate, read_answer, stream_seed
from megatron_corew.rollout.sglang.http import SGLangError, SGLangHTTPError


class _InFlight:
    """What the mixin keeps between calls: the calls in flight and the requests they returned."""

    def __init__(self, workers: int):
        self.cond = threading.Condition()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sglang-partial")
        self.calls: dict[int, tuple[Request, Future]] = {}  # id(request) -> the request and its /generate call
        self.finished: list[Request] = []
        self.stopped: list[Request] = []
        self.errors: list[str] = []
        self.next_engine = 0


class PartialRollouts:
    """The interruptible API of ``SGLangEngine`` (it provides ``fleet``, ``state``, ``http``, ``eos``, ``weights``,
    ``weight_version``, ``stats``, ``_sampling_params`` and ``_ensure_ready``)."""

    partial_workers = 64  # /generate calls open at once; further requests queue in the client until one answers

    def _inflight(self) -> _InFlight:
        if getattr(self, "_partial", None) is None:
            self._partial = _InFlight(self.partial_workers)
        return self._partial

    def partial_busy(self) -> bool:
        st = getattr(self, "_partial", None)
        return st is not None and any(not f.done() for _, f in st.calls.values())

    def submit(self, requests: list[Request]) -> None:
        st = self._inflight()
        with self.state.lock:
            self._restarts_left = self.max_restarts
            self._ensure_ready()
            tag, version = self.weights.tag, int(self.weight_version)
        with st.cond:
            for r in requests:
                if r.finish_reason is not None:
                    raise ValueError(f"request {r.rid} already finished ({r.finish_reason})")
                if r.seed is None:
                    r.seed = int(torch.randint(0, 2**62, ()).item())
                if r.remaining == 0:
                    r.finish_reason = "length"
                    st.finished.append(r)
                    continue
                e = -1 if self.fleet.router_url else st.next_engine % len(self.fleet)
                st.next_engine += 1
                st.calls[id(r)] = (r, st.pool.submit(self._partial_call, r, e, tag, version))
            st.cond.notify_all()

    def collect(self, timeout: float | None = None) -> list[Request]:
        st = self._inflight()
        deadline = None if timeout is None else time.monotonic() + timeout
        with st.cond:
            while not st.finished and not st.errors and st.calls:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                st.cond.wait(left)
            if st.errors:
                raise SGLangError("; ".join(st.errors))
            out, st.finished = st.finished, []
        return out

    def interrupt(self) -> list[Request]:
        st = self._inflight()
        engines = list(range(len(self.fleet)))
        with st.cond:  # calls still queued in the pool never reach a server
            for key, (r, f) in list(st.calls.items()):
                if f.cancel():
                    st.stopped.append(r)
                    del st.calls[key]
        if st.calls:
            self._call_all(engines, lambda i: self._post(i, "/pause_generation", {"mode": "abort"}))
            self._call_all(engines, lambda i: self._post(i, "/continue_generation", {}))
            while True:
                with st.cond:
                    calls = [f for _, f in st.calls.values()]
                if not wait(calls, timeout=0.5).not_done:
                    break
                # a call that reached its server after the pause is running now: abort it too
                self._call_all(engines, lambda i: self._post(i, "/abort_request", {"abort_all": True}))
        with st.cond:
            out, st.stopped = st.stopped, []
            errors, st.errors = st.errors, []
        if errors:
            raise SGLangError("; ".join(errors))
        for r in out:
            r.interruptions += 1
        return sorted(out, key=lambda r: r.rid)

    # ------------------------------------------------------------------ one request
    def _partial_call(self, r: Request, e: int, tag: str, version: int) -> None:
        url = self.fleet.router_url if e < 0 else self.fleet.url(e)
        sp = dict(self._sampling_params(r.params), max_new_tokens=int(r.remaining))
        if not r.params.greedy:  # the resumed part draws a stream of its own
            sp["sampling_seed"] = stream_seed(r.seed, len(r.response_ids))
        st = self._partial
        t0 = time.perf_counter()
        try:
            resp = post_generate(self.http, url, [int(t) for t in r.prompt_ids] + list(r.response_ids), sp)
            ids, lps, aborted = self._partial_answer(resp, url, tag)
        except (SGLangHTTPError, SGLangError) as err:
            with st.cond:
                st.errors.append(f"request {r.rid}: {err}")
                st.stopped.append(r)  # nothing of this call kept; interrupt() hands it back
                del st.calls[id(r)]
                st.cond.notify_all()
            return
        r.keep(ids, lps, version)
        with st.cond:
            self.stats["tokens"] += len(ids)
            self.stats["seconds"] += time.perf_counter() - t0
            if r.response_ids and r.response_ids[-1] in self.eos:
                r.finish_reason = "stop"
            elif r.remaining == 0:
                r.finish_reason = "length"
            elif not aborted:
                st.errors.append(f"request {r.rid}: {url} stopped early without EOS or abort")
            if r.finish_reason is not None:
                st.finished.append(r)
            else:
                st.stopped.append(r)
            del st.calls[id(r)]
            st.cond.notify_all()

    def _partial_answer(self, resp, url: str, tag: str) -> tuple[list[int], list[float], bool]:
        """(output ids, their log-probs, aborted) of one answer, after the alignment and version checks."""
        if isinstance(resp, list):
            resp = resp[0]
        ids, lps, ftype, meta = read_answer(resp, url)
        served = {meta.get("weight_version")} | {s.get("version") for s in meta.get("weight_versions") or []}
        if served != {tag}:
            raise SGLangError(
                f"{url}: tokens generated with weight version(s) {sorted(map(str, served))}, expected {tag!r}"
            )
        return ids, lps, ftype == "abort"

    def _refuse_while_partial(self) -> None:
        if self.partial_busy():
            raise SGLangError("weight update while partial requests are in flight: interrupt() them first")
