"""Measure what keeping freed memory in the process (``recbole_hdccf.allocator``) does to a model's
training steps: time, system time, page faults, peak memory and the loss.

Each model trains in fresh processes, alternately with glibc's defaults
(``RECBOLE_HDCCF_KEEP_FREED_MEMORY=0``) and with freed memory kept (the default), ``--rounds``
times each, in the order AB BA AB ..., so both settings see the same machine. A process builds
the model on real data (seed 2020), trains ``--warmup`` steps, then times ``--steps`` more (data
loading included), and prints one JSON line; the parent prints a table of medians over the
rounds (wall-clock ms per step, the median step of a process; and CPU ms per step, user + system
time over the timed steps, which a busy machine disturbs less). The loss after the timed steps
must be the same under both settings: the allocator changes where memory comes from, not what
is computed. Short runs exaggerate the gain for models whose blocks stay under 32 MiB (glibc's
threshold catches up after the first steps: ``docs/speed.md``).

    python benchmarks/measure_freed_memory.py --models="ENMF[dropout_prob=0.3],BPR" --rounds=2
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def child(args) -> None:
    """Train one model for warmup + steps batches in this process; print one JSON line."""
    import torch
    from measure_common import build_like_benchmark

    from recbole_hdccf.allocator import freed_memory_kept
    from recbole_hdccf.benchmark import parse_models

    torch.set_num_threads(args.threads)
    [(label, model_name, overrides)] = parse_models(args.model)
    config, train_data, _, model, trainer = build_like_benchmark(
        model_name, args.dataset, args.data_path, args.protocol, overrides
    )
    if hasattr(trainer, "neighbor_loader"):  # HDCCF trains through its own loader
        train_data = trainer.neighbor_loader(train_data)
        train_data.set_epoch(0)
    optimizer = trainer.optimizer
    model.train()

    def batches():
        while True:
            yield from train_data

    stream = batches()

    def step() -> tuple[float, float]:
        start = time.perf_counter()
        interaction = next(stream).to(config["device"])
        optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        loss = sum(loss) if isinstance(loss, tuple) else loss
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start, float(loss)

    for _ in range(args.warmup):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF)
    timed = [step() for _ in range(args.steps)]
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "label": label,
                "kept": freed_memory_kept(),
                "step_ms": statistics.median(t for t, _ in timed) * 1e3,
                "cpu_ms": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
                / args.steps
                * 1e3,
                "user_s": after.ru_utime - before.ru_utime,
                "sys_s": after.ru_stime - before.ru_stime,
                "faults_per_step": (after.ru_minflt - before.ru_minflt) / args.steps,
                "peak_mb": after.ru_maxrss / 1024,
                "last_loss": timed[-1][1],
            }
        )
    )


def run_child(args, model: str, keep: bool) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", f"--model={model}"]
    for key in ("dataset", "data_path", "protocol", "warmup", "steps", "threads"):
        command.append(f"--{key}={getattr(args, key)}")
    from recbole_hdccf.allocator import ENV_VAR

    env = {**os.environ, ENV_VAR: "1" if keep else "0", "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"{model} (kept={keep}) failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def _median(runs: dict, keep: bool, key: str) -> float:
    return statistics.median(r[key] for r in runs[keep])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="ENMF[dropout_prob=0.3],BPR")
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data_path", default="../shared/datasets")
    parser.add_argument("--protocol", default="paper")
    parser.add_argument("--warmup", type=int, default=5, help="steps before timing")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--rounds", type=int, default=2, help="processes per setting")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from recbole_hdccf.benchmark import parse_models

    print(
        f"{args.dataset}, {args.protocol} protocol, {args.threads} thread(s), {args.warmup} warmup "
        f"+ {args.steps} timed steps a process, {args.rounds} process(es) a setting; medians"
    )
    print(
        "| model | ms/step default | ms/step kept | speed-up | CPU ms/step default / kept "
        "| sys s default / kept | faults/step default / kept | peak MB default / kept | same loss |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, _, _ in parse_models(args.models):
        runs = {False: [], True: []}
        for round_ in range(args.rounds):  # ABBA: neither setting always goes first
            for keep in (False, True) if round_ % 2 == 0 else (True, False):
                runs[keep].append(run_child(args, label, keep))
        med = functools.partial(_median, runs)
        losses = {r["last_loss"] for rs in runs.values() for r in rs}
        print(
            f"| {label} | {med(False, 'step_ms'):.1f} | {med(True, 'step_ms'):.1f} "
            f"| {med(False, 'step_ms') / med(True, 'step_ms'):.2f}x "
            f"| {med(False, 'cpu_ms'):.1f} / {med(True, 'cpu_ms'):.1f} "
            f"| {med(False, 'sys_s'):.2f} / {med(True, 'sys_s'):.2f} "
            f"| {med(False, 'faults_per_step'):.0f} / {med(True, 'faults_per_step'):.0f} "
            f"| {med(False, 'peak_mb'):.0f} / {med(True, 'peak_mb'):.0f} "
            f"| {'yes' if len(losses) == 1 else 'NO: ' + ', '.join(map(str, sorted(losses)))} |",
            flush=True,
        )
        if not all(r["kept"] for r in runs[True]) or any(r["kept"] for r in runs[False]):
            print("  (the setting did not take effect as asked: not glibc?)")


if __name__ == "__main__":
    main()
