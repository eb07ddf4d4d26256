"""SGLang server and router processes: the command line and environment of one ``sglang.launch_server``, and the
managed subprocess that owns it (its own process group, so its scheduler/detokenizer children die with it;
readiness wait; log tail).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

from megatron_corew.rollout.sglang.http import EngineDownError, HTTPConfig, SGLangHTTPError, free_port, http_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEFAULT_VENV_PYTHON = os.path.join(REPO, ".venv-sglang", "bin", "python")


def default_sglang_python() -> str:
    """The venv made by tools/install_sglang.sh if present, else this interpreter."""
    return DEFAULT_VENV_PYTHON if os.path.exists(DEFAULT_VENV_PYTHON) else sys.executable


# SGLang imports these at start-up; on a CPU-only torch their PyPI wheels are CUDA builds (or pull one in)
CPU_STUBBED = ("torchvision", "sgl_kernel")


def cpu_stub_dir(python: str) -> str | None:
    """``VENV/cpu_stubs`` beside the server interpreter ``VENV/bin/python``: the import stubs that
    tools/install_sglang.sh writes for a CPU-only torch (None when absent)."""
    d = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(python))), "cpu_stubs")
    return d if os.path.isdir(d) else None


def startup_hint(log: str, python: str) -> str | None:
    """One line naming the module whose import stopped a server, and how to get it (None: no import error)."""
    import re

    found = re.findall(r"No module named '([\w.]+)'", log)
    if not found:
        return None
    module = found[-1].split(".")[0]
    if module in CPU_STUBBED:
        return (
            f"SGLang could not import {module} (on a CPU-only torch it needs the import stubs): run "
            f"`bash tools/install_sglang.sh` (it writes them to VENV/cpu_stubs, added for CPU servers), or pass "
            f"--sglang-extra-pythonpath DIR after `python tests/sglang_stubs.py DIR`"
        )
    return (
        f"SGLang could not import {module}: install it into the server's interpreter ({python} -m pip install "
        f"{module}), or rerun `bash tools/install_sglang.sh`"
    )


# Flags that make SGLang serve on a CPU-only torch (no CUDA kernels, graphs or compiled grammars; fp32, a bounded
# KV pool). Each can be overridden by the same flag in ServerSpec.server_args.
CPU_DEFAULT_FLAGS = [
    ("--attention-backend", "torch_native"),
    ("--sampling-backend", "pytorch"),
    ("--disable-cuda-graph", None),
    ("--grammar-backend", "none"),
    ("--dtype", "float32"),
    ("--max-total-tokens", "65536"),
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


# torchrun's per-rank variables: SGLang's own torch.distributed init reads them (with TORCHELASTIC_USE_AGENT_STORE
# it joins the launcher's store as a client) and waits forever for a world it is not part of
TRAINER_DIST_VARS = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
)


@dataclass
class ServerSpec:
    model_path: str
    python: str = field(default_factory=default_sglang_python)
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port chosen at the first start (kept on restart)
    device: str = "cpu"
    tp_size: int = 1
    server_args: list[str] = field(default_factory=list)  # raw SGLang flags, override the defaults
    extra_pythonpath: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    log_path: str | None = None
    name: str = "engine0"

    def flags(self) -> list[tuple[str, str | None]]:
        base = [
            ("--model-path", self.model_path),
            ("--host", self.host),
            ("--port", str(self.port)),
            ("--device", self.device),
            ("--tp-size", str(self.tp_size)),
            ("--skip-tokenizer-init", None),
        ]
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
        for k in [k for k in env if k in TRAINER_DIST_VARS or k.startswith("TORCHELASTIC_")]:
            env.pop(k)  # a server started under torchrun (or by a Ray it started) must not join the trainer's group
        env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
        if self.device == "cpu":
            env["SGLANG_USE_CPU_ENGINE"] = "1"  # without it SGLang's is_cpu() is False
        paths = list(self.extra_pythonpath)
        stubs = cpu_stub_dir(self.python) if self.device == "cpu" else None
        if stubs and stubs not in paths:  # after the caller's own: theirs win
            paths.append(stubs)
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
        env.update({k: str(v) for k, v in self.env.items()})
        if env.get("SGLANG_RETURN_ORIGINAL_LOGPROB", "").lower() in ("1", "true"):
            raise ValueError(
                "SGLANG_RETURN_ORIGINAL_LOGPROB would make SGLang report pre-temperature log-probs; "
                "the trainer needs log softmax(logits / T)"
            )
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
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_parent_death_signal,
            cwd=REPO,
        )

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
        self.auto_port = spec.port == 0  # ours to change if another process takes it before the server binds it

    @property
    def url(self) -> str:
        return self.spec.url

    def _pick_port(self) -> None:
        self.spec.port = free_port(self.spec.host if self.spec.host not in ("0.0.0.0", "") else "127.0.0.1")

    def start(self) -> None:
        if self.spec.port == 0:
            self._pick_port()
        self._spawn(self.spec.command(), self.spec.environment())
        self.instance_id = uuid.uuid4().hex
        self.starts += 1

    def wait_ready(self, timeout: float) -> float:
        """Poll /health until the server answers 200 (it answers 503 while starting)."""
        t0, port_retries = time.monotonic(), 2
        while time.monotonic() - t0 < timeout:
            if not self.running():
                if self.auto_port and port_retries and "address already in use" in self.log_tail(60):
                    port_retries -= 1  # a free port chosen for us was taken (another server's internal ports)
                    self._pick_port()
                    self.start()
                    continue
                hint = startup_hint(self.log_tail(200), self.spec.python)
                raise EngineDownError(
                    f"{self.name}: server process exited with code {self.proc.returncode} during start-up"
                    + (f": {hint}" if hint else "")
                    + f"; last log lines ({self.log_path}):\n{self.log_tail()}"
                )
            try:
                http_json("GET", self.url + "/health", timeout=5, retries=0)
                return time.monotonic() - t0
            except SGLangHTTPError:
                time.sleep(1.0)
        self.stop()
        raise EngineDownError(
            f"{self.name}: not ready after {timeout:.0f} s (stopped it); last log lines "
            f"({self.log_path}):\n{self.log_tail()}"
        )

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

    def __init__(
        self,
        python: str,
        worker_urls: list[str],
        host: str = "127.0.0.1",
        port: int = 0,
        policy: str = "round_robin",
        log_path: str | None = None,
        request_timeout: float = 3600,
    ):
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
        cmd = [
            self.python,
            "-m",
            "sglang_router.launch_router",
            "--worker-urls",
            *self.worker_urls,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--policy",
            self.policy,
            "--request-timeout-secs",
            str(int(self.request_timeout)),
            "--log-level",
            "warn",
            "--prometheus-host",
            self.host,
            "--prometheus-port",
            str(self.metrics_port),
        ]
        self._spawn(cmd, dict(os.environ))
        t0, port_retries = time.monotonic(), 2
        while time.monotonic() - t0 < timeout:
            if not self.running():
                if self.auto_port and port_retries and "address already in use" in self.log_tail(60):
                    port_retries -= 1  # a free port chosen for us was taken (another server's internal ports)
                    self._pick_port()
                    self.start()
                    continue
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
