"""How fast the machine is while a run trains: a fixed reference workload, timed.

A ``train_time_budget`` is wall-clock, so two runs under the same budget had the same compute only
if the machine ran at the same speed for both. Here it did not always: the same LightGCN settings
took 1.9x longer an epoch on one day than on another (``docs/results.md``, "Budgets are
wall-clock"). The benchmark times this workload in each run's process just before and just after
training, so every record shows the speed its budget bought, and a table whose budget-stopped runs
saw different speeds says so (``speed_note``).

The workload is what the models here spend their time on (an embedding gather, a scoring matmul,
a softmax loss and its backward), on one torch thread whatever the run's own thread count, so
the figure compares machines and moments, not settings. Its 64 MiB score matrix is also timed
with the process's allocator setting (``allocator.py``): with freed memory kept it took 0.040 s
against 0.065 s with glibc's defaults (2026-12-07), so compare it only between runs with the
same ``freed_memory_kept``.

:func:`cpu_description` names the processor and the instruction set torch dispatches to: the
last bits of a float depend on them (torch and MKL pick kernels by vendor and instruction set),
so a run replays exactly only on the same kind of processor. ENMF on ml-100k, seed 2020, trained
on 2026-11-29 differs from the same run on 2026-12-07 from its 4th decimal, while the code of
both days, run side by side on 2026-12-07, gave the same trajectory (``docs/results.md``).
"""

from __future__ import annotations

import statistics
from time import perf_counter

# A spread of budget-stopped runs' reference times above this ratio is reported in the table.
SPEED_SPREAD_WARNING = 1.5


def reference_seconds(repeats: int = 7) -> float:
    """Median seconds, over ``repeats`` timings, of one fixed step: 1024 rows gathered from a
    4096 x 64 table, scored against 4096 items, a log-softmax loss and its backward, on one
    torch thread (the caller's thread count is restored). About 0.05 s on an idle core here."""
    import torch

    if repeats < 1:
        raise ValueError(f"repeats={repeats}: give at least 1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(0)
        table = torch.randn(4096, 64, generator=generator, requires_grad=True)
        items = torch.randn(4096, 64, generator=generator)
        rows = torch.randint(0, 4096, (1024,), generator=generator)
        timings = []
        for _ in range(repeats):
            start = perf_counter()
            scores = table[rows] @ items.T
            torch.logsumexp(scores, dim=1).mean().backward()
            timings.append(perf_counter() - start)
            table.grad = None
        return statistics.median(timings)
    finally:
        torch.set_num_threads(threads)


def cpu_description() -> str:
    """The processor's name and torch's CPU capability, e.g. ``AMD EPYC (AVX2)``."""
    import platform

    import torch

    name = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next(
                (ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), None
            )
    except OSError:  # not Linux
        pass
    name = name or platform.processor() or platform.machine() or "unknown processor"
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


def run_speed(record: dict) -> float | None:
    """A run's reference time: the mean of the timings before and after its training (either
    alone if the other is missing; None for records written before they were kept)."""
    values = [
        record.get(key)
        for key in ("reference_seconds_before", "reference_seconds_after")
        if isinstance(record.get(key), (int, float))
    ]
    return sum(values) / len(values) if values else None


def speed_note(records: list[dict]) -> str | None:
    """A table note when the runs that a time budget stopped saw machine speeds more than
    ``SPEED_SPREAD_WARNING`` apart, ran on different thread counts or processors, or some kept
    freed memory (``allocator.py``) and some did not; None otherwise."""
    stopped = [r for r in records if r.get("status") == "ok" and r.get("time_budget_reached")]
    notes = []
    known = {(r["label"], r["seed"]): speed for r in stopped if (speed := run_speed(r))}
    if len(known) > 1:
        slowest = max(known, key=known.get)
        fastest = min(known, key=known.get)
        ratio = known[slowest] / known[fastest]
        if ratio > SPEED_SPREAD_WARNING:
            notes.append(
                f"the machine ran at different speeds for the runs the time budget stopped: the "
                f"reference workload took {known[fastest]:.3f} s ({fastest[0]} seed {fastest[1]}) "
                f"to {known[slowest]:.3f} s ({slowest[0]} seed {slowest[1]}), {ratio:.1f}x, so "
                "the same budget bought them unequal compute (reference_seconds_* in runs.csv)"
            )
    threads = sorted({r["torch_threads"] for r in stopped if r.get("torch_threads")})
    if len(threads) > 1:
        notes.append(
            f"the runs the time budget stopped used different torch thread counts {threads} "
            "(torch_threads in runs.csv; --threads sets it)"
        )
    cpus = sorted({r["cpu"] for r in stopped if r.get("cpu")})
    if len(cpus) > 1:
        notes.append(
            f"the runs the time budget stopped ran on different processors ({'; '.join(cpus)}): "
            "the same budget is not the same compute (cpu in runs.csv)"
        )
    kept = [bool(r.get("freed_memory_kept")) for r in stopped]
    if any(kept) and not all(kept):
        without = sorted({r["label"] for r in stopped if not r.get("freed_memory_kept")})
        notes.append(
            "some runs the time budget stopped had glibc's allocator defaults "
            f"({', '.join(without)}) and the others kept freed memory, which buys some models "
            "more epochs in the same budget (freed_memory_kept in runs.csv; docs/speed.md)"
        )
    return "; ".join(notes) if notes else None
