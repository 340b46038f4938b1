"""bf16 speed: torchvision eager (fp32, and under bf16 autocast) against OpenVINO IRs compiled in
f32 and in bf16, side by side in one process.

    flock /tmp/frcnn-bench.lock python -m benchmarks.bf16_speed --threads 2

Without --checkpoint, a randomly initialised R50-FPN with COCO's classes (800x1344 canvas) is
saved to --work-dir, exported to ONNX and converted once to an IR recording f32 and one
recording bf16 (exporters.openvino --precision); later runs reuse those files. Reports the
end-to-end latency (decoded image in memory -> boxes in original pixels), batch 1, all four
alternating in rounds after warm-up (benchmarks.timing), p50/p90 and the p50 ratio to
torchvision's fp32 eager model; with the CPU's bf16 / AMX flags and the precision and kernels
each OpenVINO model was compiled to. On a CPU without bf16 the bf16 IR runs in f32, and says so.
Speed only: accuracy is the mAP gate's (exporters.openvino --precision bf16, benchmarks/run.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks import system, timing
from benchmarks.run import add_speed_args, check_speed_args, exported_onnx, newer_than


def prepare(work: Path, checkpoint: str | None) -> tuple[Path, dict[str, Path]]:
    """(checkpoint, {precision: IR .xml}) for f32 and bf16, exported once into `work`."""
    from exporters.openvino import convert

    checkpoint, onnx_path = exported_onnx(work, checkpoint)
    irs = {}
    for precision in ("f32", "bf16"):
        irs[precision] = xml = work / f"ir-{precision}" / "model.xml"
        if not newer_than(xml, onnx_path):
            print(f"converting {onnx_path} to an OpenVINO IR recording {precision} ...", flush=True)
            convert(onnx_path, xml, inference_precision=precision)
    return checkpoint, irs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bf16_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_speed_args(p, "frcnn-bf16-speed")
    a = p.parse_args(argv)
    check_speed_args(p, a)

    import runtimes
    from runtimes.openvino_precision import kernels, layer_precisions

    checkpoint, irs = prepare(a.work_dir, a.checkpoint)
    detectors = {"torchvision fp32": runtimes.load(checkpoint, runtime="torchvision", threads=a.threads),
                 "torchvision bf16": runtimes.load(checkpoint, runtime="torchvision", threads=a.threads,
                                                   precision="bf16"),
                 "openvino f32": runtimes.load(irs["f32"], threads=a.threads, cache_dir=None),
                 "openvino bf16": runtimes.load(irs["bf16"], threads=a.threads, cache_dir=None)}
    compiled = {name: dict(inference_precision=det.inference_precision, layer_precisions=layer_precisions(det.compiled),
                           kernels=kernels(det.compiled))
                for name, det in detectors.items() if det.runtime == "openvino"}
    isa = system.reduced_precision()
    print(f"{system.cpu_model()}: " + ", ".join(f"{k} {v}" for k, v in isa.items()))
    for name, c in compiled.items():
        print(f"  {name} compiled to {c['inference_precision']}: layers {c['layer_precisions']}, kernels {c['kernels']}")
    print(f"end to end, batch 1, {a.threads} threads: {a.rounds} rounds x {a.images} images each")
    stats = timing.end_to_end(detectors, timing.photos(a.images), a.warmup, a.rounds)
    base = stats["torchvision fp32"]["p50_ms"]
    ratios = {name: base / s["p50_ms"] for name, s in stats.items()}
    for name, ratio in ratios.items():
        print(f"  {name:18s} {ratio:5.2f}x torchvision fp32 at p50")
    if a.json:
        a.json.write_text(json.dumps(dict(end_to_end=stats, vs_torchvision_fp32=ratios, compiled=compiled,
                                          threads=a.threads, checkpoint=str(checkpoint), system=system.describe()),
                                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
