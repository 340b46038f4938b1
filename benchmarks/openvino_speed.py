"""OpenVINO speed: the IR against torchvision's eager model, side by side in one process.

    flock /tmp/frcnn-cpu.lock python -m benchmarks.openvino_speed --threads 2

Without --checkpoint, a randomly initialised R50-FPN with COCO's classes (800x1344 canvas)
is saved to --work-dir, exported to ONNX and converted to an fp32 IR once; later runs reuse
those files. Random weights time the same computation as trained ones up to the number of
boxes that pass the score threshold (few with random weights), so the figures are for the
network and the fixed-size post-processing.

Reports, all with --threads threads:
- end-to-end latency (decoded image in memory -> boxes in original pixels), batch 1, of
  torchvision's eager forward and of the IR (LATENCY hint, fp32, INFERENCE_PRECISION_HINT f32),
  in back-to-back blocks alternating across rounds (benchmarks.timing) after warm-up; p50/p90 per image and the p50 ratio;
- images/s of the latency mode (one request at a time) and of the throughput mode
  (THROUGHPUT hint, AsyncInferQueue through detect_stream);
- start-up in a fresh process, import + load + compile and first inference apart, without
  the compiled-model cache, with an empty cache (compile + write) and with a warm cache.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/openvino_speed.py` puts benchmarks/, not the repo, on the path
    sys.path.insert(0, str(ROOT))

from benchmarks import system, timing  # noqa: E402
from benchmarks.run import add_speed_args, check_speed_args, exported_onnx, newer_than  # noqa: E402


def prepare(work: Path, checkpoint: str | None) -> tuple[Path, Path]:
    """(checkpoint, IR .xml): the given checkpoint or a random R50-FPN, exported once into `work`."""
    from exporters.openvino import convert

    checkpoint, onnx_path = exported_onnx(work, checkpoint)
    xml = work / "ir" / "model.xml"
    if not newer_than(xml, onnx_path):
        print(f"converting {onnx_path} to OpenVINO IR ...", flush=True)
        convert(onnx_path, xml)
    return checkpoint, xml


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.openvino_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_speed_args(p, "frcnn-openvino-speed")
    p.add_argument("--stream-images", type=int, default=8, help="images per img/s run (default 8)")
    p.add_argument("--stream-rounds", type=int, default=2, help="img/s runs per mode, alternating (default 2)")
    a = p.parse_args(argv)
    check_speed_args(p, a)
    if min(a.stream_images, a.stream_rounds) < 1:
        p.error("--stream-images and --stream-rounds must be at least 1")

    import openvino as ov
    import torch

    import runtimes
    from runtimes.openvino import OpenVINODetector

    checkpoint, xml = prepare(a.work_dir, a.checkpoint)
    images = timing.photos(a.images)
    latency = OpenVINODetector(xml, threads=a.threads, cache_dir=None)
    detectors = {"torchvision": runtimes.load(checkpoint, runtime="torchvision", threads=a.threads),
                 "openvino": latency}
    print(f"end to end, batch 1, {a.threads} threads: {a.rounds} rounds x {a.images} images per runtime")
    stats = timing.end_to_end(detectors, images, a.warmup, a.rounds)
    ratio = stats["torchvision"]["p50_ms"] / stats["openvino"]["p50_ms"]

    stream = [images[i % len(images)] for i in range(a.stream_images)]
    throughput = OpenVINODetector(xml, mode="throughput", threads=a.threads, cache_dir=None)
    list(throughput.detect_stream(stream[: throughput.requests]))  # warm-up every request
    print(f"images/s: latency mode (one request) vs throughput mode, {a.stream_images} images per run")
    modes = {"latency": lambda: [latency(im) for im in stream], "throughput": lambda: list(throughput.detect_stream(stream))}
    runs = timing.blocks(modes, [1] * a.stream_rounds, warmup=0, block_warmup=0, desc="images/s")
    rates = {f"{mode}_img_s": a.stream_images / statistics.median(timing.samples(runs, mode)) for mode in modes}
    rates.update(throughput_requests=throughput.requests,
                 throughput_streams=int(throughput.compiled.get_property("NUM_STREAMS")))

    with tempfile.TemporaryDirectory() as cache:
        starts = {name: timing.fresh_start(xml, "openvino", threads=a.threads, cache_dir=cache_dir)
                  for name, cache_dir in (("no_cache", None), ("empty_cache", cache), ("warm_cache", cache))}

    env = {"cpu": system.cpu_model(), "python": platform.python_version(),
           "openvino": ov.get_version(), "torch": torch.__version__, "threads": a.threads,
           "precision": "f32 (INFERENCE_PRECISION_HINT pinned)", "checkpoint": str(checkpoint)}
    print(f"  openvino is {ratio:.2f}x faster than torchvision at p50")
    print(f"  openvino latency mode {rates['latency_img_s']:.2f} img/s; throughput mode "
          f"{rates['throughput_img_s']:.2f} img/s ({rates['throughput_streams']} streams, "
          f"{rates['throughput_requests']} requests)")
    print(f"  {env['cpu']}, openvino {env['openvino']}, torch {env['torch']}, {env['precision']}")
    print("  start-up in a fresh process (import + load + compile / first inference): " + ", ".join(
        f"{k.replace('_', ' ')} {v['load_s']:.2f} s / {v['first_inference_s']:.2f} s" for k, v in starts.items()))
    if a.json:
        a.json.write_text(json.dumps({"end_to_end": stats, "p50_speedup": ratio, **rates, "startup": starts,
                                      "env": env}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
