"""Measure LightGCN's training step with the plugin's CSR propagation and with RecBole's own.

RecBole propagates with ``torch.sparse.mm`` on an uncoalesced COO adjacency, whose backward
transposes and coalesces the adjacency for every layer of every batch; the plugin's
``graph_propagation: csr`` (``compat.py``, ``graph_kernel.py``) keeps a CSR copy. This builds the
model once per way from the same seed, times ``--steps`` training batches (forward, backward,
optimizer step) per round, alternating (ABBA), reports medians per batch, and how far the two
ways' first propagations and first-batch losses are apart.

    python benchmarks/measure_graph_propagation.py --dataset=ml-1m --set learning_rate=0.01
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time


def main() -> None:
    from measure_common import add_model_arguments, build_from_arguments

    parser = argparse.ArgumentParser()
    add_model_arguments(parser, model="LightGCN", protocol="paper")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the tables': 1)")
    parser.add_argument("--steps", type=int, default=10, help="training batches per round")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    ways, batches = {}, None
    for way in ("csr", "recbole"):
        _, train_data, _, model, trainer = build_from_arguments(args, graph_propagation=way)
        if batches is None:  # the same batches for both ways
            batches = list(itertools.islice(iter(train_data), args.steps))
        ways[way] = (model, trainer.optimizer)

    with torch.no_grad():
        first = {way: ways[way][0].forward()[0] for way in ways}
    gap = (first["csr"] - first["recbole"]).abs().max().item()

    def step(model, optimizer, batch) -> float:
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        return loss.item()

    losses = {way: step(*ways[way], batches[0]) for way in ways}
    times = {way: [] for way in ways}
    order = list(ways)
    for _ in range(args.rounds):
        for way in order + order[::-1]:
            start = time.perf_counter()
            for batch in batches:
                step(*ways[way], batch)
            times[way].append((time.perf_counter() - start) / len(batches))
    csr, recbole = (statistics.median(times[way]) for way in ways)
    print(
        f"{args.model} on {args.dataset}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {len(batches)} batches x {len(times['csr'])}: "
        f"per batch csr {csr:.3f} s, recbole {recbole:.3f} s, ratio {recbole / csr:.2f}; "
        f"first propagation max |difference| {gap:.2e}; first-batch loss csr "
        f"{losses['csr']:.6f}, recbole {losses['recbole']:.6f}"
    )


if __name__ == "__main__":
    main()
