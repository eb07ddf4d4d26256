"""Beyond one machine, simulated on this one.

``examples/slurm/ray_rollout_fleet.sbatch`` runs unchanged on a faked 3-node allocation (``tests/fake_slurm.py``
stands in for srun/scontrol, the only part that cannot run here): nodes 0 and 1 each start a torchrun launcher
(``--nnodes 2 --nproc_per_node 1``, c10d rendezvous on localhost, TP=2 across the two), node 0 a Ray head and node 2
a Ray worker raylet (a second real raylet on this host, at 127.0.0.2, offering {"rollout_node": 1}); the trainer
places two real SGLang CPU servers through Ray with ``--sglang-ray-resource rollout_node`` and trains two
Co-rewarding-II steps. The reference is one launcher (``torchrun --standalone --nproc_per_node 2``, TP=2) with the
same two Ray-owned engines on a one-raylet local Ray: with the same seeds (the trainer's, and the servers'
--random-seed) every non-perf metric of both runs must be equal, bit for bit.

Every process the test starts carries a marker variable in its environment; whatever is left at the end (Ray
raylets, workers, SGLang servers) is found by it and killed, so other Ray instances on the machine are never
touched (each raylet also has its own --temp-dir and ports).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
from helpers import assert_real_signal

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ASSETS = os.path.join(REPO, "assets", "tiny")
WORKER_IP = "127.0.0.2"  # the worker "node": Linux routes all of 127/8 to the loopback device


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def marked_pids(tag: str) -> list[int]:
    """Processes whose environment holds MULTINODE_TEST_TAG=tag (this test's descendants, wherever re-parented)."""
    needle = f"MULTINODE_TEST_TAG={tag}".encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    out.append(int(d))
        except OSError:
            pass
    return out


def reap(tag: str, grace_s: float = 45.0) -> list[int]:
    """Wait for this test's processes to exit (Ray drains for up to 30 s), then SIGKILL the rest; returns them."""
    deadline = time.monotonic() + grace_s
    while marked_pids(tag) and time.monotonic() < deadline:
        time.sleep(1)
    left = marked_pids(tag)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def run_logged(cmd: list[str], env: dict, log: str, timeout: float) -> int:
    """Run ``cmd`` in its own session with output to ``log``; on timeout SIGTERM (then SIGKILL) its group."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            pytest.fail(f"{cmd[:2]} ran past {timeout:.0f} s; log tail:\n{open(log).read()[-6000:]}")


def metrics(out: str) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "train/loss" in r]


def node_id(temp_dir: str) -> str:
    """The raylet's own record of its node id (raylet.out of its session under its --temp-dir)."""
    text = open(os.path.join(temp_dir, "session_latest", "logs", "raylet.out")).read()
    return re.search(r"Setting node ID node_id=([0-9a-f]+)", text).group(1)


def actor_logs(temp_dir: str, name: str) -> list[str]:
    logs = os.path.join(temp_dir, "session_latest", "logs")
    found = []
    for fn in os.listdir(logs):
        if fn.startswith("worker-") and fn.endswith(".out"):
            with open(os.path.join(logs, fn), errors="replace") as f:
                if name in f.read():
                    found.append(fn)
    return found


@pytest.fixture
def sglang_ready():
    pytest.importorskip("ray")
    from test_sglang import sglang_status

    ok, reason = sglang_status()
    if not ok:
        pytest.skip(reason)
    from megatron_corew.demo.tiny_bundle import is_complete, make_tiny_task

    if not is_complete(ASSETS):
        make_tiny_task(ASSETS)


@pytest.fixture
def ray_root():
    """Short: Ray's unix socket paths under a raylet's --temp-dir must stay within 107 bytes."""
    root = tempfile.mkdtemp(prefix="mn-", dir="/tmp")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.sglang
@pytest.mark.slow
@pytest.mark.usefixtures("sglang_ready")
def test_two_node_launch_with_ray_fleet_on_a_worker_raylet_equals_one_launcher(tmp_path, ray_root):
    from sglang_stubs import write_stubs

    tag = uuid.uuid4().hex
    stubs = write_stubs(str(tmp_path / "stubs"))
    # SGLang honours the per-prompt sampling seeds only with --enable-deterministic-inference, which needs a GPU
    # attention backend; on CPU the servers' own --random-seed makes their sampling reproducible (each engine
    # gets its prompts in one batched request, so its RNG sees the same batches in both runs)
    rollout = (
        "--sglang-num-engines 2 --sglang-router off --sglang-teacher-engines shared --sglang-weight-sync distributed "
        f"--sglang-random-seed 1234 --sglang-extra-pythonpath {stubs} --sglang-startup-timeout 900"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))}
    base.update(
        MULTINODE_TEST_TAG=tag,
        PYTHONPATH=os.pathsep.join([REPO, HERE]),
        OMP_NUM_THREADS="1",
        RAY_AUTH_MODE="disabled",
        CPU_TINY="1",
        METHOD="corewarding_2",
        STEPS="2",
        SEED="1234",
        VAL_DATA="none",
    )
    try:
        # ---- reference: one launcher, TP=2 over its two ranks, the engines on a local one-raylet Ray
        one_out = str(tmp_path / "one" / "out")
        env = dict(base, NPROC="2", OUT=one_out, EXTRA_ARGS=f"--rollout-backend sglang --sglang-use-ray {rollout}")
        one_log = str(tmp_path / "one.log")
        rc = run_logged(["bash", os.path.join(REPO, "examples", "launch.sh")], env, one_log, timeout=2400)
        one_text = open(one_log).read()
        assert rc == 0, one_text[-6000:]
        assert "torchrun --standalone --nnodes 1 --nproc_per_node 2" in one_text
        assert "layout: 2 rank(s) = TP 2 x PP 1 x DP 1" in one_text

        # ---- the sbatch file on a faked allocation: trainer on n0 + n1, Ray head on n0, Ray worker on n2
        from fake_slurm import install

        fake_bin = install(str(tmp_path / "bin"))
        (ray_port, master_port, *p) = free_ports(17)
        head_dir, worker_dir = os.path.join(ray_root, "h"), os.path.join(ray_root, "w")
        head_args = (
            f"--temp-dir {head_dir} --num-cpus 1 --object-store-memory 100000000 --include-dashboard false "
            f"--dashboard-port {p[0]} --node-manager-port {p[1]} --object-manager-port {p[2]} "
            f"--ray-client-server-port {p[3]} --dashboard-agent-listen-port {p[4]} --dashboard-agent-grpc-port {p[5]} "
            f"--runtime-env-agent-port {p[6]} --metrics-export-port {p[7]} --min-worker-port 0 --max-worker-port 0"
        )
        worker_args = (
            f"--temp-dir {worker_dir} --num-cpus 1 --object-store-memory 100000000 --node-manager-port {p[8]} "
            f"--object-manager-port {p[9]} --dashboard-agent-listen-port {p[10]} --dashboard-agent-grpc-port {p[11]} "
            f"--runtime-env-agent-port {p[12]} --metrics-export-port {p[13]} --min-worker-port 0 --max-worker-port 0"
        )
        multi_out = str(tmp_path / "multi" / "out")
        env = dict(
            base,
            PATH=fake_bin + os.pathsep + base["PATH"],
            SLURM_JOB_NODELIST="n0,n1,n2",
            SLURM_JOB_ID=f"mn{os.getpid()}",
            FAKE_SLURM_NODE_ENV=json.dumps(
                {"n0": {"NODE_IP": "127.0.0.1"}, "n1": {"NODE_IP": "127.0.0.1"}, "n2": {"NODE_IP": WORKER_IP}}
            ),
            REPO=REPO,
            TRAIN_NODES="2",
            GPUS_PER_NODE="1",
            NPROC="1",
            NUM_ENGINES="2",
            HEAD_IP="127.0.0.1",
            MASTER_ADDR="127.0.0.1",
            RAY_PORT=str(ray_port),
            MASTER_PORT=str(master_port),
            RAY_HEAD_ARGS=head_args,
            RAY_WORKER_ARGS=worker_args,
            RAY_WAIT_S="600",
            OUT=multi_out,
            EXTRA_ARGS=rollout,
        )
        multi_log = str(tmp_path / "multi.log")
        sbatch = os.path.join(REPO, "examples", "slurm", "ray_rollout_fleet.sbatch")
        rc = run_logged(["bash", sbatch], env, multi_log, timeout=2400)
        text = open(multi_log).read()
        assert rc == 0, text[-8000:]
    finally:
        leftovers = reap(tag)
    print(f"processes left after the runs (killed): {leftovers}")

    # two launchers, one per "node", rendezvous through c10d on localhost, TP=2 over both
    launch = f"torchrun --nnodes 2 --nproc_per_node 1 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:{master_port}"
    assert text.count(launch) == 3, text[-6000:]  # the batch host's dry-run check, then node 0 and node 1
    assert "[node 0] trainer launcher" in text and "[node 1] trainer launcher" in text
    assert "layout: 2 rank(s) = TP 2 x PP 1 x DP 1" in text  # one TP=2 group over both launchers' ranks
    # two raylets: the head (node 0) and the worker (node 2) offering the rollout resource
    assert "Ray nodes alive: 2 / 2" in text
    head_id, worker_id = node_id(head_dir), node_id(worker_dir)
    assert head_id != worker_id
    # both engines were placed on the worker raylet: the trainer's record and the raylet's own logs agree
    placed = re.findall(r"ray engine (\d): http://([\d.]+):\d+ pid (\d+) on node ([\d.]+) id ([0-9a-f]+)", text)
    assert sorted(int(i) for i, *_ in placed) == [0, 1], text[-6000:]
    for _i, host, _pid, node_ip, nid in placed:
        assert (host, node_ip, nid) == (WORKER_IP, WORKER_IP, worker_id)
    assert len(actor_logs(worker_dir, "_EngineActor")) == 2 and actor_logs(head_dir, "_EngineActor") == []
    # every non-perf metric equals the one-launcher run's, exactly
    one, multi = metrics(one_out), metrics(multi_out)
    assert [m["step"] for m in one] == [m["step"] for m in multi] == [1, 2]
    assert_real_signal(one, (1, 2))  # the warm tiny task: the compared steps train a real policy gradient
    for a, b in zip(one, multi):
        a = {k: v for k, v in a.items() if not k.startswith("perf/") and k != "time"}  # time: the wall clock
        b = {k: v for k, v in b.items() if not k.startswith("perf/") and k != "time"}
        assert a.keys() == b.keys()
        diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
        assert not diff, diff
        assert "train/teacher_alpha" in a and len(a) > 20
    print("step-2 metrics equal:", {k: v for k, v in a.items() if k.startswith(("reward/", "train/loss"))})


# ---------------------------------------------------------------- the placement flag and the shell path (fast)
def _flag_error(bundle, tmp_path, capsys, *flags) -> str:
    from megatron_corew.arguments import parse_args

    base = ["--hf-checkpoint", bundle["model"], "--train-data", bundle["train"], "--output-dir", str(tmp_path / "o")]
    capsys.readouterr()  # drop what building the bundle printed
    with pytest.raises(SystemExit) as e:
        parse_args(base + list(flags))
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_ray_resource_flag_is_validated_and_documented(make_bundle, tmp_path, capsys):
    from megatron_corew.arguments import build_parser, parse_args
    from megatron_corew.rollout.config import RolloutConfig
    from megatron_corew.rollout.sglang.ray_fleet import parse_resource

    bundle = make_bundle()
    ray = ["--rollout-backend", "sglang", "--sglang-use-ray"]
    assert _flag_error(bundle, tmp_path, capsys, "--sglang-ray-resource", "rollout_node") == (
        "error: --sglang-ray-resource does not apply without --rollout-backend sglang --sglang-use-ray"
    )
    for value, message in (
        ("CPU", "'CPU' is a built-in Ray resource set by the engine's own CPU/GPU request; name a custom one"),
        ("a b", "'a b' is not a Ray resource name (expected NAME or NAME=AMOUNT, e.g. rollout_node)"),
        ("=1", "'=1' is not a Ray resource name (expected NAME or NAME=AMOUNT, e.g. rollout_node)"),
        ("rollout_node=x", "'rollout_node=x': the amount 'x' is not a number"),
        ("rollout_node=0", "'rollout_node=0': the amount must be > 0 and finite"),
        ("rollout_node=inf", "'rollout_node=inf': the amount must be > 0 and finite"),
    ):
        assert _flag_error(bundle, tmp_path, capsys, *ray, "--sglang-ray-resource", value) == (
            f"error: --sglang-ray-resource {message}"
        )
    args = parse_args(
        ["--hf-checkpoint", bundle["model"], "--train-data", bundle["train"], "--output-dir", str(tmp_path / "o")]
        + ray
        + ["--sglang-ray-resource", "node:10.0.0.5=0.5"]
    )
    assert RolloutConfig.from_args(args).ray_resource == "node:10.0.0.5=0.5"
    assert parse_resource("node:10.0.0.5=0.5") == ("node:10.0.0.5", 0.5)
    assert parse_resource("rollout_node") == ("rollout_node", 0.001)
    assert "--sglang-ray-resource" in build_parser().format_help()


@pytest.mark.e2e
def test_a_cluster_without_the_resource_fails_before_placing_anything(ray_root):
    """A real local Ray offering {"rollout_node": 1}: too little or a missing resource is one clear error at
    start-up (not a placement group waiting out its timeout), before any server is started."""
    ray = pytest.importorskip("ray")
    from megatron_corew.rollout.sglang.ray_fleet import RayRolloutManager, check_cluster_offers
    from megatron_corew.rollout.sglang.server import ServerSpec

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=1,
        resources={"rollout_node": 1},
        object_store_memory=100 << 20,
        include_dashboard=False,
        _temp_dir=ray_root,
        log_to_driver=False,
    )
    try:
        check_cluster_offers(ray, "rollout_node", 0.5, 2)  # enough in total
        with pytest.raises(ValueError, match=r"2 engine\(s\) need 2 of it but the cluster offers 1 "):
            check_cluster_offers(ray, "rollout_node", 1.0, 2)
        specs = [ServerSpec(model_path="/nonexistent", name=f"e{i}") for i in range(2)]
        mgr = RayRolloutManager(specs, resource="gpu_node", startup_timeout=5)
        t0 = time.monotonic()
        with pytest.raises(ValueError) as e:
            mgr.start()
        assert time.monotonic() - t0 < 5 and mgr.actors == []
        msg = str(e.value)
        assert msg.startswith("--sglang-ray-resource gpu_node: 2 engine(s) need 0.002 of it but no node of the cluster")
        assert "rollout_node" in msg and "ray start --resources '{\"gpu_node\": 1}'" in msg
    finally:
        ray.shutdown()


def test_sbatch_preview_shows_what_each_node_runs():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_"))}
    env.update(DRY_RUN="1", ALLOW_MISSING="1", METHOD="corewarding_2", DRY_RUN_NODES="h t1 r1 r2", TRAIN_NODES="2")
    sbatch = os.path.join(REPO, "examples", "slurm", "ray_rollout_fleet.sbatch")
    proc = subprocess.run(["bash", sbatch], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    node_sh = os.path.join(REPO, "examples", "slurm", "node.sh")
    assert f"-w h,t1 --overlap --kill-on-bad-exit=1 --export=ALL bash {node_sh} train" in out
    assert f"-w r1,r2 --overlap --export=ALL bash {node_sh} ray-worker" in out
    assert "[node 0] ray start --head --node-ip-address h --port 6379 --num-gpus 0" in out
    assert """[node 2] ray start --address h:6379 --num-gpus 8 --resources {"rollout_node": 1}""" in out
    for flag in ("--sglang-ray-resource rollout_node", "--sglang-host auto", "--sglang-num-engines 16"):
        assert flag in out
    # node.sh train under the Ray fleet adds this node's own address for the weight-sync group
    env.update(EXTRA_ARGS="--rollout-backend sglang --sglang-use-ray", NODE_IP="10.9.8.7", CPU_TINY="1")
    proc = subprocess.run(["bash", node_sh, "train"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("--sglang-use-ray --sglang-dist-master-addr 10.9.8.7"), proc.stdout


def test_fake_srun_runs_one_task_per_node_with_slurm_variables(tmp_path):
    from fake_slurm import install

    fake_bin = install(str(tmp_path / "bin"))
    env = dict(os.environ, SLURM_JOB_NODELIST="a,b,c", FAKE_SLURM_NODE_ENV=json.dumps({"c": {"NODE_IP": "1.2.3.4"}}))
    show = 'echo "$SLURMD_NODENAME $SLURM_NODEID $SLURM_PROCID $SLURM_NTASKS ${NODE_IP:-}"'
    proc = subprocess.run(
        [f"{fake_bin}/srun", "--nodes", "2", "-w", "b,c", "--overlap", "--export=ALL", "sh", "-c", show],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0 and sorted(proc.stdout.split("\n")[:2]) == ["b 1 0 2 ", "c 2 1 2 1.2.3.4"]
    bad = [f"{fake_bin}/srun", "--nodes", "2", "--kill-on-bad-exit=1", "sh", "-c"]
    t0 = time.monotonic()
    proc = subprocess.run(bad + ['[ "$SLURM_PROCID" = 0 ] && exit 3; sleep 60'], env=env, timeout=60)
    assert proc.returncode == 3 and time.monotonic() - t0 < 30  # the other task was stopped
    assert (
        subprocess.run([f"{fake_bin}/scontrol", "show", "hostnames", "a,b"], capture_output=True, text=True).stdout
        == "a\nb\n"
    )


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-m", "sglang", "-s", "-q"]))
