"""SGLang engines give their GPU memory back while the colocated trainer trains, and take it again to generate.

SGLang's ``/release_memory_occupation`` and ``/resume_memory_occupation`` (checked on the installed SGLang 0.5.x:
body ``{"tags": [...]}``, tags ``weights``, ``kv_cache``, ``cuda_graph``; none: all) pause and resume regions of
``torch_memory_saver``, so they free memory only when the server was launched with ``--enable-memory-saver``
(``colocation.py`` adds it) and a CUDA device. A release needs an idle server (no request in flight); releasing
``kv_cache`` also flushes the prefix cache. On CPU servers there is nothing to release: the caller does not call
these there (no pretend success), and they are exercised on a GPU (tools/gpu_session.sh, section colocate).
"""

from __future__ import annotations

from megatron_corew.rollout.sglang.http import expect_success, http_json

WEIGHTS, KV_CACHE, CUDA_GRAPH = "weights", "kv_cache", "cuda_graph"
TAGS = (WEIGHTS, KV_CACHE, CUDA_GRAPH)


def _urls(engine) -> list[str]:
    """The servers behind an ``SGLangEngine`` (each one, never the router: memory is per server)."""
    return [engine.fleet.url(i) for i in range(len(engine.fleet))]


def _check(tags) -> None:
    bad = [t for t in tags if t not in TAGS]
    if bad:
        raise ValueError(f"unknown SGLang memory tag(s) {bad}; valid: {list(TAGS)}")


def _call(engine, action: str, tags, timeout: float) -> None:
    for url in _urls(engine):
        resp = http_json("POST", f"{url}/{action}_memory_occupation", {"tags": list(tags)}, timeout=timeout, retries=1)
        expect_success(resp, f"{url}/{action}_memory_occupation {list(tags)}")


def release(engine, tags, timeout: float = 120.0) -> None:
    """Free the tagged GPU memory of every server of ``engine``. Released weights are gone (no CPU backup): the
    engines are marked as holding unknown weights, so the next push or generation loads a full set first."""
    _check(tags)
    with engine.state.lock:
        _call(engine, "release", tags, timeout)
        if WEIGHTS in tags:
            engine.state.loaded = [(inst, None) for inst, _ in engine.state.loaded]


def resume(engine, tags, timeout: float = 120.0) -> None:
    """Re-allocate the tagged memory of every server of ``engine`` (resumed weights hold no values until loaded)."""
    _check(tags)
    with engine.state.lock:
        _call(engine, "resume", tags, timeout)
