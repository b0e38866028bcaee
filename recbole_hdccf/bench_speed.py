"""Speed benchmark: HDCCF's training step, ml-1m epoch, full-sort inference and peak memory.

    python -m recbole_hdccf.bench_speed                 # fused and reference paths, CPU
    python -m recbole_hdccf.bench_speed --impl fused    # the fused path only
    python -m recbole_hdccf.bench_speed --bf16          # also the opt-in bfloat16 GEMMs
    python -m recbole_hdccf.bench_speed --threads 1 --clock cpu   # on a shared, busy machine
    python -m recbole_hdccf.bench_speed --quick         # smoke test (about a minute)

What it measures, in one process on one machine (results: docs/speed.md):

1. The matmul rate of this machine: float32 GEMMs of the issue's shape ``[4096 x 64] x [64 x
   4096]`` and of the fused kernel's block shape ``[chunk * d x d] x [d x N]``.
2. ms per training step (median) on ml-100k at one batch size: ``calculate_loss`` + backward +
   Adam step, for HDCCF (fused and/or reference grid) and RecBole's BPR and SimpleX.
   HDCCF's achieved rate counts only the bilinear term: ``2 M N d^2`` per grid forward, x3 for
   forward + backward, two grids (``N = M P``): the nominal count, before deduplication.
3. ml-1m under the paper's protocol: seconds per epoch extrapolated from ``--steps`` timed steps
   (data loading included), or timed for real with ``--full-epoch``, against the FLOP-bound epoch
   time (the epoch's counted FLOPs at the measured matmul rate).
4. Full-sort inference: ``full_sort_predict`` over every ml-1m user, in blocks of users.
5. Peak memory: ``ru_maxrss`` of the process (CPU) or ``max_memory_allocated`` (CUDA).

RecBole writes ``./log`` and friends into the working directory and its ``Config`` parses every
``--key=value`` of ``sys.argv``: the benchmark runs in a temporary directory with a bare argv.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

DATA_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets")
PAPER_PROTOCOL = {
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "item_inter_num_interval": "[5,inf)",
    "eval_args": {
        "split": {"LS": "valid_and_test"},
        "order": "TO",
        "group_by": "user",
        "mode": "uni99",
    },
}
BASELINES = ("BPR", "SimpleX")


# --------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_hdccf.bench_speed", description=__doc__
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--batch-size", type=int, default=256, help="M, rows per batch")
    parser.add_argument("--neighbors", type=int, default=2, help="P, neighbours per row")
    parser.add_argument("--embedding-size", type=int, default=64, help="d")
    parser.add_argument("--impl", choices=["fused", "reference", "both"], default="both")
    parser.add_argument("--bf16", action="store_true", help="also time bfloat16 GEMMs (opt-in)")
    parser.add_argument("--full-epoch", action="store_true", help="time one real ml-1m epoch")
    parser.add_argument("--eval-users", type=int, default=256, help="users per full-sort call")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--data-path", default=os.path.normpath(DATA_PATH), help="holds ml-1m/")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="wall", help="cpu: thread CPU time (--threads 1)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny run for a smoke test")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock cpu counts one thread's CPU time: use it with --threads 1 on cpu")
    if args.quick:
        args.steps = min(args.steps, 3)
        args.eval_users = min(args.eval_users, 64)
    return args


# --------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
_clock = {"now": time.perf_counter}


def use_clock(name: str) -> None:
    """Time every later ``timed`` call on clock ``name`` (a key of ``CLOCKS``)."""
    _clock["now"] = CLOCKS[name]


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes (device work included), on the chosen clock: wall time,
    or this thread's CPU time (``--clock cpu``: immune to other tenants of a shared machine, and
    meaningful only with one torch thread)."""
    now = _clock["now"]
    synchronize(device)
    start = now()
    fn()
    synchronize(device)
    return now() - start


def median_times(fns: dict[str, Callable[[], object]], n: int, device, warmup: int = 2):
    """Median seconds per call of each ``fn``, calling them round-robin (so slow drifts of a
    shared machine hit every candidate alike)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            samples[name].append(timed(fn, device))
    return {name: statistics.median(values) for name, values in samples.items()}


def peak_memory_gb(device: torch.device) -> float:
    """Peak resident memory of this process (CPU) or peak allocated device memory (CUDA)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# --------------------------------------------------------------------------------- FLOPs
def bilinear_flops(rows: int, cols: int, dim: int) -> float:
    """Forward + backward FLOPs of one grid's bilinear term: ``3 x 2 A B d^2``."""
    return 3 * 2.0 * rows * cols * dim * dim


def step_flops(batch_size: int, neighbors: int, dim: int) -> float:
    """HDCCF's counted FLOPs per step: two grids of ``M x M P`` (nominal, before dedup)."""
    return 2 * bilinear_flops(batch_size, batch_size * neighbors, dim)


def executed_step_flops(batch, dim: int) -> float:
    """GEMM FLOPs the fused path runs on ``batch``: distinct ids only, 3 GEMMs of ``2 A B d^2``
    per grid, or 4 where ``m`` is too large to keep and the backward pass recomputes it."""
    from recbole_hdccf.fused_grid import KEEP_M_BYTES
    from recbole_hdccf.sampler import NEIGHBOR_ITEMS, NEIGHBOR_USERS

    def distinct(key):
        return int(batch[key].unique().numel())

    def grid(rows, cols):
        gemms = 3 if rows * cols * dim * 4 <= KEEP_M_BYTES else 4
        return gemms * 2.0 * rows * cols * dim * dim

    users, items = distinct("user_id"), distinct("item_id")
    return grid(users, distinct(NEIGHBOR_ITEMS)) + grid(distinct(NEIGHBOR_USERS), items)


# --------------------------------------------------------------------------------- RecBole runs
@dataclass
class Built:
    """A model with its config, trainer, train loader and a few batches on the device."""

    name: str
    config: object
    model: torch.nn.Module
    trainer: object
    loader: object
    batches: list = field(default_factory=list)


def recbole_config(model: str, dataset: str, args, **extra) -> dict:
    config = {
        "train_batch_size": args.batch_size,
        "embedding_size": args.embedding_size,
        "use_gpu": args.device == "cuda",
        "gpu_id": "0" if args.device == "cuda" else "",
        "show_progress": False,
        "seed": 2020,
        "reproducibility": False,
        "state": "WARNING",
    }
    if model == "HDCCF":
        config["neighbor_num"] = args.neighbors
    config.update(extra)
    return config


def build(model_name: str, dataset: str, config_dict: dict, n_batches: int) -> Built:
    """Config, data, model, trainer and the first ``n_batches`` training batches."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config = Config(model=model_name, dataset=dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train_data, _, _ = data_preparation(config, data)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    loader = trainer.neighbor_loader(train_data) if model_name == "HDCCF" else train_data
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(0)
    built = Built(model_name, config, model, trainer, loader)
    for batch in loader:
        built.batches.append(batch.to(config["device"]))
        if len(built.batches) >= n_batches:
            break
    return built


def train_step(built: Built, batch) -> None:
    """One step as RecBole's ``Trainer._train_epoch`` takes it (no AMP, no clipping)."""
    built.model.train()
    built.trainer.optimizer.zero_grad()
    losses = built.model.calculate_loss(batch)
    loss = sum(losses) if isinstance(losses, tuple) else losses
    loss.backward()
    built.trainer.optimizer.step()


# --------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class Variant:
    """One way of running HDCCF's grids: ``impl`` for :func:`grid_impl`, GEMM dtype."""

    label: str
    impl: str
    gemm_dtype: torch.dtype | None = None

    def context(self):
        from recbole_hdccf.similarity import grid_impl

        return grid_impl(self.impl, gemm_dtype=self.gemm_dtype)


def variants(args) -> list[Variant]:
    chosen = {"fused": ["fused"], "reference": ["reference"], "both": ["fused", "reference"]}
    out = [Variant(name, "auto" if name == "fused" else name) for name in chosen[args.impl]]
    if args.bf16:
        out.append(Variant("fused-bf16", "auto", torch.bfloat16))
    return out


def cycling_step(built: Built, variant: Variant | None = None) -> Callable[[], None]:
    """A step function that walks through ``built.batches`` (HDCCF: with ``variant``'s grid)."""
    state = {"k": 0}

    def step():
        batch = built.batches[state["k"] % len(built.batches)]
        state["k"] += 1
        with variant.context() if variant else contextlib.nullcontext():
            train_step(built, batch)

    return step


def gemm_candidates(args, device) -> dict[str, tuple[Callable[[], object], float]]:
    """float32 GEMMs to time next to the steps: ``name -> (call, FLOPs)``: the issue's
    ``[S x d] x [d x S]`` and the fused kernel's block ``[chunk * d x d] x [d x N]``."""
    from recbole_hdccf.fused_grid import auto_chunk

    d, m = args.embedding_size, args.batch_size
    n = m * args.neighbors
    size = 1024 if args.quick else 4096
    chunk = auto_chunk(m, n, d, device)
    shapes = {
        f"matmul [{size}x{d}]x[{d}x{size}]": (size, d, size),
        f"matmul [{chunk * d}x{d}]x[{d}x{n}] (fused block)": (chunk * d, d, n),
    }
    out = {}
    for name, (rows, inner, cols) in shapes.items():
        a = torch.randn(rows, inner, device=device)
        b = torch.randn(inner, cols, device=device)
        c = torch.empty(rows, cols, device=device)
        out[name] = ((lambda a=a, b=b, c=c: torch.mm(a, b, out=c)), 2.0 * rows * inner * cols)
    return out


def section_steps(args, device, report) -> float:
    """ms per step on ml-100k, with the GEMM rates timed in the same round-robin; returns the
    matmul rate (GFLOP/s) that the ratios use: the higher of the two GEMM shapes."""
    d, m, p = args.embedding_size, args.batch_size, args.neighbors
    n_batches = max(4, min(args.steps, 16))
    hdccf = build("HDCCF", "ml-100k", recbole_config("HDCCF", "ml-100k", args), n_batches)
    fns = {f"HDCCF {v.label}": cycling_step(hdccf, v) for v in variants(args)}
    for name in BASELINES:
        built = build(name, "ml-100k", recbole_config(name, "ml-100k", args), n_batches)
        fns[name] = cycling_step(built)
    gemms = gemm_candidates(args, device)
    fns.update({name: call for name, (call, _) in gemms.items()})
    times = median_times(fns, args.steps, device)
    rates = {name: flops / times[name] / 1e9 for name, (_, flops) in gemms.items()}
    for name, value in rates.items():
        report.line(f"{name} fp32: {value:.1f} GFLOP/s (median, timed between the steps)")
    rate = max(rates.values())
    report.values["matmul_rate"] = rate
    report.line(f"matmul rate used below: {rate:.1f} GFLOP/s (the higher of the two)")
    flops = step_flops(m, p, d)
    executed = statistics.mean(executed_step_flops(b, d) for b in hdccf.batches)
    report.line(
        f"ml-100k, M={m}, P={p}, d={d}: ms per training step (calculate_loss + backward + Adam), "
        f"median of {args.steps}"
    )
    report.line(
        f"  counted bilinear FLOPs per step: {flops / 1e9:.2f} GFLOP (2 grids x 3 x 2 M (M P) d^2);"
        f" the fused path executes {executed / 1e9:.2f} GFLOP (distinct ids only)"
    )
    for name, seconds in times.items():
        if name.startswith("matmul"):
            continue
        extra = ""
        if name.startswith("HDCCF"):
            label = name.split()[1]
            achieved = flops / seconds / 1e9
            extra = f"  {achieved:6.1f} GFLOP/s counted = {achieved / rate:5.1%} of the matmul rate"
            if label != "reference":
                extra += f" ({executed / seconds / 1e9 / rate:.0%} on executed FLOPs)"
            report.values[f"step_{label}"] = seconds
            report.values[f"step_ratio_{label}"] = achieved / rate
        report.line(f"  {name:<16} {seconds * 1e3:8.1f} ms{extra}")
    return rate


def epoch_steps_time(built: Built, variants_: list[Variant], steps: int, device) -> dict:
    """Median seconds per step of each variant over ``steps`` batches of a fresh epoch: the
    batch's loading time (neighbour sampling included) plus the variant's step on that batch,
    the variants taking turns on each batch."""
    built.loader.set_epoch(1)
    iterator = iter(built.loader)
    samples = {v.label: [] for v in variants_}
    holder = {}
    for k in range(steps + 1):
        load = timed(lambda: holder.update(batch=next(iterator).to(device)), device)
        for variant in variants_:
            with variant.context():
                seconds = timed(lambda: train_step(built, holder["batch"]), device)
            if k >= 1:  # the first batch warms up
                samples[variant.label].append(load + seconds)
    return {label: statistics.median(values) for label, values in samples.items()}


def section_ml1m(args, device, rate, report) -> Built:
    config = recbole_config("HDCCF", "ml-1m", args, data_path=args.data_path, **PAPER_PROTOCOL)
    built = build("HDCCF", "ml-1m", config, 1)
    n_steps = len(built.loader)
    flop_bound = n_steps * step_flops(args.batch_size, args.neighbors, args.embedding_size)
    flop_bound /= rate * 1e9
    report.line(
        f"ml-1m, paper protocol: {n_steps} steps per epoch; FLOP-bound epoch {flop_bound:.1f} s "
        f"(counted FLOPs at {rate:.1f} GFLOP/s)"
    )
    report.values["flop_bound_epoch"] = flop_bound
    per_step = epoch_steps_time(built, variants(args), args.steps, device)
    epochs = {label: seconds * n_steps for label, seconds in per_step.items()}
    how = {label: f"extrapolated: median of {args.steps} steps x {n_steps}" for label in epochs}
    report.values["peak_training"] = peak_memory_gb(device)
    if args.full_epoch:
        fused = Variant("fused", "auto")
        with fused.context():
            epochs["fused"] = timed(lambda: built.trainer._train_epoch(built.loader, 2), device)
        how["fused"] = "measured: one full epoch through RecBole's Trainer._train_epoch"
    for label, seconds in epochs.items():
        report.values[f"epoch_{label}"] = seconds
        report.line(
            f"  HDCCF {label:<10} epoch {seconds:8.1f} s ({how[label]}); "
            f"{seconds / flop_bound:.2f}x the FLOP-bound time"
        )
    return built


def section_full_sort(args, device, built: Built, report) -> None:
    from recbole.data.interaction import Interaction

    model = built.model
    model.eval()
    n_users = model.n_users - 1  # id 0 is RecBole's padding
    if args.quick:
        n_users = min(n_users, 4 * args.eval_users)
    users = torch.arange(1, n_users + 1, device=device)
    report.line(f"full-sort inference on ml-1m ({args.eval_users} users per full_sort_predict):")
    for variant in variants(args):

        def run(variant=variant):
            with torch.no_grad(), variant.context():
                for block in users.split(args.eval_users):
                    model.full_sort_predict(Interaction({model.USER_ID: block}))

        seconds = timed(run, device)
        report.values[f"full_sort_{variant.label}"] = seconds
        report.line(
            f"  {variant.label:<10} {n_users} users x {model.n_items} items in {seconds:6.1f} s "
            f"= {n_users / seconds:,.0f} users/s"
        )


# --------------------------------------------------------------------------------- report
@dataclass
class Report:
    values: dict = field(default_factory=dict)

    def line(self, text: str) -> None:
        print(text, flush=True)

    def summary(self, args) -> str:
        """One line: per variant the step, its share of the matmul rate, the ml-1m epoch against
        the FLOP-bound time and the full-sort time; then the peak memory."""
        v, nan = self.values, float("nan")
        parts = []
        for variant in variants(args):
            label = variant.label
            epoch = v.get(f"epoch_{label}", nan)
            parts.append(
                f"{label}: step {v.get(f'step_{label}', nan) * 1e3:.0f} ms "
                f"({v.get(f'step_ratio_{label}', nan):.0%} of {v.get('matmul_rate', nan):.0f} "
                f"GFLOP/s), ml-1m epoch {epoch:.0f} s "
                f"({epoch / v.get('flop_bound_epoch', nan):.1f}x FLOP-bound), "
                f"full-sort {v.get(f'full_sort_{label}', nan):.1f} s"
            )
        peak = v.get("peak_training", nan)
        return (
            "SUMMARY " + "; ".join(parts) + f"; peak memory {peak:.2f} GB (through ml-1m training)"
        )


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {torch.get_num_threads()} torch threads"


def run(args) -> Report:
    import recbole_hdccf  # noqa: F401  (registers HDCCF with RecBole)

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_clock(args.clock)
    report = Report()
    report.line(f"bench_speed: {describe_machine(device)}; torch {torch.__version__}")
    report.line(f"  options: {vars(args)}")
    load = os.getloadavg()[0]
    report.line(
        f"  load average at start: {load:.1f} on {os.cpu_count()} CPUs; clock: {args.clock}"
    )
    if device.type == "cpu" and args.clock == "wall" and load > 0.5 * (os.cpu_count() or 1):
        report.line(
            "  note: the machine is busy: wall-clock timings will be noisy (try --clock cpu)"
        )
    rate = section_steps(args, device, report)
    built = section_ml1m(args, device, rate, report)
    section_full_sort(args, device, built, report)
    report.values["peak"] = peak_memory_gb(device)
    report.line(
        f"peak memory of the process ({'CUDA max allocated' if device.type == 'cuda' else 'ru_maxrss'}): "
        f"{report.values['peak_training']:.2f} GB through the ml-1m training measurements (every "
        f"variant above, ml-100k models included), {report.values['peak']:.2f} GB at the end"
    )
    report.line(report.summary(args))
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    old_argv, old_cwd = sys.argv, os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as workdir:
        sys.argv = [old_argv[0]]  # RecBole's Config parses every --key=value of sys.argv
        os.chdir(workdir)  # RecBole writes ./log, ./log_tensorboard, ./saved
        try:
            run(args)
        finally:
            os.chdir(old_cwd)
            sys.argv = old_argv
    return 0


if __name__ == "__main__":
    sys.exit(main())
