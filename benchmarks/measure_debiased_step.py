"""What the debiased loss (eq. 14-17) adds to an HDCCF training step, and why.

One process, the two losses' steps timed in alternating blocks (medians of per-step times), on
ml-1m batches as the sampler draws them, one torch thread; then ``torch.exp`` on a [256, 512]
grid with a share of its entries ``-inf``: the debiased loss masks the observed positives out
of the pool (eq. 25), 27.7% of an ML-1M row's in-batch negatives (``docs/measurements.md``);
the biased loss's pool only the row's own columns (2 of 512):

    python benchmarks/measure_debiased_step.py --data_path=../shared/datasets
    python benchmarks/measure_debiased_step.py --data_path=../shared/datasets --modulation
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

import torch


def median_step_ms(step, steps: int) -> float:
    for _ in range(3):  # warm-up
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def exp_us(share_masked: float, repeats: int = 200) -> float:
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn(256, 512, generator=gen)
    grid[torch.rand(256, 512, generator=gen) < share_masked] = float("-inf")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.exp(grid)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_path", default="../shared/datasets")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--modulation", action="store_true", help="default: unmodulated")
    parser.add_argument("--blocks", type=int, default=5, help="alternating blocks per loss")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per block")
    args = parser.parse_args()
    data_path = os.path.abspath(args.data_path)
    sys.argv = sys.argv[:1]  # RecBole's Config parses argv
    torch.set_num_threads(1)
    os.chdir(tempfile.mkdtemp())  # RecBole writes ./log
    import recbole_hdccf  # noqa: F401
    from recbole_hdccf import bench_speed

    sizes = SimpleNamespace(batch_size=256, embedding_size=64, device="cpu", neighbors=2)
    settings = dict(data_path=data_path, modulation=args.modulation, ui_negatives="items")
    built = {}
    for debias in (False, True):
        config = bench_speed.recbole_config("HDCCF", args.dataset, sizes, **settings, debias=debias)
        built[debias] = bench_speed.build("HDCCF", args.dataset, config, 30)
    medians = {False: [], True: []}
    for _ in range(args.blocks):
        for debias, b in built.items():
            medians[debias].append(median_step_ms(bench_speed.cycling_step(b), args.steps))
    for debias, values in medians.items():
        blocks = ", ".join(f"{v:.1f}" for v in values)
        name = "debiased" if debias else "biased"
        print(f"{name:9s} step: median {statistics.median(values):.1f} ms (blocks: {blocks})")
    ratio = statistics.median(medians[True]) / statistics.median(medians[False])
    print(f"debiased / biased: {ratio:.2f}x")
    for share in (0.0, 0.004, 0.1, 0.277):
        print(f"torch.exp on [256, 512], {share:.1%} -inf: {exp_us(share):.0f} us")


if __name__ == "__main__":
    main()
