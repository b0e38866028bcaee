"""What ``TrainGraph.contains`` costs per call: the dense bool table against the binary search.

``HDCCF.batch_logits`` asks it twice a step whether each of a [M, N] grid's (user, item) pairs
is a training interaction (the observed masks of eq. 25). Synthetic ids the size of ML-1M
(6,041 users, 3,417 items, ~994k training pairs); a grid of M rows against N pooled columns as
the in-batch sampler builds it. One torch thread, this thread's CPU time, the two lookups timed
round-robin (``bench_speed.median_times``); the two must agree on every pair:

    python benchmarks/measure_contains.py
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from recbole_hdccf.bench_speed import median_times, use_clock
from recbole_hdccf.sampler import TrainGraph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=6041)
    parser.add_argument("--items", type=int, default=3417)
    parser.add_argument("--pairs", type=int, default=994_000, help="training pairs drawn")
    parser.add_argument("--rows", type=int, default=256, help="M, the batch's rows")
    parser.add_argument("--neighbors", type=int, default=2, help="P: N = M * P columns")
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    use_clock("cpu")

    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, args.users * args.items, size=args.pairs))
    graph = TrainGraph(keys // args.items, keys % args.items, args.users, args.items)
    assert args.users * args.items <= graph.DENSE_LOOKUP_CELLS, "the dense path would not run"
    searched = TrainGraph(keys // args.items, keys % args.items, args.users, args.items)
    searched.DENSE_LOOKUP_CELLS = 0  # the binary search, as for catalogues too large for a table
    cols = args.rows * args.neighbors
    users = torch.randint(0, args.users, (args.rows, 1)).expand(args.rows, cols).contiguous()
    items = torch.randint(0, args.items, (1, cols)).expand(args.rows, cols).contiguous()
    if not torch.equal(graph.contains(users, items), searched.contains(users, items)):
        raise SystemExit("the dense table and the binary search disagree")

    times = median_times(
        {
            "dense table": lambda: graph.contains(users, items),
            "binary search": lambda: searched.contains(users, items),
        },
        args.calls,
        torch.device("cpu"),
    )
    print(
        f"contains on a [{args.rows}, {cols}] grid, {len(keys)} keys, 1 thread, CPU clock, "
        f"median of {args.calls}:"
    )
    for name, seconds in times.items():
        print(f"  {name}: {1000 * seconds:.2f} ms")


if __name__ == "__main__":
    main()
