"""Measure what subnormal floats cost a model's training step on this CPU, in one process.

Adam keeps running averages; values that decay towards zero end up subnormal (below 1.2e-38 in
float32), and x86 cores compute on subnormals many times slower. This trains one of RecBole's
models (HDCCF trains through its own loader: not covered) on real data with torch's default (subnormals kept), counts the subnormal values in
parameters, gradients and optimizer state, then times the same state's next steps with
``torch.set_flush_denormal(True)`` and again without, alternating blocks, so the ratio comes from
one process on one machine.

    python benchmarks/measure_denormals.py --model=SimpleX --dataset=ml-1m --warmup=400
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def subnormal_share(tensors) -> tuple[int, int]:
    """(subnormal values, all values) over float32 tensors."""
    tiny = torch.finfo(torch.float32).tiny
    count = total = 0
    for t in tensors:
        if t is None or t.dtype != torch.float32:
            continue
        count += int(((t != 0) & (t.abs() < tiny)).sum())
        total += t.numel()
    return count, total


def main() -> None:
    from measure_common import add_model_arguments, build_from_arguments

    parser = argparse.ArgumentParser()
    add_model_arguments(parser, model="SimpleX", protocol="paper")
    parser.add_argument("--warmup", type=int, default=400, help="steps before timing")
    parser.add_argument("--block", type=int, default=40, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=3, help="blocks per setting")
    args = parser.parse_args()
    config, train_data, _, model, trainer = build_from_arguments(args)
    optimizer = trainer.optimizer

    def batches():
        while True:
            yield from train_data

    stream = batches()

    def step() -> float:
        interaction = next(stream).to(config["device"])
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        loss = sum(loss) if isinstance(loss, tuple) else loss
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    torch.set_flush_denormal(False)
    for _ in range(args.warmup):
        step()
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    params = list(model.parameters())
    for name, tensors in (
        ("parameters", params),
        ("gradients", [p.grad for p in params]),
        ("optimizer state", state),
    ):
        count, total = subnormal_share(tensors)
        print(f"after {args.warmup} steps: {count:,} of {total:,} values in {name} subnormal")
    times = {False: [], True: []}
    for _ in range(args.blocks):
        for flush in (True, False):
            torch.set_flush_denormal(flush)
            block = [step() for _ in range(args.block)]
            times[flush].append(statistics.median(block) * 1e3)
    keep, flush = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"{args.model} on {args.dataset}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s): ms per step (median of block medians) "
        f"subnormals kept {keep:.1f}, flushed {flush:.1f}, ratio {keep / flush:.2f}"
    )


if __name__ == "__main__":
    main()
