"""How a training or tool process starts and ends: CPU threads, the launcher's death, SIGINT/SIGTERM.

- Threads: on a shared CPU machine every process taking all cores oversubscribes them (several times slower);
  without ``OMP_NUM_THREADS`` each process gets ``cores // local processes``, said once.
- Launcher: ranks started by torchrun whose launcher is killed would keep running (and keep the run's lock);
  a watcher thread ends the rank when its parent process changes.
- Signals: the first SIGINT/SIGTERM lets the current step finish, the loop then stops (:class:`Interrupted`);
  a second one abandons the step at once. Checkpoints are atomic, so either way the last one is intact.
- Saves: inside :meth:`StopOnSignal.critical` (checkpoint writes, HF exports) no signal abandons anything: the
  save completes, then the run stops after the step. A SIGTERM sent to the whole process group, as SLURM sends on
  preemption, also reaches the helper processes of the save: forked writers inherit this handler, and the
  spawned results-queue manager runs :func:`ignore_stop_signals` (policy/checkpointing.py starts it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def set_cpu_threads(local_processes: int = 1, quiet: bool = False) -> int | None:
    """torch intra-op threads = cores // processes on this host, unless ``OMP_NUM_THREADS`` says otherwise;
    the count in use is logged either way (a step's time on CPU depends on it first)."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        if not quiet:
            print(f"CPU threads: {torch.get_num_threads()} per process (OMP_NUM_THREADS)", file=sys.stderr, flush=True)
        return None

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, cores // max(1, local_processes))
    torch.set_num_threads(n)
    if not quiet:
        print(
            f"CPU threads: {n} per process ({cores} cores, {local_processes} process(es) here; "
            "set OMP_NUM_THREADS to change)",
            file=sys.stderr,
            flush=True,
        )
    return n


def watch_launcher(on_orphan=None, interval: float = 1.0) -> threading.Thread | None:
    """Under torchrun, exit this rank (code 1) once its launcher is gone; ``on_orphan`` runs first (release locks).
    ``os._exit``: a rank blocked in a collective never returns to Python code that could raise."""
    if "TORCHELASTIC_RUN_ID" not in os.environ and "COREW_WATCH_PARENT" not in os.environ:
        return None
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                print(
                    f"error: rank {os.environ.get('RANK', '0')} (pid {os.getpid()}): its launcher (pid {parent}) "
                    "is gone; exiting",
                    file=sys.stderr,
                    flush=True,
                )
                if on_orphan is not None:
                    on_orphan()
                os._exit(1)

    t = threading.Thread(target=watch, name="corew-launcher-watch", daemon=True)
    t.start()
    return t


class Interrupted(Exception):
    """The run stopped on a signal; ``step`` is the last step that finished."""

    def __init__(self, signum: int, step: int, abandoned: bool):
        self.signum, self.step, self.abandoned = signum, step, abandoned
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopOnSignal:
    """SIGINT/SIGTERM -> finish the current step, then stop; a second signal abandons the step."""

    def __init__(self):
        self.signum: int | None = None
        self.step = 0  # the last finished step, kept by the loop
        self._old: dict = {}
        self._critical = False

    def install(self) -> StopOnSignal:
        for s in STOP_SIGNALS:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def uninstall(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    @contextlib.contextmanager
    def critical(self):
        """A save that must complete: signals are recorded, never acted on, until it is done."""
        installed = bool(self._old)
        if not installed:  # outside the loop: still finish the save, then stop
            self.install()
        self._critical = True
        try:
            yield
        finally:
            self._critical = False
            if not installed:
                self.uninstall()
                if self.signum is not None:  # the stop the save held back
                    raise Interrupted(self.signum, self.step, abandoned=False)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and not self._critical:
            raise Interrupted(signum, self.step, abandoned=True)
        if self.signum is not None:
            return  # a second signal during a save: the save completes, then the loop stops
        self.signum = signum
        if int(os.environ.get("RANK", "0")) == 0:
            print(
                f"\n{signal.Signals(signum).name}: finishing step {self.step + 1}, then stopping "
                "(send it again to abandon the step)",
                file=sys.stderr,
                flush=True,
            )

    def check(self, step: int, agreed: bool | None = None) -> None:
        """Called after each finished step; ``agreed``: the stop decision shared by every rank (rank 0's)."""
        self.step = step
        stop = self.signum is not None if agreed is None else agreed
        if stop:
            raise Interrupted(self.signum or signal.SIGTERM, step, abandoned=False)


def ignore_stop_signals() -> None:
    """Initializer of a helper process that must outlive a group-wide SIGINT/SIGTERM (the save it serves completes,
    then its parent stops); it still exits when its parent is gone."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="corew-parent-watch", daemon=True).start()
