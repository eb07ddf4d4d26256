"""Rollout pipelining on a real SGLang server (CPU): the weight versions of the dumped samples (the server's tags
are checked on every sample by SGLangEngine) follow the synchronous schedule with --max-staleness 0 and the
one-step off-policy schedule with 1 (docs/ASYNC.md). Not compared bitwise with a synchronous run: seeded SGLang
sampling on CPU is not reproducible from run to run here (two runs with the same prompts, seeds and weights
gave step-1 mean response lengths 12.0 and 11.81); the bitwise comparison is the embedded engine's
(tests/test_async_rollout.py)."""

from __future__ import annotations

import pytest
from helpers import read_metrics, run_train
from test_async_rollout import _args, _dump, _ok


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
        ("k0", ["--async-rollout", "--max-staleness", "0"]),
        ("k1", ["--async-rollout", "--max-staleness", "1"]),
    ):
        srv.reset_weights()  # each run starts from the initial checkpoint, tagged 'default'
        runs[name] = str(tmp_path / name)
        _ok(run_train(_args(bundle, runs[name], "gt", steps=3, extra=backend + flags), timeout=900))
    versions = {n: {s: sorted({r["weight_version"] for r in _dump(d, s)}) for s in (1, 2, 3)} for n, d in runs.items()}
    assert versions == {"k0": {1: [0], 2: [1], 3: [2]}, "k1": {1: [0], 2: [0], 3: [1]}}
    for name, lags in (("k0", [0, 0, 0]), ("k1", [0, 1, 1])):
        assert [r["rollout/staleness_max"] for r in read_metrics(runs[name]) if "train/loss" in r] == lags
