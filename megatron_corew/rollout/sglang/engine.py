"""SGLang rollout backend: server processes, HTTP generation, and weight sync from the trainer.

Pieces, bottom up:

* ``http_json``: every HTTP call, with a connect timeout, a read timeout and bounded retries.
* ``ServerSpec`` / ``ServerProcess``: one ``python -m sglang.launch_server`` process (its own
  process group, so its scheduler/detokenizer children die with it), readiness wait, log tail.
* ``RouterProcess``: ``sglang_router`` in front of several engines.
* Fleets (``LocalFleet``, ``AttachedFleet``; ``ray_manager.RayRolloutManager``): who owns the
  engines and whether a dead one can be restarted. Every start gets a fresh ``instance_id`` so
  the engine client notices a restart it did not do itself and refills the weights.
* ``SGLangEngine``: the ``RolloutEngine``. ``generate`` sends ``input_ids`` (never text) with
  ``return_logprob``; ``update_weights`` streams (HF name, tensor) pairs to the servers by one of

  - ``tensor``: byte-bounded buckets in shared memory, ``/update_weights_from_tensor``
    (colocated: same host);
  - ``distributed``: a process group between the trainer (rank 0) and the engines' workers,
    ``/update_weights_from_distributed`` + broadcast (NCCL on GPU, gloo on CPU);
  - ``disk``: an atomic HF checkpoint + ``/update_weights_from_disk`` (portable fallback).

  Generation is paused and the prefix cache flushed around an update, and the server is told a
  weight version (``"<role>-<version>"``) that it reports back on every sample; a sample whose
  reported version is not the one expected fails the call.

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

import base64
import io
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from megatron_corew.rollout.base import Generation, RolloutEngine, SamplingParams

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_VENV_PYTHON = os.path.join(REPO, ".venv-sglang", "bin", "python")


class SGLangError(RuntimeError):
    """A rollout call failed; the training state was not touched."""


class SGLangHTTPError(SGLangError):
    def __init__(self, msg: str, *, status: int | None = None, connection: bool = False):
        super().__init__(msg)
        self.status = status
        self.connection = connection  # the server could not be reached (vs. it answered an error)


class EngineDownError(SGLangError):
    """An engine is down and could not be brought back within the allowed restarts."""


def log_event(msg: str) -> None:
    print(f"[sglang {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def default_sglang_python() -> str:
    """The venv made by tools/install_sglang.sh if present, else this interpreter."""
    return DEFAULT_VENV_PYTHON if os.path.exists(DEFAULT_VENV_PYTHON) else sys.executable


# ----------------------------------------------------------------------------------------- HTTP
@dataclass
class HTTPConfig:
    connect_timeout: float = 5.0
    control_timeout: float = 60.0     # health, pause/continue, flush, begin/end update
    request_timeout: float = 3600.0   # one /generate request (a whole batch of rollouts)
    sync_timeout: float = 600.0       # one weight-update call (a bucket, or a disk load)
    retries: int = 3                  # extra attempts after a connection failure or a 502/503/504
    backoff: float = 0.5              # seconds, doubled after every failed attempt


_local = threading.local()


def _session():
    import requests

    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
        s.trust_env = False  # loopback/cluster addresses: never through an HTTP proxy
    return s


def http_json(method: str, url: str, payload=None, *, timeout: float, connect_timeout: float = 5.0,
              retries: int = 3, backoff: float = 0.5, retry_read_timeout: bool = False):
    """One JSON call with bounded retries: a refused connection or a 502/503/504 is retried
    ``retries`` times with exponential backoff; a read timeout only when ``retry_read_timeout``
    (a /generate that timed out is not resent: it would queue the same work twice). Any other
    HTTP error is raised at once with the server's message."""
    import requests

    last = "no attempt"
    for attempt in range(retries + 1):
        try:
            r = _session().request(method, url, json=payload, timeout=(min(connect_timeout, timeout), timeout))
        except requests.ConnectionError as e:
            last, conn = f"connection failed: {e.__class__.__name__}: {str(e)[:300]}", True
        except requests.Timeout as e:
            last, conn = f"no answer within {timeout:.0f} s ({e.__class__.__name__})", False
            if not retry_read_timeout:
                raise SGLangHTTPError(f"{method} {url}: {last}", connection=False) from None
        else:
            if r.status_code in (502, 503, 504):
                last, conn = f"HTTP {r.status_code}: {r.text[:300]}", True
            elif r.status_code >= 400:
                raise SGLangHTTPError(f"{method} {url}: HTTP {r.status_code}: {r.text[:1000]}", status=r.status_code)
            else:
                if not r.content:
                    return {}
                try:
                    return r.json()
                except ValueError:
                    return {"text": r.text}
        if attempt < retries:
            time.sleep(backoff * (2 ** attempt))
    raise SGLangHTTPError(f"{method} {url} failed after {retries + 1} attempts: {last}", connection=conn)


def _ok(resp, what: str) -> dict:
    if isinstance(resp, dict) and resp.get("success") is False:
        raise SGLangError(f"{what}: {resp.get('message')}")
    return resp


# ------------------------------------------------------------------------------------ processes
# Flags that make SGLang serve on a CPU-only torch (docs: CPU_FEASIBILITY.md section 5). Each can
# be overridden by the same flag in ServerSpec.server_args.
CPU_DEFAULT_FLAGS = [
    ("--attention-backend", "torch_native"), ("--sampling-backend", "pytorch"), ("--disable-cuda-graph", None),
    ("--grammar-backend", "none"), ("--dtype", "float32"), ("--max-total-tokens", "65536"),
    ("--skip-server-warmup", None),
]


def _parse_flags(tokens: list[str]) -> list[tuple[str, str | None]]:
    out, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise ValueError(f"unexpected server argument {tok!r} (flags must start with --)")
        if "=" in tok:
            k, v = tok.split("=", 1)
            out.append((k, v))
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            out.append((tok, tokens[i + 1]))
            i += 2
        else:
            out.append((tok, None))
            i += 1
    return out


@dataclass
class ServerSpec:
    model_path: str
    python: str = field(default_factory=default_sglang_python)
    host: str = "127.0.0.1"
    port: int = 0                       # 0: a free port chosen at the first start (kept on restart)
    device: str = "cpu"
    tp_size: int = 1
    server_args: list[str] = field(default_factory=list)   # raw SGLang flags, override the defaults
    extra_pythonpath: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    log_path: str | None = None
    name: str = "engine0"

    def flags(self) -> list[tuple[str, str | None]]:
        base = [("--model-path", self.model_path), ("--host", self.host), ("--port", str(self.port)),
                ("--device", self.device), ("--tp-size", str(self.tp_size)), ("--skip-tokenizer-init", None)]
        if self.device == "cpu":
            base += CPU_DEFAULT_FLAGS
        merged: dict[str, str | None] = {}
        for k, v in base + _parse_flags(list(self.server_args)):
            merged[k] = v
        return list(merged.items())

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "sglang.launch_server"]
        for k, v in self.flags():
            cmd += [k] if v is None else [k, v]
        return cmd

    def environment(self) -> dict:
        env = dict(os.environ)
        for k in ("SGLANG_RETURN_ORIGINAL_LOGPROB",):
            env.pop(k, None)
        env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
        if self.device == "cpu":
            env["SGLANG_USE_CPU_ENGINE"] = "1"  # without it SGLang's is_cpu() is False
        if self.extra_pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(list(self.extra_pythonpath) + [p for p in [env.get("PYTHONPATH")] if p])
        env.update({k: str(v) for k, v in self.env.items()})
        if env.get("SGLANG_RETURN_ORIGINAL_LOGPROB", "").lower() in ("1", "true"):
            raise ValueError("SGLANG_RETURN_ORIGINAL_LOGPROB would make SGLang report pre-temperature log-probs; "
                             "the trainer needs log softmax(logits / T)")
        return env

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _parent_death_signal():
    """In the child: start a new session (so the whole server tree is one process group) and ask
    Linux to SIGTERM it when the trainer process dies, so no server outlives a crashed run."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _ManagedProcess:
    """A subprocess in its own process group with a log file; stop() ends the whole group."""

    def __init__(self, name: str, log_path: str | None):
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def _spawn(self, cmd: list[str], env: dict) -> None:
        if self.log_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
            self._log = open(self.log_path, "ab")
            self._log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {shlex.join(cmd)}\n".encode())
            self._log.flush()
            out = self._log
        else:
            out = subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_parent_death_signal, cwd=REPO)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # the group may still hold children after the leader exited
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._log:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 30) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return "(no log)"
        with open(self.log_path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 20000))
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])


class ServerProcess(_ManagedProcess):
    """One SGLang server (``python -m sglang.launch_server``)."""

    def __init__(self, spec: ServerSpec):
        super().__init__(spec.name, spec.log_path)
        self.spec = spec
        self.instance_id: str | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return self.spec.url

    def start(self) -> None:
        if self.spec.port == 0:
            self.spec.port = free_port(self.spec.host if self.spec.host not in ("0.0.0.0", "") else "127.0.0.1")
        self._spawn(self.spec.command(), self.spec.environment())
        self.instance_id = uuid.uuid4().hex
        self.starts += 1

    def wait_ready(self, timeout: float) -> float:
        """Poll /health until the server answers 200 (it answers 503 while starting)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.running():
                raise EngineDownError(f"{self.name}: server process exited with code {self.proc.returncode} during "
                                      f"start-up; last log lines ({self.log_path}):\n{self.log_tail()}")
            try:
                http_json("GET", self.url + "/health", timeout=5, retries=0)
                return time.monotonic() - t0
            except SGLangHTTPError:
                time.sleep(1.0)
        self.stop()
        raise EngineDownError(f"{self.name}: not ready after {timeout:.0f} s (stopped it); last log lines "
                              f"({self.log_path}):\n{self.log_tail()}")

    def healthy(self, http: HTTPConfig) -> bool:
        if not self.running():
            return False
        try:
            http_json("GET", self.url + "/health", timeout=min(http.control_timeout, 10), retries=1, backoff=0.5)
            return True
        except SGLangHTTPError:
            return False


class RouterProcess(_ManagedProcess):
    """``sglang_router`` spreading /generate over several engines."""

    def __init__(self, python: str, worker_urls: list[str], host: str = "127.0.0.1", port: int = 0,
                 policy: str = "round_robin", log_path: str | None = None, request_timeout: float = 3600):
        super().__init__("router", log_path)
        self.python, self.worker_urls, self.host = python, list(worker_urls), host
        self.port = port or free_port()
        # its own metrics port: the router's default (29000) is taken by the first router on a machine, and a
        # second one (teacher group, another job) would die at start-up
        self.metrics_port = free_port()
        self.policy, self.request_timeout = policy, request_timeout

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 120.0) -> None:
        cmd = [self.python, "-m", "sglang_router.launch_router", "--worker-urls", *self.worker_urls,
               "--host", self.host, "--port", str(self.port), "--policy", self.policy,
               "--request-timeout-secs", str(int(self.request_timeout)), "--log-level", "warn",
               "--prometheus-host", self.host, "--prometheus-port", str(self.metrics_port)]
        self._spawn(cmd, dict(os.environ))
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.running():
                raise EngineDownError(f"router exited with code {self.proc.returncode}:\n{self.log_tail()}")
            for path in ("/readiness", "/health"):
                try:
                    http_json("GET", self.url + path, timeout=5, retries=0)
                    return
                except SGLangHTTPError:
                    pass
            time.sleep(0.5)
        self.stop()
        raise EngineDownError(f"router not ready after {timeout:.0f} s:\n{self.log_tail()}")


def router_available(python: str) -> bool:
    try:
        subprocess.run([python, "-c", "import sglang_router"], check=True, capture_output=True, timeout=60)
        return True
    except Exception:
        return False


# ---------------------------------------------------------------------------------------- fleets
class Fleet:
    """Who owns the engines. Subclasses: LocalFleet, AttachedFleet, ray_manager.RayRolloutManager."""

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

    def __init__(self, specs: list[ServerSpec], http: HTTPConfig, startup_timeout: float = 600.0,
                 use_router: bool = False, router_python: str | None = None, log_dir: str | None = None):
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
                self.router = RouterProcess(python, [p.url for p in self.procs], log_path=os.path.join(
                    self._log_dir, "router.log") if self._log_dir else None, request_timeout=self.http.request_timeout)
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
            log_event(f"{p.name}: restarting (previous process {'exited with code ' + str(code) if code is not None else 'unresponsive'}); "
                      f"last log lines:\n{p.log_tail(8)}")
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


# ------------------------------------------------------------------------------- weight stores
class _DiskWeights:
    def __init__(self, path: str, tag: str):
        self.path, self.tag = path, tag


class _MemoryWeights:
    def __init__(self, tensors: list[tuple[str, torch.Tensor]], tag: str):
        self.tensors, self.tag = tensors, tag


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).replace("torch.", "")


@contextmanager
def _file_system_sharing():
    """CPU tensors cross to the server by file name in /dev/shm (the default fd-passing strategy
    needs a shared multiprocessing authkey, which unrelated processes do not have)."""
    import torch.multiprocessing as mp

    old = mp.get_sharing_strategy()
    mp.set_sharing_strategy("file_system")
    try:
        yield
    finally:
        mp.set_sharing_strategy(old)


_SHM_MANAGER_STARTED = False


def _start_shm_manager_detached() -> None:
    """torch starts one ``torch_shm_manager`` per process on the first file_system share; it
    lives as long as any process (here: the SGLang scheduler) still maps its segments, and it
    inherits stdout/stderr. Start it with those pointing at /dev/null, so a wrapper reading the
    trainer's output pipes is not kept waiting by it after the trainer exited."""
    global _SHM_MANAGER_STARTED
    if _SHM_MANAGER_STARTED:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        with _file_system_sharing():
            torch.empty(1).share_memory_()
        _SHM_MANAGER_STARTED = True
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [null]:
            os.close(fd)


def serialize_named_tensors(named: list[tuple[str, torch.Tensor]]) -> tuple[str, list[torch.Tensor]]:
    """What SGLang's MultiprocessingSerializer produces (ForkingPickler, base64), without importing
    sglang. CPU tensors are copied once into fresh shared memory (never the trainer's own
    parameter storage); the returned buffers must stay alive until the server has loaded them."""
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing.reductions  # noqa: F401  (registers the tensor reducers)

    _start_shm_manager_detached()
    keep, items = [], []
    with _file_system_sharing():
        for name, t in named:
            t = t.detach()
            if t.device.type == "cpu":
                buf = torch.empty(t.shape, dtype=t.dtype).share_memory_()
                buf.copy_(t)
            else:
                buf = t.contiguous()  # CUDA IPC handle (colocated GPU)
            keep.append(buf)
            items.append((name, buf))
        out = io.BytesIO()
        ForkingPickler(out).dump(items)
    return base64.b64encode(out.getvalue()).decode(), keep


def init_custom_process_group(backend: str, init_method: str, world_size: int, rank: int, group_name: str,
                              timeout_s: float = 600.0):
    """A process group between this trainer process and the engines that is independent of the
    trainer's own default group (same construction as SGLang/verl use on the engine side)."""
    from datetime import timedelta

    from torch.distributed.distributed_c10d import (Backend, PrefixStore, _new_process_group_helper, _world,
                                                    rendezvous)

    timeout = timedelta(seconds=timeout_s)
    store, rank, world_size = next(rendezvous(init_method, rank, world_size, timeout=timeout))
    store.set_timeout(timeout)
    store = PrefixStore(group_name, store)
    # works with or without the trainer's own default group (checked with gloo on torch 2.13)
    pg, _ = _new_process_group_helper(world_size, rank, [], Backend(backend), store, group_name=group_name,
                                      timeout=timeout, backend_options=None)
    _world.pg_group_ranks[pg] = {i: i for i in range(world_size)}
    return pg


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


class _FleetState:
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


class SGLangEngine(RolloutEngine):
    """The RolloutEngine over a fleet of SGLang servers (see the module docstring)."""

    def __init__(self, fleet: Fleet, *, model_path: str, eos_token_ids: list[int], role: str = "policy",
                 weight_sync: str = "disk", sync_dir: str | None = None, bucket_bytes: int = 512 << 20,
                 http: HTTPConfig | None = None, max_restarts: int = 1, keep_weights: bool | None = None,
                 request_batch_size: int | None = None, dist_backend: str | None = None,
                 dist_master_addr: str = "127.0.0.1", pause_during_sync: bool = True,
                 _state: _FleetState | None = None, _shared: bool = False):
        if weight_sync not in ("tensor", "distributed", "disk"):
            raise ValueError(f"unknown weight sync mode {weight_sync!r}")
        self.fleet = fleet
        self.state = _state or _FleetState(fleet)
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
        self.weights = _DiskWeights(model_path, "default")  # what this role should serve
        self.weight_version = 0
        self.stats = {"tokens": 0, "seconds": 0.0, "sync_seconds": 0.0, "syncs": 0}
        self._views: list[SGLangEngine] = []
        self._restarts_left = max_restarts

    # ------------------------------------------------------------------ construction helpers
    def role_view(self, role: str) -> "SGLangEngine":
        """Another role (the Co-rewarding-II teacher) served by the same engines: its weights are
        kept (disk or memory) and swapped in before each of its generations."""
        view = SGLangEngine(self.fleet, model_path=self.model_path, eos_token_ids=self.eos, role=role,
                            weight_sync=self.weight_sync, sync_dir=self.sync_dir, bucket_bytes=self.bucket_bytes,
                            http=self.http, max_restarts=self.max_restarts, keep_weights=True,
                            request_batch_size=self.request_batch_size, dist_backend=self.dist_backend,
                            dist_master_addr=self.dist_master_addr, pause_during_sync=self.pause_during_sync,
                            _state=self.state, _shared=True)
        self.shared = True
        self.keep_weights = True
        self._views.append(view)
        return view

    # ------------------------------------------------------------------ public API
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
            pending = self._plan(len(prompts), single=bool(self.fleet.router_url) and params.seed is not None
                                 and not params.greedy)
            rounds = 0
            while pending:
                failed = self._run_requests(pending, prompts, params, results)
                if not failed:
                    break
                rounds += 1
                suspects = sorted({e for e, _ in failed}) if self.fleet.router_url is None else list(range(len(self.fleet)))
                dead = [e for e in suspects if not self.fleet.alive(e)]
                if rounds > self.max_restarts or (dead and self._restarts_left < len(dead)):
                    if dead:
                        raise EngineDownError(
                            f"rollout engine(s) {[self.fleet.describe(e) for e in dead]} stayed down after "
                            f"{self.max_restarts} restart(s); the step is aborted before any training update "
                            f"(model, optimizer and checkpoints are untouched)")
                    raise SGLangError(f"/generate kept failing on {[self.fleet.url(e) for e in suspects]} although "
                                      f"the engines answer /health (see the [sglang] lines above)")
                for e in dead:
                    if not self.fleet.can_restart:
                        raise EngineDownError(
                            f"rollout engine {self.fleet.describe(e)} is down and cannot be restarted (attached with "
                            f"--sglang-urls); the step is aborted before any training update (model, optimizer and "
                            f"checkpoints are untouched)")
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
                    self.weights = _DiskWeights(path, tag)
                    self._ensure_alive(resident)
                    self._push_disk(resident, path, tag)
                    if isinstance(old, _DiskWeights) and old.path != path and old.path.startswith(
                            os.path.abspath(self.sync_dir)):
                        shutil.rmtree(old.path, ignore_errors=True)
                else:
                    self._ensure_alive(resident)
                    kept = self._push_stream(resident, it, tag)
                    self.weights = _MemoryWeights(kept, tag) if kept is not None else _DiskWeights("", tag)
            self.weight_version = int(version)
        finally:
            for _ in it:
                pass
        dt = time.perf_counter() - t0
        self.stats["sync_seconds"] += dt
        self.stats["syncs"] += 1

    # ------------------------------------------------------------------ readiness and restarts
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
                f"update (model, optimizer and checkpoints are untouched)")
        self._restarts_left -= 1
        last = None
        for attempt in range(max(1, self.max_restarts)):
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
        self.state.event(f"engine {i} ({self.fleet.describe(i)}) is down: restarting it and re-pushing "
                         f"{self.role} weights {self.weights.tag}")
        self._restart(i)
        self._load(i)

    def _ensure_ready(self) -> None:
        """Before generating: every engine alive, holding this role's current weights."""
        for i in range(len(self.fleet)):
            inst, tag = self.state.loaded[i]
            current = self.fleet.instance_id(i)
            if current != inst:  # restarted by its owner (e.g. Ray) since we last loaded it
                self.state.event(f"engine {i} was restarted by its owner (instance {inst} -> {current}); "
                                 f"refilling {self.role} weights {self.weights.tag}")
                self.state.loaded[i] = (current, "default")
                self.state.dist_members = None
            if not self.fleet.alive(i):
                if not self.fleet.can_restart:
                    raise EngineDownError(f"rollout engine {self.fleet.describe(i)} is down and cannot be restarted "
                                          f"(attached with --sglang-urls); the step is aborted before any training update")
                self._restart_and_refill(i)
            elif self.state.loaded[i][1] != self.weights.tag:
                self._load(i)

    def _load(self, i: int) -> None:
        """Put this role's current weights on engine i (after a restart, or to swap roles)."""
        w = self.weights
        if self.state.loaded[i][1] == w.tag:
            return
        t0 = time.perf_counter()
        if isinstance(w, _DiskWeights):
            if not w.path:
                raise SGLangError(f"engine {i} needs {self.role} weights {w.tag} again but no copy was kept "
                                  f"(--sglang-keep-weights off)")
            self._push_disk([i], w.path, w.tag)
        elif self.weight_sync == "tensor":
            self._push_stream([i], iter(w.tensors), w.tag, keep=False, mode="tensor")
        elif len(self.fleet) == 1:
            self._push_stream([i], iter(w.tensors), w.tag, keep=False, mode="distributed")
        else:
            # a broadcast needs every group member; refill this one engine from disk instead
            from checkpoints_conversion.hf_io import write_hf_checkpoint

            path = os.path.join(self.sync_dir, self.role, "refill-" + w.tag)
            if not os.path.exists(path):
                write_hf_checkpoint(path, iter(w.tensors), config_dir=self.model_path)
            self._push_disk([i], path, w.tag)
        self.state.event(f"engine {i}: loaded {self.role} weights {w.tag} in {time.perf_counter() - t0:.2f} s")

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
                plan.append((-1 if self.fleet.router_url else e, idx[s:s + size]))
        return plan

    def _sampling_params(self, params: SamplingParams) -> dict:
        sp = {"max_new_tokens": int(params.max_new_tokens), "stop_token_ids": list(self.eos),
              "skip_special_tokens": False, "no_stop_trim": True}
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
            payload = {"input_ids": [list(map(int, prompts[k])) for k in idx], "return_logprob": True,
                       "logprob_start_len": -1, "stream": False}
            if params.seed is not None and not params.greedy:
                seeded = [dict(sp, sampling_seed=int(params.seed * 1000003 + k) % (2 ** 63)) for k in idx]
                payload["sampling_params"] = seeded[0] if len(idx) == 1 else seeded
            else:
                payload["sampling_params"] = sp
            t0 = time.perf_counter()
            try:
                resp = http_json("POST", url + "/generate", payload, timeout=self.http.request_timeout,
                                 connect_timeout=self.http.connect_timeout, retries=self.http.retries,
                                 backoff=self.http.backoff)
            except SGLangHTTPError as err:
                with lock:
                    self.state.stat(e).failures += 1
                    failed.append(item)
                self.state.event(f"{'router' if e < 0 else f'engine {e}'}: /generate of {len(idx)} prompts failed: {err}")
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
        meta = r.get("meta_info", {})
        fr = meta.get("finish_reason") or {}
        ftype = fr.get("type") if isinstance(fr, dict) else str(fr)
        if ftype == "abort":
            raise SGLangError(f"{url}: request aborted by the server: {fr.get('message')}")
        ids = [int(t) for t in r.get("output_ids", [])]
        lps = meta.get("output_token_logprobs") or []
        if len(lps) != len(ids) or any(int(x[1]) != t for x, t in zip(lps, ids)):
            raise SGLangError(f"{url}: output_token_logprobs do not line up with output_ids "
                              f"({len(lps)} vs {len(ids)} tokens)")
        served = meta.get("weight_version")
        if served != self.weights.tag:
            raise SGLangError(f"{url}: sample generated with weight version {served!r}, expected {self.weights.tag!r} "
                              f"({self.role}); refusing stale rollouts")
        finish = "stop" if ids and ids[-1] in self.eos else "length"
        return Generation(prompt_ids=list(prompt), response_ids=ids, logprobs=[float(x[0]) for x in lps],
                          finish_reason=finish, weight_version=self.weight_version,
                          meta={"engine": engine, "weight_tag": served, "sglang_finish": ftype})

    # ------------------------------------------------------------------ weight pushes
    def _call_all(self, engines: list[int], fn) -> None:
        """fn(i) on every engine concurrently; raise the first error after all finished."""
        if not engines:
            return
        errors = []

        def wrap(i):
            try:
                fn(i)
            except Exception as e:  # noqa: BLE001
                errors.append((i, e))

        with ThreadPoolExecutor(len(engines)) as ex:
            list(ex.map(wrap, engines))
        if errors:
            i, e = errors[0]
            for j, _ in errors:
                self.state.loaded[j] = (self.state.loaded[j][0], None)  # unknown: refill before use
            raise SGLangError(f"weight update of engine {i} ({self.fleet.url(i)}) failed: {e}") from e

    def _post(self, i: int, path: str, payload=None, timeout: float | None = None, what: str = ""):
        return _ok(http_json("POST", self.fleet.url(i) + path, payload or {},
                             timeout=timeout or self.http.control_timeout, connect_timeout=self.http.connect_timeout,
                             retries=self.http.retries, backoff=self.http.backoff), what or path)

    @contextmanager
    def _paused(self, engines: list[int]):
        """Pause generation (requests in flight are retracted and resumed later), flush the cache
        after the update, continue. Our loop never updates while generating, so this is a guard."""
        if self.pause_during_sync:
            self._call_all(engines, lambda i: self._post(i, "/pause_generation", {"mode": "retract"}))
        try:
            yield
        finally:
            if self.pause_during_sync:
                self._call_all(engines, lambda i: self._post(i, "/continue_generation", {}))

    def _mark_loaded(self, engines: list[int], tag: str) -> None:
        for i in engines:
            self.state.loaded[i] = (self.fleet.instance_id(i), tag)
            self.state.stats[i].weight_loads += 1

    def _push_disk(self, engines: list[int], path: str, tag: str) -> None:
        if not engines:
            return
        for i in engines:
            self.state.loaded[i] = (self.state.loaded[i][0], None)
        with self._paused(engines):
            self._call_all(engines, lambda i: self._post(
                i, "/update_weights_from_disk", {"model_path": os.path.abspath(path), "weight_version": tag,
                                                 "flush_cache": True, "keep_pause": self.pause_during_sync},
                timeout=self.http.sync_timeout, what=f"update_weights_from_disk({path})"))
        self._mark_loaded(engines, tag)

    def _buckets(self, it: Iterator[tuple[str, torch.Tensor]]):
        bucket, size = [], 0
        for name, t in it:
            nbytes = t.numel() * t.element_size()
            if bucket and size + nbytes > self.bucket_bytes:
                yield bucket
                bucket, size = [], 0
            bucket.append((name, t))
            size += nbytes
        if bucket:
            yield bucket

    def _push_stream(self, engines: list[int], it, tag: str, keep: bool | None = None,
                     mode: str | None = None):
        """Tensor or distributed push of a (name, tensor) stream, bucket by bucket. Returns a CPU
        copy of everything pushed when weights are kept (restart refill / role swap)."""
        mode = mode or self.weight_sync
        keep = self.keep_weights if keep is None else keep
        kept: list | None = [] if keep else None
        if not engines:
            # nothing resident: just keep the weights for later
            for name, t in it:
                if kept is not None:
                    kept.append((name, t.detach().to("cpu", copy=True)))
            return kept
        for i in engines:
            self.state.loaded[i] = (self.state.loaded[i][0], None)
        if mode == "distributed":
            self._ensure_dist_group()
        with self._paused(engines):
            self._call_all(engines, lambda i: self._begin_update(i))
            try:
                pending = None
                for bucket in self._buckets(it):
                    if kept is not None:
                        kept.extend((n, t.detach().to("cpu", copy=True)) for n, t in bucket)
                    if pending is not None:
                        self._send_bucket(engines, pending, None, mode)
                    pending = bucket
                if pending is not None:
                    self._send_bucket(engines, pending, tag, mode)
            finally:
                self._call_all(engines, lambda i: self._post(i, "/end_weight_update", {}))
        self._mark_loaded(engines, tag)
        return kept

    def _begin_update(self, i: int) -> None:
        try:
            self._post(i, "/begin_weight_update", {})
        except SGLangError as e:
            if "already open" not in str(e):
                raise
            self._post(i, "/end_weight_update", {})  # a session left open by a failed update
            self._post(i, "/begin_weight_update", {})

    def _send_bucket(self, engines, bucket, tag: str | None, mode: str) -> None:
        last = tag is not None
        if mode == "tensor":
            data, keep = serialize_named_tensors(bucket)
            try:
                self._call_all(engines, lambda i: self._post(
                    i, "/update_weights_from_tensor",
                    {"serialized_named_tensors": [data] * self.fleet.tp_sizes[i], "flush_cache": last,
                     "weight_version": tag}, timeout=self.http.sync_timeout, what="update_weights_from_tensor"))
            finally:
                del keep
            return
        import torch.distributed as dist

        payload = {"names": [n for n, _ in bucket], "dtypes": [_dtype_name(t.dtype) for _, t in bucket],
                   "shapes": [list(t.shape) for _, t in bucket], "group_name": self.state.dist_group_name,
                   "flush_cache": last, "weight_version": tag}
        errors = []

        def post_all():
            try:
                self._call_all(engines, lambda i: self._post(i, "/update_weights_from_distributed", payload,
                                                             timeout=self.http.sync_timeout,
                                                             what="update_weights_from_distributed"))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        th = threading.Thread(target=post_all, daemon=True)
        th.start()
        dev = "cuda" if self.dist_backend == "nccl" else "cpu"
        for _, t in bucket:
            dist.broadcast(t.detach().to(dev).contiguous(), src=0, group=self.state.dist_group)
        th.join(self.http.sync_timeout + 30)
        if th.is_alive():
            raise SGLangError("update_weights_from_distributed did not return in time")
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ distributed group
    def _ensure_dist_group(self) -> None:
        st = self.state
        members = [self.fleet.instance_id(i) for i in range(len(self.fleet))]
        if st.dist_group is not None and st.dist_members == members:
            return
        self._destroy_dist_group()
        st.dist_counter += 1
        name = f"corew_weight_sync_{os.getpid()}_{st.dist_counter}"
        port = free_port()
        world = 1 + sum(self.fleet.tp_sizes)
        offsets, off = [], 1
        for tp in self.fleet.tp_sizes:
            offsets.append(off)
            off += tp
        errors = []

        def join(i):
            try:
                self._post(i, "/init_weights_update_group", {
                    "master_address": self.dist_master_addr, "master_port": port, "rank_offset": offsets[i],
                    "world_size": world, "group_name": name, "backend": self.dist_backend},
                    timeout=self.http.sync_timeout, what="init_weights_update_group")
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=join, args=(i,), daemon=True) for i in range(len(self.fleet))]
        for th in threads:
            th.start()
        t0 = time.perf_counter()
        group = init_custom_process_group(self.dist_backend, f"tcp://{self.dist_master_addr}:{port}", world, 0, name,
                                          timeout_s=self.http.sync_timeout)
        for th in threads:
            th.join(self.http.sync_timeout)
        if errors:
            raise SGLangError(f"could not form the weight-update group: {errors[0]}")
        st.dist_group, st.dist_group_name, st.dist_members = group, name, members
        st.event(f"weight-update group {name} ({self.dist_backend}, world {world}) formed in "
                 f"{time.perf_counter() - t0:.2f} s")

    def _destroy_dist_group(self) -> None:
        st = self.state
        if st.dist_group is None:
            return
        import torch.distributed as dist

        for i in range(len(self.fleet)):
            try:
                http_json("POST", self.fleet.url(i) + "/destroy_weights_update_group",
                          {"group_name": st.dist_group_name}, timeout=10, retries=0)
            except SGLangHTTPError:
                pass
        try:
            dist.destroy_process_group(st.dist_group)
        except Exception:  # noqa: BLE001
            pass
        st.dist_group = st.dist_group_name = st.dist_members = None
