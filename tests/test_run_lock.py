"""The run-folder lock: one trainer at a time or readers together, the holder named in the
message, released when its holder dies however it dies, and held by a training child that
outlives the process that took it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from recbole_hdccf.run_lock import LOCK_NAME, RunInUse, in_use, run_lock

pytestmark = pytest.mark.skipif(os.name != "posix", reason="flock is POSIX")

# Takes the lock of the folder argv[1], says so, then (with argv[2] == "child") hands it to a
# child that sleeps, prints the child's pid, and waits to be killed.
HOLDER = """
import subprocess, sys, time
from recbole_hdccf.run_lock import run_lock
with run_lock(sys.argv[1]) as fd:
    if sys.argv[2] == "child":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 pass_fds=(fd,))
        print(child.pid, flush=True)
    else:
        print("held", flush=True)
    time.sleep(600)
"""


def _start_holder(run_dir, subprocess_env, mode="self"):
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir), mode],
        env=subprocess_env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    first_line = process.stdout.readline().strip()  # printed once the lock is held
    assert first_line, "the holder never took the lock"
    return process, first_line


def test_a_held_run_is_refused_naming_its_holder_and_freed_when_the_holder_is_killed(
    tmp_path, subprocess_env
):
    run_dir = tmp_path / "BPR-seed1"
    holder, _ = _start_holder(run_dir, subprocess_env)
    try:
        with pytest.raises(RunInUse) as refused, run_lock(run_dir):
            pass
        message = str(refused.value)
        assert f"BPR-seed1 is in use by pid {holder.pid}" in message
        assert f"(-c {run_dir} self)" in message  # the holder's command line
        assert "wait for it to finish, or stop that process" in message
        assert in_use(run_dir).startswith(f"pid {holder.pid} ")
        with pytest.raises(RunInUse), run_lock(run_dir, shared=True):  # readers wait too
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up runs: the system frees the lock
        holder.wait()
    assert in_use(run_dir) is None
    with run_lock(run_dir) as fd:
        assert fd is not None
        assert str(os.getpid()) in (run_dir / LOCK_NAME).read_text()  # the note names us
    assert (run_dir / LOCK_NAME).read_text() == ""  # and goes with the lock


def test_readers_share_and_exclude_a_trainer(tmp_path):
    run_dir = tmp_path / "run"
    # Two descriptors of one file lock against each other, in one process too.
    with run_lock(run_dir, shared=True), run_lock(run_dir, shared=True):
        with pytest.raises(RunInUse, match="a reader, such as retest, leaves no note"):
            with run_lock(run_dir):
                pass
        assert "reader" in in_use(run_dir)
    with run_lock(run_dir):
        with pytest.raises(RunInUse), run_lock(run_dir, shared=True):
            pass
    assert in_use(run_dir) is None
    assert in_use(tmp_path / "never-made") is None
    assert not (tmp_path / "never-made").exists()  # a look creates nothing


def test_waiting_takes_a_lock_freed_within_the_wait_and_not_one_held_past_it(tmp_path):
    run_dir = tmp_path / "run"
    taken, release = threading.Event(), threading.Event()

    def hold():
        with run_lock(run_dir):
            taken.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(10)
    start = time.monotonic()
    with pytest.raises(RunInUse), run_lock(run_dir, wait=0.5):
        pass
    assert time.monotonic() - start >= 0.5
    threading.Timer(0.3, release.set).start()
    start = time.monotonic()
    with run_lock(run_dir, wait=10):
        waited = time.monotonic() - start
    thread.join()
    assert 0.2 <= waited < 5


def test_a_child_handed_the_lock_keeps_it_after_its_parent_is_killed(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    parent, child_pid = _start_holder(run_dir, subprocess_env, mode="child")
    child_pid = int(child_pid)
    try:
        os.kill(parent.pid, signal.SIGKILL)  # the benchmark killed, its training child not
        parent.wait()
        holder = in_use(run_dir)
        assert holder is not None and f"pid {parent.pid}" in holder and "outlived" in holder
        with pytest.raises(RunInUse, match="outlived it"), run_lock(run_dir):
            pass
    finally:
        os.kill(child_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while in_use(run_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # the child is reaped by init; its descriptor closes as it exits
    assert in_use(run_dir) is None
