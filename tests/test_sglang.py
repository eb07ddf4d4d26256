"""SGLang rollout backend.

Without a server (always run): flags and pass-through, the server command line, the shared-memory
tensor serializer, HTTP timeouts/retries against a closed port, request planning.

With a REAL SGLang server on CPU (``@pytest.mark.sglang``; needs ``bash tools/install_sglang.sh``;
skipped with the reason otherwise). One server serves the whole module; the last test stops it
before launching its own (never two servers at once on a 2-core machine):
  * greedy token ids equal the embedded engine's and per-token log-probs agree within 1e-4;
    sampled log-probs are log softmax(logits / T) before top-p; EOS stops and is kept;
  * after a real megatron training step and a weight sync (disk, tensor, distributed/gloo), the
    server's greedy output and log-probs equal transformers' on the new weights;
  * a two-step Co-rewarding-II run with the teacher swapped into the same engine logs policy and
    teacher rollout throughput separately;
  * killing the server mid-run: the engine is restarted and the weights re-pushed within a bounded
    time; with no restart left the step fails with a clear error and the checkpoint still resumes.

This file is also the subprocess worker for the training runs (``python tests/test_sglang.py rlrun CFG``).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from megatron_corew.rollout import config, factory
from megatron_corew.rollout.base import SamplingParams
from megatron_corew.rollout.sglang import fleet as sf
from megatron_corew.rollout.sglang import http as sh
from megatron_corew.rollout.sglang import server as ss
from megatron_corew.rollout.sglang.engine import SGLangEngine
from megatron_corew.rollout.sglang.transport import serialize_named_tensors

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


@functools.lru_cache(maxsize=1)
def sglang_status() -> tuple[bool, str]:
    """Whether the SGLang interpreter imports sglang: probed once, when a test first needs a real server."""
    py = ss.default_sglang_python()
    try:
        r = subprocess.run([py, "-c", "import sglang, triton"], capture_output=True, text=True, timeout=120)
    except Exception as e:  # noqa: BLE001
        return False, f"cannot run {py}: {e}"
    if r.returncode != 0:
        return False, (
            f"sglang is not installed for {py} (run `bash tools/install_sglang.sh`): "
            f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}"
        )
    return True, ""


@pytest.fixture
def sglang_available():
    ok, reason = sglang_status()
    if not ok:
        pytest.skip(reason)


needs_sglang = pytest.mark.usefixtures("sglang_available")


# ============================================================================ no server needed
def test_flags_and_passthrough():
    import argparse

    p = argparse.ArgumentParser()
    config.add_rollout_args(p)
    rest, extra = config.split_sglang_passthrough(
        [
            "--lr",
            "1",
            "--sglang-mem-fraction-static",
            "0.5",
            "--sglang-enable-mixed-chunk",
            "--sglang-schedule-policy=lpm",
            "--sglang-cuda-graph-max-bs",
            "8",
            "--rollout-backend",
            "sglang",
        ]
    )
    assert extra == ["--enable-mixed-chunk", "--schedule-policy", "lpm", "--cuda-graph-max-bs", "8"]
    assert rest == ["--lr", "1", "--sglang-mem-fraction-static", "0.5", "--rollout-backend", "sglang"]
    a = p.parse_args(rest[2:] + ["--sglang-tp-size", "2", "--sglang-server-args", "--max-prefill-tokens 64"])
    a.sglang_passthrough = extra
    flags = config.server_args_from(a)
    assert flags[:4] == ["--mem-fraction-static", "0.5", "--tp-size", "2"]
    assert flags[4:] == ["--max-prefill-tokens", "64", *extra]
    cfg = config.RolloutConfig.from_args(a)
    assert cfg.server_args == flags and cfg.tp_size == 2 and cfg.backend == "sglang" and cfg.bucket_mb == 512
    spec = ss.ServerSpec(
        model_path="/m",
        python="py",
        port=1234,
        server_args=flags + ["--dtype", "bfloat16"],
        extra_pythonpath=["/stubs"],
    )
    cmd = spec.command()
    assert cmd[:3] == ["py", "-m", "sglang.launch_server"] and "--skip-tokenizer-init" in cmd
    assert cmd[cmd.index("--dtype") + 1] == "bfloat16" and cmd.count("--dtype") == 1  # user flag wins
    assert cmd[cmd.index("--attention-backend") + 1] == "torch_native"
    env = spec.environment()
    assert env["SGLANG_USE_CPU_ENGINE"] == "1" and env["PYTHONPATH"].split(os.pathsep)[0] == "/stubs"
    with pytest.raises(ValueError, match="pre-temperature"):
        ss.ServerSpec(model_path="/m", env={"SGLANG_RETURN_ORIGINAL_LOGPROB": "1"}).environment()


def test_startup_import_failure_says_what_is_missing_and_the_stubs_are_found(tmp_path):
    """A server interpreter that dies on SGLang's torchvision import: the start-up error's first line names the
    module and the fix; a ``VENV/cpu_stubs`` beside the interpreter (tools/install_sglang.sh) joins PYTHONPATH."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\necho 'Traceback (most recent call last):' >&2\n"
        "echo \"ModuleNotFoundError: No module named 'torchvision'\" >&2\nexit 1\n"
    )
    python.chmod(0o755)
    spec = ss.ServerSpec(model_path="/m", python=str(python), log_path=str(tmp_path / "server.log"))
    assert str(venv / "cpu_stubs") not in spec.environment().get("PYTHONPATH", "")
    proc = ss.ServerProcess(spec)
    proc.start()
    with pytest.raises(sh.EngineDownError) as err:
        proc.wait_ready(30)
    first = str(err.value).splitlines()[0]
    assert "could not import torchvision" in first and "tools/install_sglang.sh" in first, first
    (venv / "cpu_stubs").mkdir()
    spec = ss.ServerSpec(model_path="/m", python=str(python), extra_pythonpath=["/mine"])
    assert spec.environment()["PYTHONPATH"].split(os.pathsep)[:2] == ["/mine", str(venv / "cpu_stubs")]
    other = ss.startup_hint("ModuleNotFoundError: No module named 'zmq.asyncio'", "/v/bin/python")
    assert "import zmq" in other and "/v/bin/python -m pip install zmq" in other
    assert ss.startup_hint("RuntimeError: out of memory", "py") is None


def test_trainer_leaves_a_core_for_a_launched_cpu_server(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        torch.set_num_threads(3)
        embedded = config.RolloutConfig()
        attached = config.RolloutConfig(backend="sglang", device="cpu", urls=["http://a"])
        assert factory.leave_a_core_for_servers(embedded, log=lambda *_: None) is None
        assert factory.leave_a_core_for_servers(attached, log=lambda *_: None) is None
        assert torch.get_num_threads() == 3
        launched = config.RolloutConfig(backend="sglang", device="cpu")
        assert factory.leave_a_core_for_servers(launched, log=lambda *_: None) == 2 == torch.get_num_threads()
        torch.set_num_threads(3)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins
        assert factory.leave_a_core_for_servers(launched, log=lambda *_: None) is None
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_rollout_config_defaults_are_the_flag_defaults():
    """Parsing no flags gives the dataclass defaults; the training flags the factory reads are picked up."""
    args = config.build_rollout_parser().parse_args([])
    assert config.RolloutConfig.from_args(args) == config.RolloutConfig()
    args = config.build_rollout_parser().parse_args(["--rollout-batch-size", "8", "--sglang-urls", "http://a"])
    args.output_dir = "/runs/x"
    cfg = config.RolloutConfig.from_args(args)
    assert (cfg.batch_size, cfg.urls, cfg.output_dir) == (8, ["http://a"], "/runs/x")


def test_embedded_backend_from_factory(tmp_path):
    from helpers import make_tiny_hf_model

    from megatron_corew.rollout.embedded import EmbeddedEngine

    model = make_tiny_hf_model(str(tmp_path / "m"), "qwen2")
    eng = factory.create_engine(config.RolloutConfig(batch_size=4), model, None, "policy")
    assert isinstance(eng, EmbeddedEngine) and eng.max_batch_size == 4
    assert factory.eos_ids(model) == [2]
    args = config.build_rollout_parser().parse_args(["--rollout-batch-size", "4"])  # the flags, typed once
    assert factory.create_engine(config.RolloutConfig.from_args(args), model, None, "policy").max_batch_size == 4


def test_tensor_serializer_roundtrip_in_another_process(tmp_path):
    """The payload SGLang's scheduler unpickles: (name, tensor) pairs whose data travel through
    /dev/shm by file name; the trainer's own tensors are never moved to shared memory."""
    import torch

    src = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    data, keep = serialize_named_tensors([("a.weight", src), ("b.bias", torch.ones(5, dtype=torch.bfloat16))])
    assert not src.is_shared()
    code = (
        "import base64,io,pickle,sys,torch;"
        "x=pickle.loads(base64.b64decode(sys.stdin.read()));"
        "print(x[0][0], x[0][1].sum().item(), x[1][0], x[1][1].dtype)"
    )
    r = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["a.weight", "66.0", "b.bias", "torch.bfloat16"]
    del keep


def test_http_timeouts_and_retries_are_bounded():
    port = sh.free_port()
    t0 = time.monotonic()
    with pytest.raises(sh.SGLangHTTPError, match="after 3 attempts") as e:
        sh.http_json("GET", f"http://127.0.0.1:{port}/health", timeout=2, retries=2, backoff=0.1)
    assert e.value.connection and time.monotonic() - t0 < 5
    fleet = sf.AttachedFleet([f"http://127.0.0.1:{port}"], sh.HTTPConfig(retries=0, backoff=0.01))
    eng = SGLangEngine(fleet, model_path="/nonexistent", eos_token_ids=[2], max_restarts=0)
    with pytest.raises(sh.EngineDownError, match="cannot be restarted"):
        eng.generate([[1, 2, 3]], SamplingParams(max_new_tokens=2, greedy=True))


def test_request_plan_covers_every_prompt_once():
    fleet = sf.AttachedFleet(["http://a", "http://b", "http://c"], sh.HTTPConfig())
    eng = SGLangEngine(fleet, model_path="/m", eos_token_ids=[2], request_batch_size=3)
    plan = eng._plan(20)
    assert sorted(k for _, idx in plan for k in idx) == list(range(20))
    assert {e for e, _ in plan} == {0, 1, 2} and max(len(idx) for _, idx in plan) <= 3


# ============================================================================ fake servers (fast)
@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    from sglang_stubs import write_fake_sglang

    return write_fake_sglang(str(tmp_path_factory.mktemp("fake_sglang")))


def _fake_fleet(model, fake_root, tmp_path, n=2):
    specs = [
        ss.ServerSpec(
            model_path=model,
            python=sys.executable,
            extra_pythonpath=[fake_root],
            log_path=str(tmp_path / f"fake{i}.log"),
            name=f"fake{i}",
        )
        for i in range(n)
    ]
    return sf.LocalFleet(specs, sh.HTTPConfig(retries=1, backoff=0.1), startup_timeout=120).start()


@pytest.mark.e2e
def test_two_engines_restart_swap_and_versions_with_fake_servers(fake_root, tmp_path):
    """Client logic on two (fake) engines: work split and per-engine throughput, a killed engine
    restarted and refilled, the teacher swapped in and out, stale versions refused."""
    from helpers import make_tiny_hf_model
    from safetensors.torch import load_file

    from megatron_corew.rollout.embedded import EmbeddedEngine

    model = make_tiny_hf_model(str(tmp_path / "a"), "qwen2")
    other = make_tiny_hf_model(str(tmp_path / "b"), "qwen2", seed=3)
    fleet = _fake_fleet(model, fake_root, tmp_path)
    try:
        pol = SGLangEngine(
            fleet, model_path=model, eos_token_ids=[2], weight_sync="tensor", sync_dir=str(tmp_path / "sync")
        )
        teacher = pol.role_view("teacher")
        prompts = [[5, 6, 7], [9, 10], [11, 12, 13, 14], [3, 4], [20, 21, 22], [30]]
        p = SamplingParams(max_new_tokens=8, greedy=True)
        ref_a = [g.response_ids for g in EmbeddedEngine(model, [2]).generate(prompts, p)]
        ref_b = [g.response_ids for g in EmbeddedEngine(other, [2]).generate(prompts, p)]
        assert ref_a != ref_b
        gens = pol.generate(prompts, p)
        assert [g.response_ids for g in gens] == ref_a and {g.meta["engine"] for g in gens} == {0, 1}
        assert all(row["tokens_per_s"] > 0 for row in pol.engine_stats())
        # policy gets new weights; the teacher keeps the initial ones and is swapped in on demand
        pol.update_weights(sorted(load_file(os.path.join(other, "model.safetensors")).items()), 1)
        assert [g.response_ids for g in pol.generate(prompts, p)] == ref_b
        tg = teacher.generate(prompts, p)
        assert [g.response_ids for g in tg] == ref_a and {g.meta["weight_tag"] for g in tg} == {"default"}
        gens = pol.generate(prompts, p)
        assert [g.response_ids for g in gens] == ref_b and {g.weight_version for g in gens} == {1}
        assert sum("loaded policy weights policy-1" in e for e in pol.state.events) == 2
        # kill engine 1: restarted (new pid) and refilled with policy-1 from the kept copy
        old = fleet.pid(1)
        os.killpg(old, signal.SIGKILL)
        fleet.procs[1].proc.wait()
        assert [g.response_ids for g in pol.generate(prompts, p)] == ref_b
        assert fleet.pid(1) != old and pol.engine_stats()[1]["restarts"] == 1
        # a server that reports another weight version is refused, not silently used
        sh.http_json("POST", fleet.url(0) + "/set_fake_version", {"version": "policy-0"}, timeout=10)
        with pytest.raises(sh.SGLangError, match="refusing stale rollouts"):
            pol.generate(prompts, p)
        # with no restart allowed, a dead engine fails the call with a clear error
        pol.max_restarts = 0
        os.killpg(fleet.pid(0), signal.SIGKILL)
        fleet.procs[0].proc.wait()
        with pytest.raises(sh.EngineDownError, match="before any training update"):
            pol.generate(prompts, p)
    finally:
        fleet.shutdown()
    assert not any(pr.running() for pr in fleet.procs)


@pytest.mark.e2e
def test_router_in_front_of_two_fake_engines(fake_root, tmp_path):
    if not ss.router_available(ss.default_sglang_python()):
        pytest.skip("sglang_router is not installed (tools/install_sglang.sh installs it)")
    from helpers import make_tiny_hf_model

    from megatron_corew.rollout.embedded import EmbeddedEngine

    model = make_tiny_hf_model(str(tmp_path / "a"), "qwen2")
    specs = [
        ss.ServerSpec(
            model_path=model,
            python=sys.executable,
            extra_pythonpath=[fake_root],
            log_path=str(tmp_path / f"fake{i}.log"),
            name=f"fake{i}",
        )
        for i in range(2)
    ]
    fleet = sf.LocalFleet(
        specs, sh.HTTPConfig(), use_router=True, router_python=ss.default_sglang_python(), log_dir=str(tmp_path)
    ).start()
    try:
        eng = SGLangEngine(fleet, model_path=model, eos_token_ids=[2])
        prompts = [[5, 6, 7], [9, 10], [11, 12, 13], [3, 4], [20, 21], [30]]
        p = SamplingParams(max_new_tokens=6, greedy=True)
        ref = [g.response_ids for g in EmbeddedEngine(model, [2]).generate(prompts, p)]
        assert [g.response_ids for g in eng.generate(prompts, p)] == ref
        rows = eng.engine_stats()
        assert rows[-1]["engine"] == "router" and rows[-1]["tokens"] > 0
    finally:
        fleet.shutdown()


# ============================================================================ real server
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from helpers import make_tiny_bundle

    return make_tiny_bundle(str(tmp_path_factory.mktemp("sglang_bundle")))


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    from sglang_stubs import write_stubs

    return write_stubs(str(tmp_path_factory.mktemp("sglang_stubs")))


class _Server:
    """The module's one SGLang server (restartable by tests that need the machine to themselves)."""

    def __init__(self, model, stubs, log):
        self.model, self.stubs, self.log = model, stubs, log
        self.fleet = None

    def start(self):
        spec = ss.ServerSpec(
            model_path=self.model, extra_pythonpath=[self.stubs], log_path=self.log, name="test-engine"
        )
        self.fleet = sf.LocalFleet([spec], sh.HTTPConfig(), startup_timeout=300).start()
        return self

    @property
    def url(self):
        return self.fleet.url(0)

    def reset_weights(self):
        """Back to the initial checkpoint, reported as version 'default' (what a fresh client expects)."""
        sh.http_json(
            "POST",
            self.url + "/update_weights_from_disk",
            {"model_path": self.model, "weight_version": "default"},
            timeout=120,
        )

    def stop(self):
        if self.fleet is not None:
            self.fleet.shutdown()
            self.fleet = None


@pytest.fixture(scope="module")
def server(bundle, stubs, tmp_path_factory):
    ok, reason = sglang_status()
    if not ok:
        pytest.skip(reason)
    srv = _Server(bundle["model"], stubs, str(tmp_path_factory.mktemp("sglang_logs") / "server.log")).start()
    yield srv
    srv.stop()


def _client(server, **kw):
    server.reset_weights()
    return SGLangEngine(
        sf.AttachedFleet([server.url], sh.HTTPConfig()), model_path=server.model, eos_token_ids=kw.pop("eos", [2]), **kw
    )


def _prompts(bundle, n=6):
    from transformers import AutoTokenizer

    from megatron_corew.data.dataset import load_examples

    tok = AutoTokenizer.from_pretrained(bundle["model"])
    ex = load_examples(bundle["train"], tok, 128)
    return [ex[i].prompt_ids for i in range(n)]


@pytest.mark.sglang
@needs_sglang
def test_greedy_ids_and_logprobs_match_embedded(server, bundle):
    from megatron_corew.rollout.embedded import EmbeddedEngine

    prompts = _prompts(bundle) + [[5, 6, 7], [9] * 20]
    p = SamplingParams(max_new_tokens=24, greedy=True)
    ours = _client(server).generate(prompts, p)
    ref = EmbeddedEngine(bundle["model"], [2]).generate(prompts, p)
    for a, b in zip(ours, ref):
        assert a.prompt_ids == b.prompt_ids
        assert a.response_ids == b.response_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4
        assert a.finish_reason == b.finish_reason and a.weight_version == 0 and a.meta["weight_tag"] == "default"


@pytest.mark.sglang
@needs_sglang
def test_sampled_logprobs_are_temperature_scaled_not_truncated(server, bundle):
    import torch
    from transformers import AutoModelForCausalLM

    T = 0.7
    gens = _client(server).generate(_prompts(bundle, 4), SamplingParams(max_new_tokens=16, temperature=T, top_p=0.8))
    model = AutoModelForCausalLM.from_pretrained(bundle["model"], dtype=torch.float32).eval()
    worst, worst_pre_t = 0.0, 0.0
    for g in gens:
        with torch.no_grad():
            logits = model(torch.tensor([g.prompt_ids + g.response_ids])).logits[0].double()
        rows = logits[len(g.prompt_ids) - 1 : -1]
        lp = torch.log_softmax(rows / T, -1)
        lp1 = torch.log_softmax(rows, -1)
        for j, t in enumerate(g.response_ids):
            worst = max(worst, abs(lp[j, t].item() - g.logprobs[j]))
            worst_pre_t = max(worst_pre_t, abs(lp1[j, t].item() - g.logprobs[j]))
    assert worst < 1e-4 and worst_pre_t > 1e-3, (worst, worst_pre_t)


@pytest.mark.sglang
@needs_sglang
def test_eos_stops_generation_and_is_kept(server, bundle):
    from megatron_corew.rollout.embedded import EmbeddedEngine

    prompts = _prompts(bundle, 3)
    p = SamplingParams(max_new_tokens=20, greedy=True)
    first = EmbeddedEngine(bundle["model"], [2]).generate(prompts, p)
    stop = first[0].response_ids[3]  # pretend a token the model emits is the EOS
    ours = _client(server, eos=[2, stop]).generate(prompts, p)
    ref = EmbeddedEngine(bundle["model"], [2, stop]).generate(prompts, p)
    assert ours[0].response_ids[-1] == stop and ours[0].finish_reason == "stop"
    assert [g.response_ids for g in ours] == [g.response_ids for g in ref]
    assert [g.finish_reason for g in ours] == [g.finish_reason for g in ref]


def _run_args(bundle, out, method="gt", steps=1, lr="1e-2", extra=()):
    return [
        "--hf-checkpoint",
        bundle["model"],
        "--train-data",
        bundle["train"],
        "--reward-method",
        method,
        "--global-batch-size",
        "4",
        "--n-samples-per-prompt",
        "4",
        "--max-response-length",
        "16",
        "--max-prompt-length",
        "128",
        "--micro-batch-size",
        "16",
        "--lr",
        lr,
        "--lr-warmup-fraction",
        "0",
        "--train-iters",
        str(steps),
        "--eval-interval",
        "0",
        "--output-dir",
        out,
        "--no-progress-bar",
        "--kl-loss-coef",
        "0",
        *extra,
    ]


def _rlrun(cfg: dict, tmp_path, timeout=900) -> dict:
    cfg_path = str(tmp_path / "cfg.json")
    cfg["out"] = str(tmp_path / "result.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([REPO, HERE]))
    log = str(tmp_path / "worker.log")
    with open(log, "w") as logf:  # a file, not a pipe: nothing a worker leaves behind can hold the test
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "rlrun", cfg_path],
            stdout=logf,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            env=env,
            cwd=REPO,
        )
    output = open(log).read()
    assert os.path.exists(cfg["out"]), f"worker died (rc {proc.returncode}):\n{output[-8000:]}"
    with open(cfg["out"]) as f:
        res = json.load(f)
    res["stderr"] = output
    return res


def _metrics(out):
    from helpers import read_metrics

    return [r for r in read_metrics(out) if "train/loss" in r]


@pytest.mark.sglang
@needs_sglang
@pytest.mark.parametrize("mode", ["disk", "tensor", "distributed"])
def test_training_step_then_sync_matches_transformers(server, bundle, tmp_path, mode):
    server.reset_weights()
    out = str(tmp_path / "run")
    res = _rlrun(
        {
            "base_argv": _run_args(bundle, out, method="self_certainty"),  # dense rewards: a real update
            "rollout_argv": ["--rollout-backend", "sglang", "--sglang-urls", server.url, "--sglang-weight-sync", mode],
        },
        tmp_path,
    )
    assert "error" not in res, res.get("error") + res["stderr"][-3000:]
    chk = res["check"]
    assert chk["server_equals_new_weights"], chk
    assert chk["max_logprob_diff_vs_new"] < 1e-4, chk
    assert chk["max_logprob_diff_vs_initial"] > 1e-3, chk  # the step really changed the served weights
    assert chk["weight_tags"] == ["policy-1"] * len(chk["weight_tags"])
    (m,) = _metrics(out)
    assert m["perf/rollout_tokens_per_s"] > 0 and m["perf/time_weight_sync"] > 0


@pytest.mark.sglang
@needs_sglang
def test_corewarding2_two_steps_with_swapped_teacher(server, bundle, tmp_path):
    server.reset_weights()
    out = str(tmp_path / "run")
    res = _rlrun(
        {
            "base_argv": _run_args(bundle, out, method="corewarding_2", steps=2, lr="1e-3"),
            "rollout_argv": [
                "--rollout-backend",
                "sglang",
                "--sglang-urls",
                server.url,
                "--sglang-weight-sync",
                "tensor",
                "--sglang-teacher-engines",
                "shared",
            ],
        },
        tmp_path,
    )
    assert "error" not in res, res.get("error") + res["stderr"][-3000:]
    ms = _metrics(out)
    assert [m["step"] for m in ms] == [1, 2]
    for m in ms:
        assert m["perf/rollout_tokens_per_s"] > 0 and m["perf/teacher_rollout_tokens_per_s"] > 0
        assert "train/teacher_alpha" in m
    print(
        "policy tok/s",
        [round(m["perf/rollout_tokens_per_s"], 1) for m in ms],
        "teacher tok/s",
        [round(m["perf/teacher_rollout_tokens_per_s"], 1) for m in ms],
    )
    # the teacher's weights were swapped in (and the policy's back) on the one engine
    assert any("loaded teacher weights teacher-" in e for e in res["events"]), res["events"]
    assert any("loaded policy weights policy-" in e for e in res["events"]), res["events"]
    assert res["check"]["server_equals_new_weights"] and res["check"]["max_logprob_diff_vs_new"] < 1e-4


@pytest.mark.sglang
@needs_sglang
def test_two_real_servers_behind_the_real_router(server, bundle, stubs, tmp_path):
    """The run launches two SGLang servers and sglang_router itself; a 2-step Co-rewarding-II run syncs both
    servers (checked against transformers on prompts the router spreads over both), and logs throughput."""
    if not ss.router_available(ss.default_sglang_python()):
        pytest.skip("sglang_router is not installed (tools/install_sglang.sh installs it)")
    server.stop()  # the tests after this one launch their own engines
    out = str(tmp_path / "run")
    res = _rlrun(
        {
            "base_argv": _run_args(bundle, out, method="corewarding_2", steps=2, lr="1e-3"),
            "rollout_argv": [
                "--rollout-backend",
                "sglang",
                "--sglang-num-engines",
                "2",
                "--sglang-router",
                "on",
                "--sglang-weight-sync",
                "tensor",
                "--sglang-teacher-engines",
                "shared",
                "--sglang-extra-pythonpath",
                stubs,
                "--sglang-startup-timeout",
                "300",
            ],
        },
        tmp_path,
        timeout=1200,
    )
    assert "error" not in res, res.get("error") + res["stderr"][-3000:]
    chk = res["check"]
    assert chk["server_equals_new_weights"] and chk["max_logprob_diff_vs_new"] < 1e-4, chk
    rows = {str(r["engine"]): r for r in res["engine_stats"]}
    assert set(rows) == {"0", "1", "router"} and rows["router"]["tokens"] > 0
    # each server reports its own last generation throughput: both served requests through the router
    assert all(rows[i].get("server_last_gen_throughput") is not None for i in ("0", "1")), rows
    ms = _metrics(out)
    assert [m["step"] for m in ms] == [1, 2]
    for m in ms:
        assert m["perf/rollout_enginerouter_tokens_per_s_cumulative"] > 0 and m["perf/teacher_rollout_tokens_per_s"] > 0
    assert res["pids_alive_after"] == []


@pytest.mark.e2e
def test_ray_reward_workers_grade_in_parallel():
    pytest.importorskip("ray")
    import ray

    from megatron_corew.rewards.grading import extract_boxed_answer, grade
    from megatron_corew.rewards.grading.workers import grade_answers
    from megatron_corew.rollout.sglang.ray_fleet import RayRolloutManager

    mgr = RayRolloutManager([], num_reward_workers=2).start()
    try:
        responses = [f"so \\boxed{{{k % 7}}}" for k in range(40)] + ["no answer", "\\boxed{\\frac{1}{2}}"]
        truths = [str(k % 5) for k in range(40)] + ["1", "0.5"]
        scores = mgr.grade_answers([extract_boxed_answer(r) for r in responses], truths, "equiv")
        assert scores == [grade(r, t, "equiv") for r, t in zip(responses, truths)]
        assert sum(scores) > 0
        # extracted answers are graded as they are, never re-boxed: a malformed box scores as it does inline
        odd = [extract_boxed_answer("$\\boxed 5}$"), "5", " "]
        assert mgr.grade_answers(odd, ["5", None, "1"]) == grade_answers(odd, ["5", None, "1"])
        assert mgr.grade_answers(odd[:1], ["5"]) == [grade("$\\boxed 5}$", "5")]
        assert mgr.grader.grade(odd, ["5", None, "1"]) == grade_answers(odd, ["5", None, "1"])
        pids = ray.get([w.pid.remote() for w in mgr.reward_workers])
        assert len(set(pids)) == 2 and os.getpid() not in pids
    finally:
        mgr.shutdown()
        ray.shutdown()


@pytest.mark.sglang
@needs_sglang
def test_ray_manager_restarts_a_dead_engine_and_repushes_weights(server, bundle, stubs, tmp_path):
    pytest.importorskip("ray")
    import ray
    from helpers import make_tiny_hf_model
    from safetensors.torch import load_file

    from megatron_corew.rollout.embedded import EmbeddedEngine
    from megatron_corew.rollout.sglang.ray_fleet import RayRolloutManager

    server.stop()  # one server at a time
    other = make_tiny_hf_model(str(tmp_path / "other"), "qwen3", vocab=512, seed=7)
    spec = ss.ServerSpec(
        model_path=bundle["model"], extra_pythonpath=[stubs], log_path=str(tmp_path / "ray_engine.log")
    )
    mgr = RayRolloutManager([spec], startup_timeout=300, num_reward_workers=1).start()
    try:
        eng = SGLangEngine(mgr, model_path=bundle["model"], eos_token_ids=[2], weight_sync="tensor")
        prompts = _prompts(bundle, 4)
        p = SamplingParams(max_new_tokens=12, greedy=True)
        eng.generate(prompts, p)
        new = load_file(os.path.join(other, "model.safetensors"))
        eng.update_weights(sorted(new.items()), 5)
        ref = [g.response_ids for g in EmbeddedEngine(other, [2]).generate(prompts, p)]
        assert [g.response_ids for g in eng.generate(prompts, p)] == ref
        old_pid = mgr.kill_server(0)
        t0 = time.monotonic()
        gens = eng.generate(prompts, p)  # restarted by its actor, weights re-pushed from the kept copy
        assert time.monotonic() - t0 < 300
        assert [g.response_ids for g in gens] == ref and {g.meta["weight_tag"] for g in gens} == {"policy-5"}
        report = mgr.throughput_report(eng)
        assert report[0]["pid"] != old_pid and report[0]["restarts"] == 1 and report[0]["tokens_per_s"] > 0
        assert any("is down: restarting it and re-pushing policy weights policy-5" in e for e in eng.state.events)
        print("ray per-engine report:", report)
    finally:
        mgr.shutdown()
        ray.shutdown()


@pytest.mark.sglang
@needs_sglang
def test_training_loop_grades_on_ray_reward_workers(server, bundle, stubs, tmp_path):
    """--sglang-use-ray --sglang-reward-workers 2: the gt rewards of every step come from the Ray workers and equal
    the inline grader's scores of the dumped responses."""
    pytest.importorskip("ray")
    from megatron_corew.demo.tiny_bundle import is_complete, make_tiny_task
    from megatron_corew.rewards.grading import grade

    server.stop()
    assets = os.path.join(REPO, "assets", "tiny")  # the warm-started model: its answers are boxed, so graded
    if not is_complete(assets):
        make_tiny_task(assets)
    warm = {"model": os.path.join(assets, "model"), "train": os.path.join(assets, "data", "train.parquet")}
    out = str(tmp_path / "run")
    res = _rlrun(
        {
            "base_argv": _run_args(
                warm, out, method="gt", steps=2, lr="1e-3", extra=["--rollout-dump", "--max-response-length", "32"]
            ),
            "rollout_argv": [
                "--rollout-backend",
                "sglang",
                "--sglang-use-ray",
                "--sglang-reward-workers",
                "2",
                "--sglang-weight-sync",
                "tensor",
                "--sglang-extra-pythonpath",
                stubs,
                "--sglang-startup-timeout",
                "300",
            ],
        },
        tmp_path,
        timeout=1200,
    )
    assert "error" not in res, res.get("error") + res["stderr"][-3000:]
    ms = _metrics(out)
    assert [m["step"] for m in ms] == [1, 2]
    for m in ms:
        assert m["reward/graded_by_workers"] > 0
    dumped = [
        json.loads(line) for step in (1, 2) for line in open(os.path.join(out, "rollouts", f"step_{step:06d}.jsonl"))
    ]  # dump files are numbered like metrics steps (from 1)
    assert len(dumped) == 2 * 4 * 4
    assert [d["reward"] for d in dumped] == [grade(d["response"], d["ground_truth"]) for d in dumped]
    assert sum(d["reward"] for d in dumped) > 0


@pytest.mark.sglang
@needs_sglang
def test_killed_server_is_restarted_then_a_dead_one_fails_the_step(server, bundle, stubs, tmp_path):
    server.stop()  # this test launches its own engine: one server at a time on this machine
    out = str(tmp_path / "run")
    ckpt = str(tmp_path / "ckpt")
    res = _rlrun(
        {
            "base_argv": _run_args(bundle, out, steps=3, lr="1e-3", extra=["--save", ckpt, "--save-interval", "1"]),
            "rollout_argv": [
                "--rollout-backend",
                "sglang",
                "--sglang-weight-sync",
                "tensor",
                "--sglang-extra-pythonpath",
                stubs,
                "--sglang-startup-timeout",
                "300",
                "--sglang-http-retries",
                "1",
            ],
            "kill_before_step": 1,
            "kill_for_good_before_step": 2,
        },
        tmp_path,
        timeout=1200,
    )
    events = "\n".join(res["events"])
    # step 1: the engine died; it was restarted and the step-1 policy weights re-pushed
    assert "is down: restarting it and re-pushing policy weights policy-1" in events, events
    # no host copy by default (--sglang-keep-weights auto): every rank re-pushed the trainer's weights
    assert "policy weights 1 re-pushed by the trainer" in events, events
    assert "engine 0: back up as" in events
    assert "is down and no restart is left" in events
    assert res["restart_step_seconds"] < 300 + 120, res["restart_step_seconds"]
    # step 2: the engine died again with no restart allowed -> the step failed with a clear error
    assert res["error"].startswith("EngineDownError") and "stayed down" in res["error"], res["error"]
    assert "before any training update" in res["error"]
    assert [m["step"] for m in _metrics(out)] == [1, 2]
    assert open(os.path.join(ckpt, "latest")).read().strip() == "iter_0000002"
    assert res["pids_alive_after"] == [], "server processes outlived the run"
    # the checkpoint is intact: resume it (embedded engine) and finish step 3
    from helpers import run_train

    proc = run_train(_run_args(bundle, out, steps=3, lr="1e-3", extra=["--load", ckpt]), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [m["step"] for m in _metrics(out)][-1] == 3


@pytest.mark.sglang
@needs_sglang
def test_killed_server_under_async_rollout_is_refilled_by_the_trainer(server, bundle, stubs, tmp_path):
    """--async-rollout: the server dies while the background thread generates the next step's rollouts. The
    fleet restarts it without weights (no host copy by default), the thread hands the refill to the main loop,
    every rank re-pushes the trainer's weights and the request is made again: the run finishes."""
    server.stop()  # this test launches its own engine: one server at a time on this machine
    out = str(tmp_path / "run")
    res = _rlrun(
        {
            "base_argv": _run_args(bundle, out, steps=3, lr="1e-3", extra=["--async-rollout", "--rollout-dump"]),
            "rollout_argv": [
                "--rollout-backend",
                "sglang",
                "--sglang-weight-sync",
                "tensor",
                "--sglang-extra-pythonpath",
                stubs,
                "--sglang-startup-timeout",
                "300",
                "--sglang-http-retries",
                "1",
            ],
            "kill_before_step": 1,  # step 2's rollouts were made during step 1; step 3's meet the dead server
            "skip_final_check": True,  # the run is the test; no rank-0 generation after it
        },
        tmp_path,
        timeout=1200,
    )
    events = "\n".join(res["events"])
    assert "error" not in res, res.get("error", "") + res["stderr"][-3000:]
    assert "engine 0: back up as" in events, events
    assert "policy weights 2 re-pushed by the trainer" in events, events
    assert [m["step"] for m in _metrics(out)] == [1, 2, 3]
    versions = [sorted({json.loads(x)["weight_version"] for x in open(_dump_path(out, s))}) for s in (1, 2, 3)]
    assert versions == [[0], [0], [2]], versions  # step 3 made again after the re-push, from version 2
    assert res["pids_alive_after"] == [], "server processes outlived the run"


def _dump_path(out, step):
    return os.path.join(out, "rollouts", f"step_{step:06d}.jsonl")


# ============================================================================ worker
def _rlrun_worker(cfg_path: str) -> None:
    import torch

    from checkpoints_conversion.hf_io import write_hf_checkpoint
    from megatron_corew.arguments import parse_args
    from megatron_corew.policy import parallel
    from megatron_corew.policy.weights import hf_state_dict
    from megatron_corew.rollout.embedded import EmbeddedEngine
    from megatron_corew.train import RLRun

    cfg = json.load(open(cfg_path))
    args = parse_args(cfg["base_argv"])
    argv, passthrough = config.split_sglang_passthrough(cfg["rollout_argv"])
    config.build_rollout_parser().parse_args(argv, namespace=args)
    args.sglang_passthrough = passthrough
    run = RLRun(args)  # its engines come from the factory, as in train_rl.py
    eng = run.engine
    result: dict = {}
    orig_step = run.step

    def kill_engines():
        for p in getattr(eng.fleet, "procs", []):
            os.killpg(p.pid, signal.SIGKILL)
            p.proc.wait()
        sh.log_event(f"TEST: killed the rollout server(s) {[p.pid for p in getattr(eng.fleet, 'procs', [])]}")

    def step(k):
        if cfg.get("kill_before_step") == k:
            kill_engines()
            t0 = time.perf_counter()
            m = orig_step(k)
            result["restart_step_seconds"] = time.perf_counter() - t0
            return m
        if cfg.get("kill_for_good_before_step") == k:
            eng.max_restarts = 0
            kill_engines()
        return orig_step(k)

    run.step = step
    try:
        result["run"] = run.run()
    except Exception as e:  # noqa: BLE001
        result["error"] = f"{type(e).__name__}: {e}"
    result["events"] = list(eng.state.events)
    result["engine_stats"] = eng.engine_stats()
    if "error" not in result and not cfg.get("skip_final_check"):
        tmp = os.path.join(args.output_dir, "final_policy_hf")
        state = hf_state_dict(run.trainer.model, run.model_args)
        write_hf_checkpoint(tmp, state.items(), config_dir=args.hf_checkpoint)
        prompts = [run.train_set[i].prompt_ids for i in range(6)]
        p = SamplingParams(max_new_tokens=16, greedy=True)
        srv = eng.generate(prompts, p)
        new = EmbeddedEngine(tmp, eng.eos).generate(prompts, p)
        init = EmbeddedEngine(args.hf_checkpoint, eng.eos).generate(prompts, p)

        def diff(a, b):
            d = 0.0
            for x, y in zip(a, b):
                n = min(len(x.logprobs), len(y.logprobs))
                d = max([d] + [abs(u - v) for u, v in zip(x.logprobs[:n], y.logprobs[:n])])
            return d

        # initial weights scored on the server's tokens (teacher-forced), to see that the weights moved
        from transformers import AutoModelForCausalLM

        m0 = AutoModelForCausalLM.from_pretrained(args.hf_checkpoint, dtype=torch.float32).eval()
        d0 = 0.0
        for g in srv:
            with torch.no_grad():
                lg = torch.log_softmax(m0(torch.tensor([g.prompt_ids + g.response_ids])).logits[0].float(), -1)
            for j, t in enumerate(g.response_ids):
                d0 = max(d0, abs(lg[len(g.prompt_ids) - 1 + j, t].item() - g.logprobs[j]))
        result["check"] = {
            "server_equals_new_weights": [g.response_ids for g in srv] == [g.response_ids for g in new],
            "server_equals_initial_weights": [g.response_ids for g in srv] == [g.response_ids for g in init],
            "max_logprob_diff_vs_new": diff(srv, new),
            "max_logprob_diff_vs_initial": d0,
            "weight_tags": [g.meta["weight_tag"] for g in srv],
        }
    pids = [p.pid for p in getattr(eng.fleet, "procs", [])]
    eng.shutdown()
    time.sleep(1.0)
    result["pids_alive_after"] = [
        pid for pid in pids if os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    ]
    with open(cfg["out"], "w") as f:
        json.dump(result, f, default=str)
    parallel.destroy_distributed()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "rlrun":
        _rlrun_worker(sys.argv[2])
    else:
        raise SystemExit("usage: python tests/test_sglang.py rlrun CONFIG.json")


def test_server_whose_chosen_port_was_taken_restarts_on_a_new_one(tmp_path):
    """A free port chosen for a server can be taken before the server binds it (another server's internal ports,
    seen once in a full run): the start-up wait picks a new port and starts again. SGLang stands in as a small
    script (real processes, real HTTP): its first start fails to bind like SGLang does, its second serves /health."""
    fake = tmp_path / "fake_python"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import http.server, os, sys\n"
        "port = int(sys.argv[sys.argv.index('--port') + 1])\n"
        f"marker = {str(tmp_path / 'started_once')!r}\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').close()\n"
        "    print(f\"ERROR: [Errno 98] error while attempting to bind on address ('127.0.0.1', {port}): address already in use\", flush=True)\n"
        "    sys.exit(3)\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.send_header('Content-Type', 'application/json'); self.end_headers()\n"
        "        self.wfile.write(b'{}')\n"
        "http.server.HTTPServer(('127.0.0.1', port), H).serve_forever()\n"
    )
    fake.chmod(0o755)
    proc = ss.ServerProcess(ss.ServerSpec("model", python=str(fake), log_path=str(tmp_path / "server.log")))
    proc.start()
    first = proc.spec.port
    try:
        proc.wait_ready(60)
        assert proc.starts == 2 and proc.running() and proc.spec.port != first
        assert "address already in use" in open(tmp_path / "server.log").read()
    finally:
        proc.stop()
