"""Training throughput: our trainer's step against a plain torchvision training loop.

Both sides train copies of the same freshly built model with the same optimizer settings
on the same batches (letterboxed by trainer.loader, held in memory so data loading is not
measured), in one process, alternating in rounds (ours first in even rounds, plain first
in odd ones) so that load from other programs hits both alike.

    python -m benchmarks.train_throughput --arch tiny --batch-size 4 --rounds 6 --steps 5

"ours" is trainer.train.prepare_model + step_on_batch, exactly what `python -m trainer`
runs per batch; "plain" is the loop of torchvision's detection reference scripts.
"""
from __future__ import annotations

import copy
import functools
import statistics
import sys

import torch

from benchmarks import timing
from trainer.data import DatasetError, build_datasets
from trainer.distributed import DeviceError, parse_device
from trainer.loader import EpochBatchSampler, make_loader
from trainer.models import ARCHS, DEFAULT_CANVAS, build_model, default_meta
from trainer.train import Parser, make_optimizer, parse_canvas, prepare_model, step_on_batch


def plain_step(model, batch, optimizer, device) -> float:
    """torchvision references/detection train_one_epoch, minus logging."""
    images = [img.to(device).float() / 255 for img in batch["images"]]
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
    loss_dict = model(images, targets)
    losses = sum(loss for loss in loss_dict.values())
    optimizer.zero_grad()
    losses.backward()
    optimizer.step()
    return losses.item()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    p = Parser(prog="python -m benchmarks.train_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="tiny", choices=list(ARCHS), help="architecture (default tiny)")
    p.add_argument("--data", default="shapes", help="dataset spec for the batches (default shapes)")
    p.add_argument("--batch-size", type=int, default=4, help="images per step (default 4)")
    p.add_argument("--canvas", type=parse_canvas, help="canvas HxW (default per arch)")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per side and round (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first (default 2)")
    p.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    a = p.parse_args(argv)
    if min(a.batch_size, a.rounds, a.steps) <= 0 or a.warmup < 0:
        p.error("--batch-size, --rounds and --steps must be positive, --warmup non-negative")
    try:
        device = parse_device(a.device)
        train_set, _ = build_datasets(a.data)
    except (DatasetError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    canvas = a.canvas or DEFAULT_CANVAS[a.arch]
    meta = default_meta(a.arch, ["__background__", *train_set.class_names], canvas)
    n_batches = 8
    sampler = EpochBatchSampler(min(len(train_set), n_batches * a.batch_size), a.batch_size)
    batches = list(make_loader(train_set, canvas, sampler, train=True))
    config = dict(optimizer="sgd", lr=0.01, weight_decay=1e-4)

    torch.manual_seed(0)
    base = build_model(meta)
    ours = prepare_model(copy.deepcopy(base), device)
    plain = copy.deepcopy(base).to(device).train()
    ours_opt, plain_opt = make_optimizer(ours, config), make_optimizer(plain, config)
    run = {
        "ours": lambda b: step_on_batch(ours, b, ours_opt, None, config["lr"], device),
        "plain": lambda b: plain_step(plain, b, plain_opt, device),
    }

    print(f"{a.arch} canvas {canvas[0]}x{canvas[1]}, batch {a.batch_size}, device {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    cursor = {"ours": 0, "plain": 0}

    def steps(name: str, n: int) -> None:
        for _ in range(n):
            run[name](batches[cursor[name] % n_batches])
            cursor[name] += 1

    for name in run:
        steps(name, a.warmup)
    # rounds alternate the two sides, so drift of the machine hits both alike
    times = timing.interleaved({name: functools.partial(steps, name, a.steps) for name in run}, 0, a.rounds,
                               sync=lambda: sync(device), desc="rounds")
    rates = {name: [a.steps * a.batch_size / t for t in ts] for name, ts in times.items()}
    for name, values in rates.items():
        print(f"{name:>6s}: {statistics.median(values):7.2f} images/s median "
              f"(rounds: {', '.join(f'{v:.2f}' for v in values)})")
    ratios = [o / p for o, p in zip(rates["ours"], rates["plain"])]
    ratio = statistics.median(rates["ours"]) / statistics.median(rates["plain"])
    print(f"ratio ours/plain: {ratio:.3f} (per round: {', '.join(f'{v:.3f}' for v in ratios)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
