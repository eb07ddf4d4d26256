"""A stand-in for SLURM's ``srun`` and ``scontrol`` on one host (test tooling: SLURM itself cannot run here).

``tests/test_multinode.py`` runs ``examples/slurm/ray_rollout_fleet.sbatch`` unchanged with these two on PATH, so
the sbatch file, ``examples/slurm/node.sh`` and ``examples/launch.sh`` run exactly as on a cluster; only the
placement of each step on a node is simulated. What is faked, and how:

* ``scontrol show hostnames LIST``: prints the comma-separated names of LIST, one a line (no bracket ranges);
* ``srun [--nodes N] [-w A,B] [...] CMD ...``: starts CMD once per node (``-w``'s, or the first N of
  ``SLURM_JOB_NODELIST``) in its own session, with SLURM's per-task variables (``SLURM_NODEID`` = the node's
  index in the job, ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURMD_NODENAME``) plus the node's entry of the JSON
  object ``FAKE_SLURM_NODE_ENV`` ({"node": {"VAR": "value"}}: what differs between real nodes, e.g. NODE_IP);
  it waits for every task and exits with the first non-zero status; ``--kill-on-bad-exit`` stops the others
  when one fails; SIGTERM/SIGINT are forwarded to every task's process group (SIGKILL after
  ``FAKE_SLURM_KILL_WAIT_S``, 60), as srun forwards them to its tasks.

    python tests/fake_slurm.py install BIN   # writes BIN/srun and BIN/scontrol
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

VALUE_OPTS = {"-N", "--nodes", "-n", "--ntasks", "--ntasks-per-node", "-w", "--nodelist", "--export", "-c"}


def install(bin_dir: str) -> str:
    os.makedirs(bin_dir, exist_ok=True)
    me = os.path.abspath(__file__)
    for name in ("srun", "scontrol"):
        path = os.path.join(bin_dir, name)
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\nexec "{sys.executable}" "{me}" {name} "$@"\n')
        os.chmod(path, 0o755)
    return bin_dir


def scontrol(argv: list[str]) -> int:
    if argv[:2] != ["show", "hostnames"] or len(argv) != 3:
        print(f"fake scontrol: only 'show hostnames LIST' is simulated, got {argv}", file=sys.stderr)
        return 2
    print("\n".join(n for n in argv[2].split(",") if n))
    return 0


def parse_srun(argv: list[str]) -> tuple[dict, list[str]]:
    opts: dict = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        if "=" in a and a.startswith("--"):
            key, val = a.split("=", 1)
            opts[key] = val
        elif a in VALUE_OPTS:
            opts[a] = argv[i + 1]
            i += 1
        else:
            opts[a] = True
        i += 1
    return opts, argv[i:]


def srun(argv: list[str]) -> int:
    opts, cmd = parse_srun(argv)
    if not cmd:
        print("fake srun: no command", file=sys.stderr)
        return 2
    job = [n for n in os.environ.get("SLURM_JOB_NODELIST", "localhost").split(",") if n]
    listed = opts.get("-w") or opts.get("--nodelist")
    nodes = listed.split(",") if listed else job[: int(opts.get("--nodes") or opts.get("-N") or 1)]
    per_node = json.loads(os.environ.get("FAKE_SLURM_NODE_ENV", "{}"))
    procs = []
    for k, node in enumerate(nodes):
        env = dict(os.environ)
        env.update(
            SLURM_NODEID=str(job.index(node) if node in job else k),
            SLURM_PROCID=str(k),
            SLURM_NTASKS=str(len(nodes)),
            SLURM_LOCALID="0",
            SLURMD_NODENAME=node,
        )
        env.update({str(a): str(b) for a, b in per_node.get(node, {}).items()})
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))

    def stop(sig=signal.SIGTERM) -> None:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + float(os.environ.get("FAKE_SLURM_KILL_WAIT_S", "60"))
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.2)
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()

    def on_signal(signum, _frame):
        stop()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    kill_on_bad = str(opts.get("--kill-on-bad-exit", "0")) in ("1", "True")
    while any(p.poll() is None for p in procs):
        if kill_on_bad and any(p.poll() not in (None, 0) for p in procs):
            stop()
            break
        time.sleep(0.2)
    return next((p.returncode for p in procs if p.returncode), 0)


if __name__ == "__main__":
    tool, rest = sys.argv[1], sys.argv[2:]
    if tool == "install":
        print(install(rest[0]))
    elif tool == "scontrol":
        sys.exit(scontrol(rest))
    elif tool == "srun":
        sys.exit(srun(rest))
    else:
        sys.exit(f"fake_slurm.py: unknown tool {tool}")
