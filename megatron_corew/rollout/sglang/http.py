"""JSON over HTTP to SGLang servers and routers: bounded timeouts and retries, and the errors a rollout call raises.

Every call the backend makes goes through ``http_json``, so a dead or hung server costs a known, bounded time and
surfaces as an ``SGLangError`` before the training state is touched.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from dataclasses import dataclass


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


@dataclass
class HTTPConfig:
    connect_timeout: float = 5.0
    control_timeout: float = 60.0  # health, pause/continue, flush, begin/end update
    request_timeout: float = 3600.0  # one /generate request (a whole batch of rollouts)
    sync_timeout: float = 600.0  # one weight-update call (a bucket, or a disk load)
    retries: int = 3  # extra attempts after a connection failure or a 502/503/504
    backoff: float = 0.5  # seconds, doubled after every failed attempt


_local = threading.local()


def _session():
    import requests

    s = getattr(_local, "session", None)
    if s is None:
        s = _local.session = requests.Session()
        s.trust_env = False  # loopback/cluster addresses: never through an HTTP proxy
    return s


def http_json(
    method: str,
    url: str,
    payload=None,
    *,
    timeout: float,
    connect_timeout: float = 5.0,
    retries: int = 3,
    backoff: float = 0.5,
    retry_read_timeout: bool = False,
):
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
            time.sleep(backoff * (2**attempt))
    raise SGLangHTTPError(f"{method} {url} failed after {retries + 1} attempts: {last}", connection=conn)


def expect_success(resp, what: str) -> dict:
    """SGLang answers some failed control calls with HTTP 200 and ``success: false``: raise those."""
    if isinstance(resp, dict) and resp.get("success") is False:
        raise SGLangError(f"{what}: {resp.get('message')}")
    return resp
