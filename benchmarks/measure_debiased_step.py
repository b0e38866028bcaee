"""What the debiased loss (eq. 14-17) adds to an HDCCF training step, and why.

One process, the two losses' steps timed round-robin (``bench_speed.median_times``), on ml-1m
batches as the sampler draws them, one torch thread; then ``torch.exp`` on a [256, 512]
grid with a share of its entries ``-inf``: the debiased loss masks the observed positives out
of the pool (eq. 25), 27.7% of an ML-1M row's in-batch negatives (``docs/measurements.md``);
the biased loss's pool only the row's own columns (2 of 512):

    python benchmarks/measure_debiased_step.py --data_path=../shared/datasets
    python benchmarks/measure_debiased_step.py --data_path=../shared/datasets --modulation
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from types import SimpleNamespace

import torch


def exp_grid(share_masked: float):
    """``torch.exp`` of a [256, 512] grid with ``share_masked`` of its entries ``-inf``."""
    gen = torch.Generator().manual_seed(0)
    grid = torch.randn(256, 512, generator=gen)
    grid[torch.rand(256, 512, generator=gen) < share_masked] = float("-inf")
    return lambda: torch.exp(grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_path", default="../shared/datasets")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--modulation", action="store_true", help="default: unmodulated")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per loss")
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
    cpu = torch.device("cpu")
    steps = {
        "biased": bench_speed.cycling_step(built[False]),
        "debiased": bench_speed.cycling_step(built[True]),
    }
    step_s = bench_speed.median_times(steps, args.steps, cpu, warmup=3)
    for name, seconds in step_s.items():
        print(f"{name:9s} step: median {seconds * 1e3:.1f} ms")
    print(f"debiased / biased: {step_s['debiased'] / step_s['biased']:.2f}x")
    shares = (0.0, 0.004, 0.1, 0.277)
    exp_s = bench_speed.median_times({share: exp_grid(share) for share in shares}, 200, cpu)
    for share, seconds in exp_s.items():
        print(f"torch.exp on [256, 512], {share:.1%} -inf: {seconds * 1e6:.0f} us")


if __name__ == "__main__":
    main()
