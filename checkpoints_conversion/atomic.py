"""Atomic publish of files, directories and ``latest`` pointers: the one implementation of the project.

Every output is written under a hidden temp name beside its final path (``.NAME.tmp-PID-RANDOM``, so two
writers never share one and a rename onto the final path stays on one filesystem) and appears only by a
rename once complete: a reader or a crash sees the previous version or the new one, never a mix.
Temps whose writer PID is gone are removed by the next writer of the same path.

It lives in ``checkpoints_conversion`` because that package imports nothing from ``megatron_corew``
while the library uses it; callers that inject faults pass ``before_replace``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import shutil
import tempfile
from typing import Callable, Iterator

__all__ = [
    "temp_path",
    "clean_stale_temps",
    "commit_file",
    "atomic_file",
    "write_text",
    "temp_dir",
    "commit_dir",
    "atomic_dir",
    "publish_pointer",
    "publish_link",
    "clean_stale_temps_in",
]


def _tmp_prefix(path: str) -> str:
    return f".{os.path.basename(os.path.normpath(path))}.tmp-"


def _old_prefix(path: str) -> str:
    return f".{os.path.basename(os.path.normpath(path))}.old-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(p: str) -> bool:
    try:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.remove(p)
    except OSError:
        return False
    return True


def clean_stale_temps(path: str) -> list[str]:
    """Remove temps beside ``path`` (files or directories) whose writer PID is gone; returns what was removed.

    A temp carrying this process's own PID counts as stale too: in a container a restarted writer often gets the
    PID its killed predecessor had. Moved-aside previous directories (``.NAME.old-PID-*``) are removed once
    ``path`` exists again."""
    path = os.path.abspath(os.fspath(path))
    d = os.path.dirname(path)
    prefixes = [_tmp_prefix(path)] + ([_old_prefix(path)] if os.path.exists(path) else [])
    removed = []
    for prefix in prefixes:
        for t in glob.glob(os.path.join(glob.escape(d), glob.escape(prefix) + "*")):
            m = re.match(r"(\d+)-", os.path.basename(t)[len(prefix) :])
            pid = int(m.group(1)) if m else None
            if pid is not None and pid != os.getpid() and _pid_alive(pid):
                continue
            if _remove(t):
                removed.append(t)
    return removed


def clean_stale_temps_in(directory: str) -> list[str]:
    """Remove every stale temp in ``directory`` (any final name) whose writer PID is gone: the leftovers of writers
    killed mid-write whose final path may never be written again (a killed export at a step the resumed run does
    not repeat, a killed converter run). Temps with this process's PID are kept: it may be writing them."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        m = re.match(r"\.(.+)\.tmp-(\d+)-", name)
        if m is None:
            continue
        pid = int(m.group(2))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if _remove(os.path.join(directory, name)):
            removed.append(os.path.join(directory, name))
    return removed


def temp_path(path: str) -> str:
    """An empty temp file beside ``path`` (its directory is created), after removing stale temps there."""
    path = os.path.abspath(os.fspath(path))
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(path)}{os.getpid()}-", dir=d)
    os.close(fd)
    return tmp


def commit_file(tmp: str, path: str, *, before_replace: Callable[[], None] | None = None) -> None:
    """fsync ``tmp``, give it ordinary permissions (mkstemp makes 0600), rename it onto ``path``, fsync the
    directory. ``before_replace`` runs just before the rename (crash-safety tests kill the process there)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())
    if before_replace is not None:
        before_replace()
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def atomic_file(path: str, *, before_replace: Callable[[], None] | None = None) -> Iterator[str]:
    """Yield a temp path beside ``path``; committed onto ``path`` on success, removed on an exception."""
    path = os.path.abspath(os.fspath(path))
    tmp = temp_path(path)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    commit_file(tmp, path, before_replace=before_replace)


def write_text(path: str, text: str, *, before_replace: Callable[[], None] | None = None) -> None:
    """``path`` holds either its previous content or all of ``text`` (UTF-8), never a part."""
    with atomic_file(path, before_replace=before_replace) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def temp_dir(final_dir: str) -> str:
    """A new empty directory beside ``final_dir`` (same naming and stale-PID rule as :func:`temp_path`)."""
    final_dir = os.path.abspath(os.fspath(final_dir))
    parent = os.path.dirname(final_dir)
    os.makedirs(parent, exist_ok=True)
    clean_stale_temps(final_dir)
    clean_stale_temps_in(parent)  # model-sized leftovers of killed writers of other paths here
    return tempfile.mkdtemp(prefix=f"{_tmp_prefix(final_dir)}{os.getpid()}-", dir=parent)


def commit_dir(tmp: str, final_dir: str) -> None:
    """Publish the finished directory ``tmp`` as ``final_dir``, replacing an old one, with renames only.

    The old directory is first renamed aside under a unique hidden name (a rename cannot replace a non-empty
    directory), then ``tmp`` is renamed in and the old copy deleted. ``tmp`` gets the mode an ordinary
    ``mkdir`` would give (mkdtemp makes it 0700)."""
    final_dir = os.path.abspath(os.fspath(final_dir))
    parent = os.path.dirname(final_dir)
    os.chmod(tmp, 0o777 & ~_umask())
    old = None
    if os.path.lexists(final_dir):
        old = os.path.join(parent, f"{_old_prefix(final_dir)}{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(final_dir, old)
    try:
        os.rename(tmp, final_dir)
    except BaseException:
        if old is not None:
            os.rename(old, final_dir)
        raise
    _fsync_dir(parent)
    if old is not None:
        _remove(old)


@contextlib.contextmanager
def atomic_dir(final_dir: str) -> Iterator[str]:
    """Yield a temp directory beside ``final_dir``; committed as ``final_dir`` on success, deleted on error."""
    tmp = temp_dir(final_dir)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_dir(tmp, final_dir)


def publish_pointer(root: str, name: str, pointer: str = "latest") -> None:
    """Make ``root/pointer`` hold ``name`` (one line): a unique fsynced temp renamed onto it, never torn."""
    write_text(os.path.join(root, pointer), name + "\n")


def publish_link(root: str, name: str, link: str = "latest") -> None:
    """Make ``root/link`` a relative symlink to ``name`` (a directory beside it), replacing a file or link by one
    rename: tools that open ``root/latest`` as a directory (``from_pretrained``) load the newest entry."""
    path = os.path.join(root, link)
    clean_stale_temps(path)
    tmp = os.path.join(root, f"{_tmp_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}")
    os.symlink(name, tmp)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
    _fsync_dir(root)
