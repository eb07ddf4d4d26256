"""One run per directory: a lock file (pid, host, process start time) in ``--output-dir`` and ``--save``.

Two jobs (or a relaunch while the old ranks still run) writing one directory interleave ``metrics.jsonl`` rows
and race on checkpoints. The lock is created with ``O_EXCL``; a second run is refused with one line naming the
holder. A lock whose holder is gone (same host, pid dead or reused by another process) is stale and reclaimed;
a lock from another host cannot be checked and is refused (the message says how to remove it).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import time

LOCK_NAME = ".corew.lock"


class LockHeld(RuntimeError):
    """The directory belongs to another live run; the message is the one-line diagnosis."""


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to tell a live holder from a process that reused its pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _start_time(pid)
    return start is None or now is None or now == start


class RunLock:
    def __init__(self, directory: str, option: str):
        self.directory, self.option = directory, option
        self.path = os.path.join(directory, LOCK_NAME)
        self.held = False

    def _mine(self) -> dict:
        pid = os.getpid()
        return {"pid": pid, "host": socket.gethostname(), "start": _start_time(pid), "since": time.time()}

    def holder(self) -> dict | None:
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {}  # torn by a writer killed mid-write

    def acquire(self) -> str | None:
        """Take the lock; returns a note when a stale lock was reclaimed; raises :class:`LockHeld`."""
        os.makedirs(self.directory, exist_ok=True)
        note = None
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.holder()
                if info is None:
                    continue
                me = self._mine()
                if info.get("pid") == me["pid"] and info.get("host") == me["host"]:
                    self.held = True  # taken earlier by this process
                    return None
                torn = not info and time.time() - os.path.getmtime(self.path) > 10
                if not torn and (info.get("host") != me["host"] or _alive(int(info.get("pid", -1)), info.get("start"))):
                    raise LockHeld(self._held_message(info)) from None
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
                note = f"reclaimed the stale lock {self.path} (pid {info.get('pid')} on {info.get('host')} is gone)"
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._mine(), f)
            self.held = True
            atexit.register(self.release)
            return note
        raise LockHeld(f"{self.option} {self.directory}: cannot take the lock {self.path} (it keeps changing)")

    def _held_message(self, info: dict) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"])) if "since" in info else "?"
        return (
            f"{self.option} {self.directory} is in use by another run (pid {info.get('pid', '?')} on host "
            f"{info.get('host', '?')}, since {since}); stop it first, or delete {self.path} if that run is gone"
        )

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        info = self.holder()
        if info and info.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                os.remove(self.path)


_HELD: list[RunLock] = []


def lock_dirs(dirs: list[tuple[str, str]]) -> list[str]:
    """Lock each ``(option, directory)`` (distinct directories once); returns notes to print; raises LockHeld."""
    notes, seen = [], set()
    for option, d in dirs:
        key = os.path.realpath(d)
        if key in seen:
            continue
        seen.add(key)
        lock = RunLock(d, option)
        note = lock.acquire()
        _HELD.append(lock)
        if note:
            notes.append(note)
    return notes


def release_all() -> None:
    while _HELD:
        _HELD.pop().release()
