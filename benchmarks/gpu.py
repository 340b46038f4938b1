"""The GPU check: everything this project can verify on a CUDA GPU without TensorRT, in one run.

    python -m benchmarks.gpu --out gpu.json          # on a machine with an NVIDIA GPU and nvcc (~5 min on an H100)

1. builds the plugins' CUDA kernels for this GPU (python -m plugins.build --kernels --arch native);
2. runs their tests against torchvision (tests/test_plugins_cuda.py);
3. times both kernels against torchvision's GPU ops at R50-FPN sizes: RoIAlign of 1000 RoIs over 4 levels
   at 256 channels (800x1344 canvas); NMS over 4000 RPN candidates (5 levels as classes, IoU 0.7, keep 1000)
   and over 1000x90 box candidates (90 classes, IoU 0.5, keep 100);
4. times torch CUDA baselines for R50-FPN at 800x1344, random weights: torchvision's eager model, our deploy
   graph in fp32 and fp16 (batch 1, ms per image), and a training step at batch 2 (ms/step, our trainer's
   step_on_batch, the figure the MindSpore seed tables give).

Each step's outcome goes to --out as JSON (with the GPU, driver and versions); a failed step is recorded and
the others still run. Exit status 1 when a step failed. --allow-cpu runs step 4 on the CPU at a small size
(tiny model), to check the script itself where there is no GPU; its figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ms(fn, device, warmup: int, iters: int) -> dict:
    """Median and spread of fn() in ms, synchronised on CUDA, after `warmup` untimed calls."""
    import statistics

    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return {"p50_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "iters": iters}


def build_kernels() -> dict:
    from plugins.build import build_kernel_library

    t0 = time.perf_counter()
    library = build_kernel_library("native", force=True)
    return {"library": str(library), "seconds": round(time.perf_counter() - t0, 1)}


def kernel_tests() -> dict:
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_plugins_cuda.py"],
                       capture_output=True, text=True, cwd=ROOT)
    summary = (r.stdout.strip().splitlines() or [""])[-1]
    if r.returncode != 0:
        raise RuntimeError(f"kernel tests failed: {summary}\n{r.stdout[-3000:]}")
    return {"summary": summary}


KERNEL_CASES = {  # name -> plugins.bench_kernels options
    "roi_align 1000 RoIs x 4 levels, 256 ch, fp32": ["--rois", "1000", "--dtype", "fp32"],
    "roi_align 1000 RoIs x 4 levels, 256 ch, fp16": ["--rois", "1000", "--dtype", "fp16"],
    "nms 4000 RPN candidates (5 classes, IoU 0.7, keep 1000)": ["--boxes", "4000", "--classes", "5", "--iou", "0.7",
                                                               "--max-output", "1000"],
    "nms 1000x90 box candidates (90 classes, IoU 0.5, keep 100)": ["--boxes", "90000", "--classes", "90", "--iou",
                                                                  "0.5", "--max-output", "100"],
}


def kernel_timings(iters: int) -> dict:
    from plugins import bench_kernels, cuda_kernels

    cuda_kernels.load_library()
    out = {}
    for case, options in KERNEL_CASES.items():
        args = bench_kernels.make_parser().parse_args([*options, "--iters", str(iters)])
        results = {r["op"]: r for r in bench_kernels.time_kernels(args)}
        ours, theirs = (("FrcnnMultilevelRoIAlign", "torchvision MultiScaleRoIAlign") if case.startswith("roi")
                        else ("FrcnnBatchedNMS", "torchvision batched_nms (per image)"))
        out[case] = {"ours_p50_ms": results[ours]["p50_ms"], "torchvision_p50_ms": results[theirs]["p50_ms"],
                     "speedup": results[theirs]["p50_ms"] / results[ours]["p50_ms"]}
    return out


def torch_baselines(device, arch: str, iters: int, train_steps: int) -> dict:
    """Eager torchvision, deploy graph fp32/fp16 (batch 1) and a training step (batch 2), random weights."""
    import numpy as np
    import torch
    from torchvision.models._meta import _COCO_CATEGORIES

    from exporters.deploy import DeployFasterRCNN
    from trainer.data import build_datasets
    from trainer.loader import EpochBatchSampler, make_loader
    from trainer.models import build_model, default_meta
    from trainer.train import make_optimizer, prepare_model, step_on_batch

    torch.manual_seed(0)
    meta = default_meta(arch, list(_COCO_CATEGORIES), arch_kwargs={"frozen_bn": arch != "tiny"})
    h, w = meta.canvas
    model = build_model(meta).eval().to(device)
    canvas = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, h, w, 3), dtype=np.uint8)).to(device)
    image = canvas.permute(0, 3, 1, 2).float().div(255)[0]
    out = {"arch": arch, "canvas": [h, w]}
    with torch.inference_mode():
        out["torchvision eager fp32 (batch 1)"] = _ms(lambda: model([image]), device, 3, iters)
        for half in (False, True):
            deploy = DeployFasterRCNN(model, meta, half=half).eval().to(device)
            name = f"deploy graph {'fp16' if half else 'fp32'} (batch 1)"
            out[name] = _ms(lambda: deploy(canvas), device, 3, iters)
    # a training step as `python -m trainer` runs it, on shapes images letterboxed onto the canvas
    train_set, _ = build_datasets("shapes:train=8,val=2")
    batches = list(make_loader(train_set, (h, w), EpochBatchSampler(8, 2), train=True))
    train = prepare_model(build_model(meta), device)
    optimizer = make_optimizer(train, dict(optimizer="sgd", lr=0.01, weight_decay=1e-4))
    cursor = iter(range(10**9))
    out["training step (batch 2)"] = _ms(
        lambda: step_on_batch(train, batches[next(cursor) % len(batches)], optimizer, None, 0.01, device),
        device, 2, train_steps)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu.json"), help="results JSON (default gpu.json)")
    p.add_argument("--iters", type=int, default=50, help="timed calls per model figure (default 50)")
    p.add_argument("--kernel-iters", type=int, default=200, help="timed calls per kernel figure (default 200)")
    p.add_argument("--train-steps", type=int, default=20, help="timed training steps (default 20)")
    p.add_argument("--allow-cpu", action="store_true", help="without a GPU: run the torch step on the CPU with the "
                   "tiny model, to check this script (figures meaningless)")
    a = p.parse_args(argv)
    if min(a.iters, a.kernel_iters, a.train_steps) < 1:
        p.error("--iters, --kernel-iters and --train-steps must be at least 1")
    import torch

    from benchmarks import system

    gpu = torch.cuda.is_available()
    if not gpu and not a.allow_cpu:
        print("error: no CUDA GPU visible to torch: this check needs one (--allow-cpu checks the script only)",
              file=sys.stderr)
        return 2
    device = torch.device("cuda" if gpu else "cpu")
    result = {"machine": system.describe(), "device": torch.cuda.get_device_name() if gpu else "cpu",
              "torch_cuda": torch.version.cuda, "steps": {}}
    steps = [("build kernels", build_kernels), ("kernel tests", kernel_tests),
             ("kernel timings", lambda: kernel_timings(a.kernel_iters))] if gpu else []
    arch = "resnet50_fpn" if gpu else "tiny"
    steps.append(("torch baselines", lambda: torch_baselines(device, arch, a.iters, a.train_steps)))
    failed = False
    for name, step in steps:
        print(f"{name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            outcome = {"status": "ok", **step()}
        except Exception as e:  # record and go on: one failed step must not hide the others' figures
            failed = True
            outcome = {"status": "failed", "error": "".join(traceback.format_exception_only(e)).strip()}
            print(f"  FAILED: {outcome['error'].splitlines()[0]}", flush=True)
        outcome["seconds"] = round(time.perf_counter() - t0, 1)
        result["steps"][name] = outcome
        a.out.write_text(json.dumps(result, indent=2))  # after every step: a timeout keeps what was done
    for name, outcome in result["steps"].items():
        print(f"{name}: {outcome['status']} ({outcome['seconds']} s)")
        for key, value in outcome.items():
            if isinstance(value, dict) and "p50_ms" in value:
                print(f"  {key:45s} p50 {value['p50_ms']:9.2f} ms")
            elif isinstance(value, dict) and "speedup" in value:
                print(f"  {key:60s} ours {value['ours_p50_ms']:.3f} ms, torchvision "
                      f"{value['torchvision_p50_ms']:.3f} ms ({value['speedup']:.2f}x)")
    print(f"wrote {a.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
