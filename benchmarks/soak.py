"""Soak: does a long run keep its memory flat? (A benchmark script, not a timed test.)

For each runtime: load one detector, warm it up (`--warmup` calls and the predict pipeline over
a short clip), then make `--calls` detector(image) calls on images of many sizes and run the
predict pipeline (runtimes.predict: decode, detect, draw, write the drawn video, collect the COCO
records) over a generated `--frames`-frame video. The resident memory (RSS) of this process is
sampled throughout; the run fails (exit 1) when it grows by `--limit-mb` or more after the warm-up.

    python benchmarks/soak.py                                   # default tiny model, ONNX Runtime and OpenVINO
    python benchmarks/soak.py --model runs/my-run/model.onnx --runtime onnxruntime
    python benchmarks/soak.py --calls 500 --frames 200          # a quick look

Growth is what a leak looks like; a steady RSS after the warm-up (allocator pools, the
runtime's arena, OpenCV's buffers all reach their size in the first calls) is not.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/soak.py` from anywhere
    sys.path.insert(0, str(REPO))

import runtimes  # noqa: E402
from exporters.cli import fail  # noqa: E402

DEFAULT_CHECKPOINT = REPO / "runs" / "default-tiny"
FRAME_SIZE = (320, 240)  # (w, h) of the generated video


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        import psutil

        return psutil.Process().memory_info().rss / 2**20


class Sampler:
    """RSS every `interval` seconds on a background thread, plus marks taken by the caller."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.samples, self.stop_event = interval, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_event.wait(self.interval):
            self.samples.append(rss_mb())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join()

    def peak_since(self, start: int) -> float:
        return max([*self.samples[start:], rss_mb()])


def soak_images(n: int = 64) -> list[np.ndarray]:
    """Synthetic RGB images of many sizes, some far from the canvas (tall, wide, big, tiny)."""
    from trainer.data.shapes import render

    images = [render(11, i)[0] for i in range(n)]
    for k, (h, w) in enumerate([(1080, 1920), (37, 1200), (1500, 40), (9, 9), (720, 1280), (2000, 1500)]):
        images[k] = cv2.resize(images[k], (w, h))
    return images


def write_video(path: Path, frames: int) -> Path:
    from trainer.data.shapes import render

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, FRAME_SIZE)
    if not writer.isOpened():
        fail(f"cannot write {path}: this OpenCV has no mp4v encoder")
    for i in tqdm(range(frames), desc="writing the video", unit="frame", dynamic_ncols=True):
        writer.write(cv2.resize(cv2.cvtColor(render(12, i % 500)[0], cv2.COLOR_RGB2BGR), FRAME_SIZE))
    writer.release()
    return path


def artifacts(checkpoint: Path, folder: Path, wanted: list[str]) -> dict[str, Path]:
    """The checkpoint exported for each runtime in `wanted` (ONNX, and an IR from it)."""
    from exporters.onnx import export_onnx
    from trainer.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    onnx_path = export_onnx(model, meta, folder / "model.onnx", batch=1)
    out = {"onnxruntime": onnx_path, "torch": checkpoint}
    if "openvino" in wanted:
        from exporters.openvino import convert

        out["openvino"] = convert(onnx_path, folder / "openvino")
    return {k: v for k, v in out.items() if k in wanted}


def predict_video(detector, video: Path, save_dir: Path, artifact: Path):
    """runtimes.predict's pipeline over one video, as `python -m runtimes.predict` runs it."""
    from runtimes.predict import Display, Predictor

    save_dir.mkdir()
    predictor = Predictor(detector, save_dir, threshold=0.5, batch=1, display=Display(False))
    predictor.video(video)
    predictor.write_json(str(artifact))
    return predictor


def soak(runtime: str, artifact: Path, videos: tuple[Path, Path], images: list[np.ndarray], calls: int,
         warmup: int, folder: Path) -> dict:
    options = {"cache_dir": None} if runtime == "openvino" else {}
    detector = runtimes.load(artifact, runtime=runtime, **options)
    clip, video = videos
    with Sampler() as sampler:
        for i in range(warmup):
            detector(images[i % len(images)])
        predict_video(detector, clip, folder / f"warmup-{runtime}", artifact)  # the video codecs' buffers too
        start_mb, first = rss_mb(), len(sampler.samples)
        marks = []  # (call, RSS) every 10% of the calls
        for i in tqdm(range(calls), desc=f"{runtime}: detector(image)", unit="call", dynamic_ncols=True):
            detector(images[i % len(images)])
            if (i + 1) % max(1, calls // 10) == 0:
                marks.append((i + 1, round(rss_mb(), 1)))
        calls_mb, calls_peak = rss_mb(), sampler.peak_since(first)

        first = len(sampler.samples)
        predictor = predict_video(detector, video, folder / f"predict-{runtime}", artifact)
        video_mb, video_peak = rss_mb(), sampler.peak_since(first)
    frames = sum("frame" in im for im in predictor.results.images)
    return dict(runtime=runtime, artifact=str(artifact), warmup_calls=warmup, calls=calls, frames=frames,
                detections_in_video=len(predictor.results.records), rss_after_warmup_mb=round(start_mb, 1),
                rss_after_calls_mb=round(calls_mb, 1), rss_peak_calls_mb=round(calls_peak, 1),
                rss_after_video_mb=round(video_mb, 1), rss_peak_video_mb=round(video_peak, 1),
                growth_calls_mb=round(calls_mb - start_mb, 1), growth_total_mb=round(video_mb - start_mb, 1),
                growth_peak_mb=round(max(calls_peak, video_peak) - start_mb, 1), marks=marks)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/soak.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                   help="checkpoint to export for each runtime (default runs/default-tiny; "
                        "train it with python benchmarks/run.py)")
    p.add_argument("--model", type=Path, help="one artifact to soak instead (with --runtime naming its runtime)")
    p.add_argument("--runtime", default="onnxruntime,openvino",
                   help="comma-separated runtimes (default onnxruntime,openvino; torch works too)")
    p.add_argument("--calls", type=int, default=5000, help="detector(image) calls (default 5000)")
    p.add_argument("--frames", type=int, default=2000, help="frames of the generated video (default 2000)")
    p.add_argument("--warmup", type=int, default=200, help="calls before the baseline RSS (default 200)")
    p.add_argument("--limit-mb", type=float, default=50.0, help="growth after warm-up that fails the run (default 50)")
    p.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    a = p.parse_args(argv)
    wanted = [r.strip() for r in a.runtime.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ("onnxruntime", "openvino", "torch")]
    if unknown or not wanted:
        fail(f"--runtime {a.runtime}: choose from onnxruntime, openvino, torch")
    if min(a.calls, a.frames) <= 0 or a.warmup < 0:
        fail("--calls and --frames must be positive, --warmup at least 0")
    if a.model is not None and len(wanted) != 1:
        fail("--model is one artifact: name its one runtime with --runtime")
    for runtime in wanted:
        reason = runtimes.unavailable(runtime)
        if reason:
            fail(f"{runtime}: {reason}")

    with tempfile.TemporaryDirectory(prefix="frcnn-soak-") as tmp:
        folder = Path(tmp)
        if a.model is not None:
            models = {wanted[0]: a.model}
        else:
            if not (a.checkpoint / "model.safetensors").is_file() and not a.checkpoint.is_file():
                fail(f"--checkpoint {a.checkpoint}: no checkpoint (train one with python benchmarks/run.py, "
                     "or pass --model)")
            models = artifacts(a.checkpoint, folder, wanted)
        videos = write_video(folder / "clip.mp4", min(50, a.frames)), write_video(folder / "soak.mp4", a.frames)
        images = soak_images()
        results = []
        for runtime, artifact in models.items():
            try:
                results.append(soak(runtime, artifact, videos, images, a.calls, a.warmup, folder))
            except runtimes.ModelLoadError as e:
                fail(str(e))

    failed = False
    print(f"\n{'runtime':<12} {'after warm-up':>14} {'after calls':>12} {'after video':>12} {'peak':>8} "
          f"{'growth':>8}  (MB, RSS of this process)")
    for r in results:
        worst = max(r["growth_total_mb"], r["growth_peak_mb"])
        failed |= worst >= a.limit_mb
        print(f"{r['runtime']:<12} {r['rss_after_warmup_mb']:>14.1f} {r['rss_after_calls_mb']:>12.1f} "
              f"{r['rss_after_video_mb']:>12.1f} {max(r['rss_peak_calls_mb'], r['rss_peak_video_mb']):>8.1f} "
              f"{worst:>+8.1f}  {r['calls']} calls, {r['frames']} frames, "
              f"{'ok' if worst < a.limit_mb else f'FAIL (limit {a.limit_mb:g} MB)'}")
    if a.out:
        a.out.write_text(json.dumps(dict(limit_mb=a.limit_mb, results=results), indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
