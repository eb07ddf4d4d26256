"""SGLang rollout engine: generation over a fleet of SGLang servers, with weights pushed from the trainer.

``SGLangEngine.generate`` sends ``input_ids`` (never text) with ``return_logprob``, one contiguous share of the
prompts per engine (or per router); a sample whose reported weight version is not the one expected fails the call.
``update_weights`` pushes one full set of weights (``weight_sync.py``); a dead engine is restarted and refilled
within a bounded number of restarts (``fleet.RestartPolicy``). The interruptible API (``submit`` / ``collect`` /
``interrupt``, partial rollouts) is ``partial.PartialRollouts``.

Log-probs: SGLang's ``output_token_logprobs`` (default, ``SGLANG_RETURN_ORIGINAL_LOGPROB`` unset)
are ``log softmax(logits / T)`` taken before top-p/top-k truncation (sampler.py: the softmax of
the temperature-scaled logits is kept and truncation works on a sorted copy), and for greedy
requests (temperature 0) ``log softmax(logits)``: exactly the quantity ``Generation.logprobs``
defines and the embedded engine reports. The engine refuses to run with
``SGLANG_RETURN_ORIGINAL_LOGPROB`` set in the server environment.

Co-rewarding-II's teacher uses the same machinery: either its own engine group (a second
``SGLangEngine``) or ``role_view("teacher")`` on the policy's fleet, which keeps the teacher's
last weights (on disk or in memory) and swaps them in before a teacher generation.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

import torch

from megatron_corew.rollout.base import Generation, RolloutEngine, SamplingParams
from megatron_corew.rollout.sglang.fleet import Fleet, FleetState, RestartPolicy
from megatron_corew.rollout.sglang.generate_api import post_generate, read_answer, stream_seed
from megatron_corew.rollout.sglang.http import EngineDownError, HTTPConfig, SGLangError, SGLangHTTPError, http_json
from megatron_corew.rollout.sglang.partial import PartialRollouts
from megatron_corew.rollout.sglang.weight_sync import DiskWeights, MemoryWeights, WeightSync


class SGLangEngine(PartialRollouts, RestartPolicy, WeightSync, RolloutEngine):
    """The RolloutEngine over a fleet of SGLang servers (see the module docstring)."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        model_path: str,
        eos_token_ids: list[int],
        role: str = "policy",
        weight_sync: str = "disk",
        sync_dir: str | None = None,
        bucket_bytes: int = 512 << 20,
        http: HTTPConfig | None = None,
        max_restarts: int = 1,
        keep_weights: bool | None = None,
        request_batch_size: int | None = None,
        dist_backend: str | None = None,
        dist_master_addr: str = "127.0.0.1",
        pause_during_sync: bool = True,
        layout: str = "sharded",
        delta: bool = False,
        engine_dtype: str | None = None,
        _state: FleetState | None = None,
        _shared: bool = False,
    ):
        if weight_sync not in ("tensor", "distributed", "disk"):
            raise ValueError(f"unknown weight sync mode {weight_sync!r}")
        if layout not in ("sharded", "funnel"):
            raise ValueError(f"unknown weight sync layout {layout!r}")
        self.layout, self.delta, self._engine_dtype = layout, bool(delta), engine_dtype
        self._delta_tag: str | None = None
        self.fleet = fleet
        self.state = _state or FleetState(fleet)
        self.model_path = model_path
        self.eos = [int(e) for e in eos_token_ids]
        if not self.eos:
            raise ValueError(f"{model_path}: no eos token id; cannot stop generation")
        self.role = role
        self.weight_sync = weight_sync
        self.sync_dir = sync_dir or os.path.join(os.path.abspath(model_path) + ".sglang-sync")
        self.bucket_bytes = int(bucket_bytes)
        self.http = http or HTTPConfig()
        self.max_restarts = max_restarts
        self.shared = _shared
        # the last weights this role pushed, kept to refill a restarted engine or swap the role back in
        self.keep_weights = (fleet.can_restart or _shared) if keep_weights is None else keep_weights
        self.request_batch_size = request_batch_size
        self.dist_backend = dist_backend or ("nccl" if torch.cuda.is_available() else "gloo")
        self.dist_master_addr = dist_master_addr
        self.pause_during_sync = pause_during_sync
        self.weights = DiskWeights(model_path, "default")  # what this role should serve
        self.weight_version = 0
        self.stats = {"tokens": 0, "seconds": 0.0, "sync_seconds": 0.0, "syncs": 0}
        self._views: list[SGLangEngine] = []
        self._restarts_left = max_restarts

    # ------------------------------------------------------------------ construction helpers
    def role_view(self, role: str) -> "SGLangEngine":
        """Another role (the Co-rewarding-II teacher) served by the same engines: its weights are
        kept (disk or memory) and swapped in before each of its generations."""
        view = SGLangEngine(
            self.fleet,
            model_path=self.model_path,
            eos_token_ids=self.eos,
            role=role,
            weight_sync=self.weight_sync,
            sync_dir=self.sync_dir,
            bucket_bytes=self.bucket_bytes,
            http=self.http,
            max_restarts=self.max_restarts,
            keep_weights=True,
            request_batch_size=self.request_batch_size,
            dist_backend=self.dist_backend,
            dist_master_addr=self.dist_master_addr,
            pause_during_sync=self.pause_during_sync,
            layout=self.layout,
            delta=self.delta,
            engine_dtype=self._engine_dtype,
            _state=self.state,
            _shared=True,
        )
        self.shared = True
        self.keep_weights = True
        self._views.append(view)
        return view

    # ------------------------------------------------------------------ public API
    @property
    def grader(self):
        """The fleet's reward grader (Ray reward workers), or None: rewards are then graded in the trainer."""
        return getattr(self.fleet, "grader", None)

    def throughput(self) -> float:
        return self.stats["tokens"] / max(self.stats["seconds"], 1e-9)

    def engine_throughputs(self) -> dict[str, float]:
        """Client-side tokens/s of each engine (and of the router, which is where routed traffic is counted) since
        start; no HTTP call, so the training loop can log it every step."""
        out = {str(i): s.as_dict()["tokens_per_s"] for i, s in enumerate(self.state.stats) if s.tokens}
        if self.fleet.router_url and self.state.router_stats.tokens:
            out["router"] = self.state.router_stats.as_dict()["tokens_per_s"]
        return out

    def engine_stats(self) -> list[dict]:
        """Per engine: tokens, busy seconds, tokens/s, requests, failures, restarts, weight loads
        (client-side; through a router the traffic is counted on the router's row, and each
        engine's own last generation throughput is read from its /get_server_info)."""
        rows = [dict(s.as_dict(), engine=i, url=self.fleet.url(i)) for i, s in enumerate(self.state.stats)]
        if self.fleet.router_url:
            rows.append(dict(self.state.router_stats.as_dict(), engine="router", url=self.fleet.router_url))
            for i, row in enumerate(rows[:-1]):
                try:
                    info = http_json("GET", self.fleet.url(i) + "/get_server_info", timeout=10, retries=0)
                    states = info.get("internal_states") or [{}]
                    row["server_last_gen_throughput"] = states[0].get("last_gen_throughput")
                except SGLangHTTPError:
                    row["server_last_gen_throughput"] = None
        return rows

    @property
    def wire_dtype(self) -> str | None:
        """The dtype the engines serve in ("bfloat16", "float32", ...): weights are cast to it before they
        travel. From ``--sglang-dtype`` or the first engine's /get_server_info; None ("auto"): sent as exported."""
        if self._engine_dtype is None:
            try:
                info = http_json("GET", self.fleet.url(0) + "/get_server_info", timeout=self.http.control_timeout)
                self._engine_dtype = str(info.get("dtype") or "auto")
            except SGLangHTTPError:
                self._engine_dtype = "auto"
        names = {"float": "float32", "float32": "float32", "bfloat16": "bfloat16", "half": "float16"}
        return names.get(self._engine_dtype, "float16" if self._engine_dtype == "float16" else None)

    def health(self) -> bool:
        return all(self.fleet.alive(i) for i in range(len(self.fleet)))

    def shutdown(self) -> None:
        with self.state.lock:
            if self.state.closed:
                return
            self.state.closed = True
            self._destroy_dist_group()
            self.fleet.shutdown()

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
        t0 = time.perf_counter()
        with self.state.lock:
            self._restarts_left = self.max_restarts
            self._ensure_ready()
            results: list[Generation | None] = [None] * len(prompts)
            # per-prompt seeds need a list of sampling params, which sglang_router (0.3.x) cannot parse: through a
            # router, seeded sampling goes one prompt per request (the router spreads them, the engines batch them)
            pending = self._plan(
                len(prompts), single=bool(self.fleet.router_url) and params.seed is not None and not params.greedy
            )
            rounds = 0
            while pending:
                failed = self._run_requests(pending, prompts, params, results)
                if not failed:
                    break
                rounds += 1
                if self.fleet.router_url is None:
                    suspects = sorted({e for e, _ in failed})
                else:
                    suspects = list(range(len(self.fleet)))
                dead = [e for e in suspects if not self.fleet.alive(e)]
                if rounds > self.max_restarts or (dead and self._restarts_left < len(dead)):
                    if dead:
                        raise EngineDownError(
                            f"rollout engine(s) {[self.fleet.describe(e) for e in dead]} stayed down after "
                            f"{self.max_restarts} restart(s); the step is aborted before any training update "
                            f"(model, optimizer and checkpoints are untouched)"
                        )
                    raise SGLangError(
                        f"/generate kept failing on {[self.fleet.url(e) for e in suspects]} although "
                        f"the engines answer /health (see the [sglang] lines above)"
                    )
                for e in dead:
                    if not self.fleet.can_restart:
                        raise EngineDownError(
                            f"rollout engine {self.fleet.describe(e)} is down and cannot be restarted (attached with "
                            f"--sglang-urls); the step is aborted before any training update (model, optimizer and "
                            f"checkpoints are untouched)"
                        )
                    self._restart_and_refill(e)
                pending = failed
        out = [g for g in results if g is not None]
        assert len(out) == len(prompts)
        self.stats["seconds"] += time.perf_counter() - t0
        self.stats["tokens"] += sum(len(g.response_ids) for g in out)
        return out

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """Push one full set of weights. The iterator is always exhausted, even on failure (other
        ranks take part in exporting it). A failed push leaves the engines marked stale, so no
        rollout is served from half-updated weights."""
        it = iter(named_tensors)
        tag = f"{self.role}-{int(version)}"
        t0 = time.perf_counter()
        try:
            self._refuse_while_partial()
            with self.state.lock:
                self._restarts_left = self.max_restarts
                resident = [i for i in range(len(self.fleet))]
                if self.shared:
                    # only engines currently serving this role take the push now; others get it when swapped in
                    resident = [i for i in resident if self.state.loaded[i][1] == self.weights.tag]
                if self.weight_sync == "disk":
                    path = os.path.join(self.sync_dir, self.role, f"v{int(version):06d}")
                    from checkpoints_conversion.hf_io import write_hf_checkpoint

                    write_hf_checkpoint(path, it, config_dir=self.model_path)
                    old = self.weights
                    self.weights = DiskWeights(path, tag)
                    self._ensure_alive(resident)
                    self._push_disk(resident, path, tag)
                    if (
                        isinstance(old, DiskWeights)
                        and old.path != path
                        and old.path.startswith(os.path.abspath(self.sync_dir))
                    ):
                        shutil.rmtree(old.path, ignore_errors=True)
                else:
                    self._ensure_alive(resident)
                    kept = self._push_stream(resident, it, tag)
                    self.weights = MemoryWeights(kept, tag) if kept is not None else DiskWeights("", tag)
            self.weight_version = int(version)
        finally:
            for _ in it:
                pass
        dt = time.perf_counter() - t0
        self.stats["sync_seconds"] += dt
        self.stats["syncs"] += 1

    # ------------------------------------------------------------------ generation
    def _plan(self, n: int, single: bool = False) -> list[tuple[int, list[int]]]:
        """(target, prompt indices) requests: a contiguous share per engine, cut into batches of at
        most request_batch_size (of one prompt with ``single``). Through a router the target is -1 and the
        shares are sized the same way, so the router has one request per engine to spread."""
        engines = len(self.fleet)
        per = -(-n // engines)
        size = 1 if single else min(per, self.request_batch_size or per)
        plan = []
        for e in range(engines):
            idx = list(range(e * per, min(n, (e + 1) * per)))
            for s in range(0, len(idx), size):
                plan.append((-1 if self.fleet.router_url else e, idx[s : s + size]))
        return plan

    def _sampling_params(self, params: SamplingParams) -> dict:
        sp = {
            "max_new_tokens": int(params.max_new_tokens),
            "stop_token_ids": list(self.eos),
            "skip_special_tokens": False,
            "no_stop_trim": True,
        }
        if params.greedy:
            sp["temperature"] = 0.0
        else:
            sp.update(temperature=float(params.temperature), top_p=float(params.top_p), top_k=-1, min_p=0.0)
        return sp

    def _run_requests(self, plan, prompts, params: SamplingParams, results) -> list[tuple[int, list[int]]]:
        sp = self._sampling_params(params)
        failed: list[tuple[int, list[int]]] = []
        lock = threading.Lock()

        def one(item):
            e, idx = item
            url = self.fleet.router_url if e < 0 else self.fleet.url(e)
            if params.seed is not None and not params.greedy:
                seeded = [dict(sp, sampling_seed=stream_seed(params.seed, k)) for k in idx]
                sampling = seeded[0] if len(idx) == 1 else seeded
            else:
                sampling = sp
            t0 = time.perf_counter()
            try:
                resp = post_generate(self.http, url, [list(map(int, prompts[k])) for k in idx], sampling)
            except SGLangHTTPError as err:
                with lock:
                    self.state.stat(e).failures += 1
                    failed.append(item)
                target = "router" if e < 0 else f"engine {e}"
                self.state.event(f"{target}: /generate of {len(idx)} prompts failed: {err}")
                return
            dt = time.perf_counter() - t0
            if isinstance(resp, dict):
                resp = [resp]
            if len(resp) != len(idx):
                raise SGLangError(f"{url}/generate returned {len(resp)} results for {len(idx)} prompts")
            ntok = 0
            for k, r in zip(idx, resp):
                results[k] = self._to_generation(prompts[k], r, e, url)
                ntok += len(results[k].response_ids)
            with lock:
                st = self.state.stat(e)
                st.tokens += ntok
                st.prompt_tokens += sum(len(prompts[k]) for k in idx)
                st.seconds += dt
                st.requests += 1

        with ThreadPoolExecutor(max_workers=min(len(plan), 64)) as ex:
            list(ex.map(one, plan))
        return failed

    def _to_generation(self, prompt: list[int], r: dict, engine: int, url: str) -> Generation:
        ids, lps, ftype, meta = read_answer(r, url)
        if ftype == "abort":
            fr = meta.get("finish_reason") or {}
            raise SGLangError(f"{url}: request aborted by the server: {fr.get('message')}")
        served = meta.get("weight_version")
        if served != self.weights.tag:
            raise SGLangError(
                f"{url}: sample generated with weight version {served!r}, expected {self.weights.tag!r} "
                f"({self.role}); refusing stale rollouts"
            )
        finish = "stop" if ids and ids[-1] in self.eos else "length"
        return Generation(
            prompt_ids=list(prompt),
            response_ids=ids,
            logprobs=lps,
            finish_reason=finish,
            weight_version=self.weight_version,
            meta={"engine": engine, "weight_tag": served, "sglang_finish": ftype},
        )
