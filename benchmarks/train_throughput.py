"""Training speed in ms/step: our trainer's step against a plain torchvision training loop.

Both sides train copies of the same freshly built model with the same optimizer settings
on the same batches (letterboxed by trainer.loader, held in memory so data loading is not
measured), in one process, in back-to-back blocks of --steps steps that alternate across
rounds (benchmarks.timing), so that load from other programs hits both alike. On a GPU every
step ends with a CUDA synchronise.

    python benchmarks/train_throughput.py --arch tiny --batch 4 --rounds 6 --steps 5
    python benchmarks/train_throughput.py --arch resnet50_fpn --batch 2 --canvas 800x1344

"ours" is trainer.train.prepare_model + step_on_batch, exactly what `python -m trainer`
runs per batch; "plain" is the loop of torchvision's detection reference scripts. The
figures go, with the hardware, into a results file (--out) that benchmarks/compare.py merges
with other machines' runs.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/train_throughput.py` puts benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import system, timing  # noqa: E402
from trainer.data import DatasetError, build_datasets  # noqa: E402
from trainer.distributed import DeviceError, parse_device  # noqa: E402
from trainer.loader import EpochBatchSampler, make_loader  # noqa: E402
from trainer.models import ARCHS, DEFAULT_CANVAS, build_model, default_meta  # noqa: E402
from trainer.train import Parser, make_optimizer, parse_canvas, prepare_model, step_on_batch  # noqa: E402

# Published training speeds of the same network and batch, other hardware (not measured here):
# for comparison with --arch resnet50_fpn --batch 2 --canvas 800x1344.
PUBLISHED = ("MindSpore Faster R-CNN R50-FPN, batch 2: 190 ms/step on an Ascend 910, 320 ms/step on a V100; "
             "detectron2 faster_rcnn_R_50_FPN_1x: about 210 ms/iteration on V100s (2 images per GPU)")


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


def parse_args(argv):
    p = Parser(prog="python benchmarks/train_throughput.py", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="tiny", choices=list(ARCHS), help="architecture (default tiny)")
    p.add_argument("--data", default="shapes", help="dataset spec for the batches (default shapes)")
    p.add_argument("--batch", "--batch-size", dest="batch_size", type=int, default=4, help="images per step (default 4)")
    p.add_argument("--canvas", type=parse_canvas, help="canvas HxW (default per arch)")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per side and round (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first (default 2)")
    p.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    p.add_argument("--out", type=Path, help="results file (default runs/bench/HOST-train-ARCH-TIME/results.json)")
    a = p.parse_args(argv)
    if min(a.batch_size, a.rounds, a.steps) <= 0 or a.warmup < 0:
        p.error("--batch, --rounds and --steps must be positive, --warmup non-negative")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
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
    threads = torch.get_num_threads()
    print(f"{a.arch} canvas {canvas[0]}x{canvas[1]}, batch {a.batch_size}, device {device}, "
          f"{threads} threads, torch {torch.__version__}")
    cursor = {"ours": 0, "plain": 0}

    def step(name: str) -> None:
        run[name](batches[cursor[name] % len(batches)])
        cursor[name] += 1

    calls = {name: (lambda n=name: step(n)) for name in run}
    done = timing.blocks(calls, [a.steps] * a.rounds, a.warmup, block_warmup=0, sync=lambda: sync(device),
                         desc="steps")
    training = []
    for name in run:
        st = timing.percentiles(timing.samples(done, name))
        rounds = [timing.percentiles([s["total"] for s in b.samples])["p50_ms"] for b in done if b.name == name]
        training.append(dict(name=name, arch=a.arch, batch=a.batch_size, canvas=list(canvas), device=str(device),
                             threads=threads, ms_per_step=st["p50_ms"], p90_ms=st["p90_ms"], cv=st["cv"], steps=st["n"],
                             img_s=a.batch_size / (st["p50_ms"] / 1000), round_ms=rounds))
        print(f"{name:>6s}: {st['p50_ms']:9.1f} ms/step median, {a.batch_size / st['p50_ms'] * 1000:7.2f} images/s "
              f"(cv {st['cv']:.1%}; per round: {', '.join(f'{v:.0f}' for v in rounds)} ms)")
        if timing.unstable(st):
            print(f"warning: {name}: step times are unstable (cv {st['cv']:.1%}): other jobs or clock changes",
                  file=sys.stderr)
    ours_ms, plain_ms = (t["ms_per_step"] for t in training)
    print(f"ratio ours/plain (images/s): {plain_ms / ours_ms:.3f}")
    if a.arch == "resnet50_fpn":
        print(f"published, for comparison (other hardware, not measured here): {PUBLISHED}")

    out = a.out or (Path("runs/bench") / f"{platform.node() or 'host'}-train-{a.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
                    / "results.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = dict(arch=a.arch, data=a.data, batch=a.batch_size, canvas=list(canvas), device=str(device),
                    threads=threads, rounds=a.rounds, steps=a.steps, warmup=a.warmup)
    out.write_text(json.dumps(dict(system=system.describe(), settings=settings, rows=[], training=training), indent=2))
    print(f"wrote {out} (merge machines with benchmarks/compare.py)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
