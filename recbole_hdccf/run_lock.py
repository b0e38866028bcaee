"""One process at a time in a run folder: an advisory lock on ``<run folder>/lock``.

A benchmark trains, resumes or extends a run only while it holds the run's lock exclusively, and
``retest`` reads a run's checkpoint while it holds it shared. Two benchmark processes that share
an output folder (``--seed_list`` split over processes, or two queue scripts that name the same
run) can then never train the same run at once: the second one says which process holds it and
goes on with its other runs.

The lock is ``flock`` on an open file, so the system releases it when its holder exits however it
exits (a crash or ``kill -9`` leaves no stale lock), and a child process handed the descriptor
(``subprocess.run(..., pass_fds=...)``) keeps it held for as long as it lives, even if the
process that took it is killed first. The holder writes its pid, host, start time and command
into the file, for the message the next process prints. ``flock`` is POSIX; where Python has no
``fcntl`` (Windows) runs are not locked, and :func:`run_lock` says so once.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = "lock"
_warned = False


class RunInUse(RuntimeError):
    """Another process holds the run folder's lock."""


def holder_of(run_dir: Path) -> str:
    """Who holds ``run_dir``'s lock, from the note a trainer leaves in it: "pid 123 on host
    since 2026-12-07 12:00:00 (command)"; the training child of that process if the noted pid
    has exited on this host; "another process (a reader ...)" where there is no readable note."""
    try:
        info = json.loads((Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        who = f"pid {info['pid']} on {info['host']} since {since} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (a reader, such as retest, leaves no note)"
    if info["host"] == socket.gethostname() and not _alive(info["pid"]):
        return f"a training process that {who} started and that outlived it"
    return who


def in_use(run_dir: Path) -> str | None:
    """Who holds ``run_dir``'s lock (see :func:`holder_of`), or None if it is free or the folder
    does not exist. A look only: the answer may be out of date as soon as it is given."""
    run_dir = Path(run_dir)
    if fcntl is None or not (run_dir / LOCK_NAME).is_file():
        return None
    fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    try:
        if _try_lock(fd, shared=False):
            return None
        return holder_of(run_dir)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _try_lock(fd: int, shared: bool) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextmanager
def run_lock(run_dir: Path, shared: bool = False, wait: float = 0.0):
    """Hold ``run_dir``'s lock (created with the folder if need be) for the ``with`` block;
    yields the lock file's descriptor (to hand to a child process), or None where runs are not
    locked. ``shared``: readers (``retest``) may hold it together, a trainer may not. Raises
    :class:`RunInUse`, naming the holder, if the lock is still held after ``wait`` seconds."""
    global _warned
    if fcntl is None:
        if not _warned:
            warnings.warn(
                "this platform has no fcntl: run folders are not locked, so do not let two "
                "processes train the same run",
                stacklevel=3,
            )
            _warned = True
        yield None
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    noted = False
    try:
        deadline = time.monotonic() + wait
        while not _try_lock(fd, shared):
            if time.monotonic() >= deadline:
                raise RunInUse(
                    f"{run_dir.name} is in use by {holder_of(run_dir)}; "
                    f"wait for it to finish, or stop that process"
                )
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        if not shared:  # readers hold it together, so they leave no note
            note = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": time.time(),
                "command": " ".join(sys.argv)[:300],
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(note).encode("utf-8"), 0)
            noted = True
        yield fd
    finally:
        if noted:  # a note stays only while a trainer holds the lock (or died holding it)
            os.ftruncate(fd, 0)
        os.close(fd)  # releases the lock, unless a child still has the descriptor open
