"""The reference workload that shows how fast the machine ran, and the table note it feeds."""

from __future__ import annotations

import itertools

import pytest
import torch

from recbole_hdccf import benchmark, machine_speed


def test_reference_seconds_is_the_median_timing_on_one_thread(monkeypatch):
    threads_seen = []
    real_matmul = torch.Tensor.__matmul__

    def spy(self, other):
        threads_seen.append(torch.get_num_threads())
        return real_matmul(self, other)

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    # A clock that advances by 1, 5, 2, 9, 3 s over the five timed steps: the median is 3.
    ticks = itertools.accumulate([0, 1, 0, 5, 0, 2, 0, 9, 0, 3])
    monkeypatch.setattr(machine_speed, "perf_counter", lambda: float(next(ticks)))
    torch.set_num_threads(2)
    try:
        assert machine_speed.reference_seconds(repeats=5) == 3.0
        assert torch.get_num_threads() == 2  # the caller's count is restored
    finally:
        torch.set_num_threads(1)
    assert threads_seen == [1] * 5


def test_reference_seconds_times_real_work():
    seconds = machine_speed.reference_seconds(repeats=3)
    assert 0 < seconds < 10
    with pytest.raises(ValueError, match="at least 1"):
        machine_speed.reference_seconds(repeats=0)


def _run(label, seed, before, after, budget=True, threads=1):
    return {
        "label": label,
        "model": benchmark.model_of(label),
        "seed": seed,
        "status": "ok",
        "test": {"hit@10": 0.5, "ndcg@10": 0.3, "ndcg@50": 0.4},
        "time_budget_reached": budget,
        "torch_threads": threads,
        "reference_seconds_before": before,
        "reference_seconds_after": after,
    }


def test_run_speed_averages_what_the_record_has():
    assert machine_speed.run_speed(_run("BPR", 1, 0.1, 0.3)) == pytest.approx(0.2)
    assert machine_speed.run_speed(_run("BPR", 1, 0.1, None)) == pytest.approx(0.1)
    assert machine_speed.run_speed({"label": "BPR", "seed": 1}) is None  # an older record


def test_speed_note_names_the_spread_of_budget_stopped_runs():
    even = [_run("HDCCF", 1, 0.10, 0.12), _run("BPR", 1, 0.12, 0.13)]
    assert machine_speed.speed_note(even) is None

    uneven = even + [_run("SimpleX", 1, 0.30, 0.36)]
    note = machine_speed.speed_note(uneven)
    assert "0.110 s (HDCCF seed 1)" in note and "0.330 s (SimpleX seed 1)" in note
    assert "3.0x" in note

    # A run that early stopping ended had its compute whatever the speed: not counted.
    not_budgeted = even + [_run("SimpleX", 1, 0.30, 0.36, budget=False)]
    assert machine_speed.speed_note(not_budgeted) is None

    threads = machine_speed.speed_note(even + [_run("NeuMF", 1, 0.11, 0.11, threads=2)])
    assert "thread counts [1, 2]" in threads

    cpus = [{**r, "cpu": "AMD EPYC (AVX2)"} for r in even]
    assert machine_speed.speed_note(cpus) is None
    other = machine_speed.speed_note(cpus[:1] + [{**even[1], "cpu": "Intel Xeon (AVX512)"}])
    assert "different processors (AMD EPYC (AVX2); Intel Xeon (AVX512))" in other
    assert machine_speed.speed_note(cpus[:1] + even[1:]) is None  # an older record: unknown

    # Freed memory kept by all or by none: nothing to say; by some: the others are named.
    kept = [{**r, "freed_memory_kept": True} for r in even]
    assert machine_speed.speed_note(kept) is None
    mixed = machine_speed.speed_note(kept[:1] + even[1:])  # BPR's record predates the field
    assert "allocator defaults (BPR)" in mixed and "kept freed memory" in mixed
    assert machine_speed.speed_note([kept[0], {**even[1], "time_budget_reached": False}]) is None


def test_table_carries_the_speed_note():
    records = [_run("HDCCF", 1, 0.1, 0.1), _run("BPR", 1, 0.2, 0.2)]
    table = benchmark.markdown_table(records, ["HDCCF", "BPR"])
    assert "- Budget: the machine ran at different speeds" in table and "2.0x" in table
    records[1].update(reference_seconds_before=0.1, reference_seconds_after=0.1)
    assert "Budget:" not in benchmark.markdown_table(records, ["HDCCF", "BPR"])


def test_cpu_description_names_the_processor_and_torchs_instruction_set():
    description = machine_speed.cpu_description()
    name, capability = description.rsplit(" (", 1)
    assert name and capability == f"{torch.backends.cpu.get_cpu_capability()})"
