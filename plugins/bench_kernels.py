"""Time the plugin CUDA kernels against torchvision's GPU ops on the same inputs.

  python -m plugins.bench_kernels [--batch 1] [--rois 1000] [--boxes 4000] ...

Shapes default to a COCO-scale Faster R-CNN (800x1344 canvas, 256 channels, 1000 RoIs).
Prints p50/p90/p99 per call in milliseconds (CUDA events, after warm-up) and optionally
writes them as JSON. Needs a CUDA GPU and nvcc (the kernels are built for the GPU at hand).
"""

import argparse
import json
import sys
from collections import OrderedDict

import numpy as np
import torch
import torchvision
from tqdm import tqdm


def _time(fn, warmup: int, iters: int, name: str) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in tqdm(range(iters), desc=name, leave=False):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    return {"op": name, "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "iters": iters}


def _inputs(args, dtype):
    device = "cuda"
    g = torch.Generator(device=device).manual_seed(0)
    height, width = args.canvas
    features = [torch.randn(args.batch, args.channels, height // s, width // s, device=device, generator=g,
                            dtype=dtype) for s in (4, 8, 16, 32)]
    xy = torch.rand(args.batch, args.rois, 2, device=device, generator=g) * torch.tensor([width, height],
                                                                                         device=device)
    wh = torch.rand(args.batch, args.rois, 2, device=device, generator=g) * 400 + 4
    rois = torch.cat([xy, xy + wh], -1)
    xy = torch.rand(args.batch, args.boxes, 2, device=device, generator=g) * torch.tensor([width, height],
                                                                                          device=device)
    boxes = torch.cat([xy, xy + torch.rand(args.batch, args.boxes, 2, device=device, generator=g) * 200 + 4], -1)
    scores = torch.rand(args.batch, args.boxes, device=device, generator=g)
    classes = torch.randint(0, args.classes, (args.batch, args.boxes), device=device, generator=g,
                            dtype=torch.int32)
    return features, rois, boxes, scores, classes


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m plugins.bench_kernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--canvas", type=int, nargs=2, default=(800, 1344), metavar=("H", "W"))
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--rois", type=int, default=1000, help="RoIs per image for RoIAlign")
    parser.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32", help="feature map dtype")
    parser.add_argument("--boxes", type=int, default=4000, help="NMS candidates per image")
    parser.add_argument("--classes", type=int, default=90)
    parser.add_argument("--max-output", type=int, default=100)
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--json", help="also write the results to this file")
    return parser


def time_kernels(args) -> list[dict]:
    """Both plugins' kernels and torchvision's ops on the inputs `args` describe (make_parser's options);
    needs a CUDA GPU and the kernel library (cuda_kernels.load_library)."""
    from plugins import cuda_kernels

    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    features, rois, boxes, scores, classes = _inputs(args, dtype)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    named = OrderedDict((str(i), f) for i, f in enumerate(features))
    image_sizes = [tuple(args.canvas)] * args.batch

    def torchvision_nms():
        for b in range(args.batch):
            torchvision.ops.batched_nms(boxes[b], scores[b], classes[b], args.iou)[:args.max_output]

    results = [
        _time(lambda: cuda_kernels.multilevel_roi_align(rois, features, spatial_scales=scales), args.warmup,
              args.iters, "FrcnnMultilevelRoIAlign"),
        _time(lambda: pooler(named, list(rois.unbind(0)), image_sizes), args.warmup, args.iters,
              "torchvision MultiScaleRoIAlign"),
        _time(lambda: cuda_kernels.batched_nms(boxes, scores, classes, iou_threshold=args.iou,
                                               score_threshold=float("-inf"), max_output_boxes=args.max_output),
              args.warmup, args.iters, "FrcnnBatchedNMS"),
        _time(torchvision_nms, args.warmup, args.iters, "torchvision batched_nms (per image)"),
    ]
    return results


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA GPU: the kernel benchmark needs one", file=sys.stderr)
        return 1
    from plugins import build, cuda_kernels  # noqa: E402  (builds with nvcc)
    try:
        cuda_kernels.load_library()
    except build.BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    results = time_kernels(args)
    device = torch.cuda.get_device_name()
    print(f"{device}, batch {args.batch}, {args.dtype} features {args.channels}x{args.canvas}, "
          f"{args.rois} RoIs, {args.boxes} NMS boxes / {args.classes} classes")
    print(f"{'op':40s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s}")
    for r in results:
        print(f"{r['op']:40s} {r['p50_ms']:8.3f} {r['p90_ms']:8.3f} {r['p99_ms']:8.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "args": vars(args), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
