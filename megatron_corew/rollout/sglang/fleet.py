"""Who owns the engines, what the client knows about them, and how a dead one is brought back.

Fleets (``LocalFleet``, ``AttachedFleet``; ``ray_fleet.RayRolloutManager``) say whether a dead engine can be
restarted. Every start gets a fresh ``instance_id``, so the engine client notices a restart it did not do itself
and refills the weights. ``RestartPolicy`` is the client side: at most ``max_restarts`` restarts per call, and a
restarted engine gets the role's current weights again before it serves.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from megatron_corew.rollout.sglang.http import EngineDownError, HTTPConfig, SGLangHTTPError, http_json, log_event
from megatron_corew.rollout.sglang.server import RouterProcess, ServerProcess, ServerSpec


class Fleet:
    """Who owns the engines. Subclasses: LocalFleet, AttachedFleet, ray_fleet.RayRolloutManager."""

    can_restart = False
    router_url: str | None = None
    tp_sizes: list[int]

    def __len__(self) -> int:
        raise NotImplementedError

    def url(self, i: int) -> str:
        raise NotImplementedError

    def instance_id(self, i: int) -> str:
        """Changes whenever engine i was (re)started; the client then refills its weights."""
        raise NotImplementedError

    def alive(self, i: int) -> bool:
        raise NotImplementedError

    def restart(self, i: int) -> float:
        raise EngineDownError(f"engine {i} ({self.url(i)}) is down and this fleet cannot restart it")

    def describe(self, i: int) -> str:
        return self.url(i)

    def shutdown(self) -> None:
        pass


class AttachedFleet(Fleet):
    """Servers started by someone else (``--sglang-urls``): used as they are, never restarted."""

    def __init__(self, urls: list[str], http: HTTPConfig, router_url: str | None = None, tp_sizes=None):
        self.urls = [u.rstrip("/") for u in urls]
        self.http, self.router_url = http, router_url
        self.tp_sizes = list(tp_sizes or [1] * len(urls))
        self._ids = [f"attached-{u}" for u in self.urls]

    def __len__(self):
        return len(self.urls)

    def url(self, i):
        return self.urls[i]

    def instance_id(self, i):
        return self._ids[i]

    def alive(self, i):
        try:
            http_json("GET", self.urls[i] + "/health", timeout=min(self.http.control_timeout, 10), retries=1)
            return True
        except SGLangHTTPError:
            return False


class LocalFleet(Fleet):
    """N server processes on this machine, started together (plus a router when asked)."""

    can_restart = True

    def __init__(
        self,
        specs: list[ServerSpec],
        http: HTTPConfig,
        startup_timeout: float = 600.0,
        use_router: bool = False,
        router_python: str | None = None,
        log_dir: str | None = None,
    ):
        self.procs = [ServerProcess(s) for s in specs]
        self.http, self.startup_timeout = http, startup_timeout
        self.tp_sizes = [s.tp_size for s in specs]
        self.router: RouterProcess | None = None
        self._use_router, self._router_python, self._log_dir = use_router, router_python, log_dir
        self._lock = threading.Lock()

    def start(self) -> "LocalFleet":
        t0 = time.monotonic()
        try:
            for p in self.procs:  # Popen from this (long-lived) thread: the parent-death signal is per thread
                p.start()
                log_event(f"{p.name}: started pid {p.pid} on {p.url} (log {p.log_path})")
            with ThreadPoolExecutor(len(self.procs)) as ex:
                list(ex.map(lambda p: p.wait_ready(self.startup_timeout), self.procs))
            if self._use_router:
                python = self._router_python or self.procs[0].spec.python
                self.router = RouterProcess(
                    python,
                    [p.url for p in self.procs],
                    log_path=os.path.join(self._log_dir, "router.log") if self._log_dir else None,
                    request_timeout=self.http.request_timeout,
                )
                self.router.start()
                self.router_url = self.router.url
                log_event(f"router: pid {self.router.pid} on {self.router.url} -> {[p.url for p in self.procs]}")
        except BaseException:
            self.shutdown()
            raise
        log_event(f"{len(self.procs)} engine(s) ready in {time.monotonic() - t0:.1f} s")
        return self

    def __len__(self):
        return len(self.procs)

    def url(self, i):
        return self.procs[i].url

    def instance_id(self, i):
        return self.procs[i].instance_id

    def pid(self, i):
        return self.procs[i].pid

    def alive(self, i):
        return self.procs[i].healthy(self.http)

    def describe(self, i):
        p = self.procs[i]
        return f"{p.name} ({p.url}, pid {p.pid}, log {p.log_path})"

    def restart(self, i) -> float:
        with self._lock:
            p = self.procs[i]
            code = p.proc.poll() if p.proc else None
            p.stop()
            previous = f"exited with code {code}" if code is not None else "unresponsive"
            log_event(f"{p.name}: restarting (previous process {previous}); last log lines:\n{p.log_tail(8)}")
            t0 = time.monotonic()
            p.start()
            p.wait_ready(self.startup_timeout)
            dt = time.monotonic() - t0
            log_event(f"{p.name}: back up as pid {p.pid} after {dt:.1f} s")
            return dt

    def shutdown(self):
        if self.router:
            self.router.stop()
        for p in self.procs:
            if p.proc is not None:
                p.stop()


@dataclass
class EngineStats:
    tokens: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0
    requests: int = 0
    failures: int = 0
    restarts: int = 0
    weight_loads: int = 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["tokens_per_s"] = self.tokens / self.seconds if self.seconds > 0 else 0.0
        return d


class FleetState:
    """What the client knows about each engine of a fleet; shared by the role views on it."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.lock = threading.RLock()
        n = len(fleet)
        self.loaded: list[tuple[str | None, str | None]] = [(fleet.instance_id(i), "default") for i in range(n)]
        self.stats = [EngineStats() for _ in range(n)]
        self.router_stats = EngineStats()
        self.events: list[str] = []
        self.dist_group = None
        self.dist_group_name: str | None = None
        self.dist_members: list[str] | None = None
        self.dist_counter = 0
        self.closed = False

    def stat(self, e: int) -> "EngineStats":
        return self.router_stats if e < 0 else self.stats[e]

    def event(self, msg: str) -> None:
        self.events.append(msg)
        log_event(msg)


class RestartPolicy:
    """Readiness and restarts for ``SGLangEngine``: it provides ``fleet``, ``state``, ``role``, ``weights``,
    ``max_restarts``, ``_restarts_left`` (reset at the start of every call) and ``_load(i)``."""

    def _ensure_alive(self, engines: list[int]) -> None:
        for i in engines:
            if not self.fleet.alive(i):
                if not self.fleet.can_restart:
                    raise EngineDownError(f"rollout engine {self.fleet.describe(i)} is down and cannot be restarted")
                self.state.event(f"engine {i} ({self.fleet.url(i)}) found dead before a weight update")
                self._restart(i)

    def _restart(self, i: int) -> None:
        if self._restarts_left <= 0:
            raise EngineDownError(
                f"rollout engine {self.fleet.describe(i)} is down and stayed down: no restart left "
                f"(--sglang-max-restarts {self.max_restarts} per call); the step is aborted before any training "
                f"update (model, optimizer and checkpoints are untouched)"
            )
        self._restarts_left -= 1
        last = None
        for _attempt in range(max(1, self.max_restarts)):
            try:
                dt = self.fleet.restart(i)
                self.state.event(f"engine {i}: back up as {self.fleet.describe(i)} after {dt:.1f} s")
                self.state.stats[i].restarts += 1
                self.state.loaded[i] = (self.fleet.instance_id(i), "default")
                self.state.dist_members = None  # the update group lost a member
                return
            except EngineDownError as e:
                last = e
        raise EngineDownError(f"rollout engine {self.fleet.describe(i)} could not be restarted: {last}")

    def _restart_and_refill(self, i: int) -> None:
        if self._restarts_left <= 0:
            self.state.event(f"engine {i} ({self.fleet.describe(i)}) is down and no restart is left")
            self._restart(i)  # raises EngineDownError with the explanation
        self.state.event(
            f"engine {i} ({self.fleet.describe(i)}) is down: restarting it and re-pushing "
            f"{self.role} weights {self.weights.tag}"
        )
        self._restart(i)
        self._load(i)

    def _ensure_ready(self) -> None:
        """Before generating: every engine alive, holding this role's current weights."""
        for i in range(len(self.fleet)):
            inst, tag = self.state.loaded[i]
            current = self.fleet.instance_id(i)
            if current != inst:  # restarted by its owner (e.g. Ray) since we last loaded it
                self.state.event(
                    f"engine {i} was restarted by its owner (instance {inst} -> {current}); "
                    f"refilling {self.role} weights {self.weights.tag}"
                )
                self.state.loaded[i] = (current, "default")
                self.state.dist_members = None
            if not self.fleet.alive(i):
                if not self.fleet.can_restart:
                    raise EngineDownError(
                        f"rollout engine {self.fleet.describe(i)} is down and cannot be restarted "
                        f"(attached with --sglang-urls); the step is aborted before any training "
                        f"update"
                    )
                self._restart_and_refill(i)
            elif self.state.loaded[i][1] != self.weights.tag:
                self._load(i)
