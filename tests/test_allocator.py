"""``recbole_hdccf.allocator``: freed memory stays in the process (glibc), switched by the
environment, with a clear error for a value it does not know."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recbole_hdccf import allocator

glibc_only = pytest.mark.skipif(allocator._glibc_mallopt() is None, reason="not glibc")

# Allocates, writes and frees a 64 MiB tensor ten times, and counts the page faults of the last
# nine: with glibc's defaults each one is a fresh mmap, faulted in page by page.
FAULTS = """
import json, resource, torch
import recbole_hdccf
from recbole_hdccf.allocator import freed_memory_kept
torch.ones(16 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    torch.ones(16 << 20)
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"kept": freed_memory_kept(), "faults": after - before}))
"""


def _faults(setting: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != allocator.ENV_VAR}
    if setting is not None:
        env[allocator.ENV_VAR] = setting
    done = subprocess.run(
        [sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@glibc_only
def test_import_keeps_freed_memory_so_a_repeated_allocation_does_not_fault_again():
    default, off = _faults(None), _faults("0")
    assert default["kept"] is True and off["kept"] is False
    pages = 9 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert off["faults"] > pages // 2  # every tensor faulted in again
    assert default["faults"] < pages // 3  # reused from the heap (one refill seen: 1 of 9)


def test_environment_switch_and_its_error(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    for value in ("0", "false", "No", " off "):
        monkeypatch.setenv(allocator.ENV_VAR, value)
        assert allocator.apply_from_environment() is False
    assert calls == []
    for value in ("1", "true", "YES", ""):
        monkeypatch.setenv(allocator.ENV_VAR, value)
        assert allocator.apply_from_environment() is True
    monkeypatch.delenv(allocator.ENV_VAR)
    assert allocator.apply_from_environment() is True and len(calls) == 5
    monkeypatch.setenv(allocator.ENV_VAR, "maybe")
    with pytest.raises(ValueError, match=r"RECBOLE_HDCCF_KEEP_FREED_MEMORY='maybe': use 1 .* or 0"):
        allocator.apply_from_environment()


def test_without_glibc_nothing_changes(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: None)
    monkeypatch.setattr(allocator, "_kept", False)
    assert allocator.keep_freed_memory() is False and allocator.freed_memory_kept() is False


def test_a_refused_threshold_is_reported_as_not_kept(monkeypatch):
    # glibc returns 0 for a value it rejects (older versions cap the mmap threshold)
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: lambda param, value: 0)
    monkeypatch.setattr(allocator, "_kept", True)
    assert allocator.keep_freed_memory() is False and allocator.freed_memory_kept() is False
