"""Rollout pipelining on a real SGLang server (CPU): --async-rollout --max-staleness 0 gives the synchronous run's
metrics and rollouts, and with staleness 1 the server's weight tags (checked on every sample by SGLangEngine)
and the dumped versions follow the one-step off-policy schedule (docs/ASYNC.md)."""

from __future__ import annotations

import pytest
from helpers import read_metrics, run_train
from test_async_rollout import _args, _dump, _ok, _same_run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from helpers import make_tiny_bundle
    from sglang_stubs import write_stubs
    from test_sglang import _Server, sglang_status

    ok, reason = sglang_status()
    if not ok:
        pytest.skip(reason)
    bundle = make_tiny_bundle(str(tmp_path_factory.mktemp("async_sglang_bundle")))
    stubs = write_stubs(str(tmp_path_factory.mktemp("async_sglang_stubs")))
    srv = _Server(bundle["model"], stubs, str(tmp_path_factory.mktemp("logs") / "server.log")).start()
    yield bundle, srv
    srv.stop()


@pytest.mark.sglang
def test_async_rollout_on_a_real_sglang_server(served, tmp_path):
    bundle, srv = served
    backend = ["--rollout-backend", "sglang", "--sglang-urls", srv.url]
    runs = {}
    for name, flags in (
        ("sync", []),
        ("k0", ["--async-rollout", "--max-staleness", "0"]),
        ("k1", ["--async-rollout", "--max-staleness", "1"]),
    ):
        srv.reset_weights()  # each run starts from the initial checkpoint, tagged 'default'
        runs[name] = str(tmp_path / name)
        _ok(run_train(_args(bundle, runs[name], "gt", steps=3, extra=backend + flags), timeout=900))
    _same_run(runs["sync"], runs["k0"], 3)
    assert {s: sorted({r["weight_version"] for r in _dump(runs["k1"], s)}) for s in (1, 2, 3)} == {
        1: [0],
        2: [0],
        3: [1],
    }
    assert [r["rollout/staleness_max"] for r in read_metrics(runs["k1"]) if "train/loss" in r] == [0, 1, 1]
