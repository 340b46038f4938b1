"""Detect objects in images, a folder, a glob or a video; save the drawn results and COCO JSON.

    python -m runtimes.predict --model runs/shapes-tiny/model.onnx --source photos/
    python -m runtimes.predict --model model.xml --source "data/**/*.jpg" --batch 4
    python -m runtimes.predict --model runs/shapes-tiny --source clip.mp4 --threshold 0.3 --show

Any artifact runtimes.load reads works: a run dir or checkpoint (PyTorch), .onnx, OpenVINO
.xml, TensorRT .engine. The save dir (default runs/predict/NAME, never overwritten) gets
  - each image drawn, under its own file name; each video drawn, as NAME.mp4 (same fps and size);
  - detections.json: COCO results (image_id, category_id, bbox xywh in original pixels, score);
  - images.json: what each image_id is (file, video frame, size), the skipped inputs, the categories.
Unreadable images and broken video frames are skipped, counted and reported at the end.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from . import RUNTIMES, ModelLoadError, first_line, load
from .coco import to_coco_results
from .draw import draw_detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
# Reads that may fail in a row inside a video before we take it as its end (or a dead stream).
MAX_FAILED_READS = 25


def fail(message: str, code: int = 2):
    """One clear line on stderr, no stack trace."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def find_sources(source: str) -> tuple[list[Path], list[Path]]:
    """(image files, video files) named by a file, a folder (not recursive) or a glob pattern."""
    path = Path(source)
    if path.is_file():
        return ([], [path]) if path.suffix.lower() in VIDEO_SUFFIXES else ([path], [])
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    elif any(c in source for c in "*?["):  # a glob pattern
        files = sorted(Path(p) for p in glob.glob(source, recursive=True) if os.path.isfile(p))
    else:
        fail(f"--source {source}: no such file or directory")
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    if not images and not videos:
        fail(f"--source {source}: no images or videos found (looked for {' '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
    return images, videos


def next_free_dir(base: Path) -> Path:
    """`base`, or base-2, base-3, ... : the first that does not exist yet, so runs never overwrite."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def default_name(source: str) -> str:
    path = Path(source)
    if path.is_file():
        return path.stem
    if path.is_dir():
        return path.resolve().name or "predict"
    return "predict"  # a glob pattern names nothing in particular


def read_frames(capture: cv2.VideoCapture):
    """Yield (frame index, BGR frame or None for a broken frame) until the video ends.

    VideoCapture.read returns False both at the end and on a frame it cannot decode; only
    a later good frame tells the two apart. So failed reads are held back and reported as
    broken frames once a good frame follows; failures at the end are the end.
    """
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))  # 0 or -1 for streams; may be an estimate
    index, failed = 0, 0
    while failed < MAX_FAILED_READS:
        ok, frame = capture.read()
        if not ok:
            failed += 1
            if total > 0 and index + failed >= total:
                return
            continue
        for _ in range(failed):
            yield index, None
            index += 1
        failed = 0
        yield index, frame
        index += 1


def batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Display:
    """cv2.imshow when this OpenCV and this session can show windows; otherwise one line, once."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and self._can_show()

    @staticmethod
    def _can_show() -> bool:
        # a GUI build without a display can abort the process instead of raising, so look first
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            reason = "no display (DISPLAY is not set)"
        else:
            try:
                cv2.namedWindow("predict", cv2.WINDOW_NORMAL)
                return True
            except cv2.error:
                reason = "this OpenCV has no GUI support (opencv-python-headless)"
        tqdm.write(f"--show: cannot show results, {reason}; continuing without a window")
        return False

    def show(self, frame: np.ndarray) -> bool:
        """Show one frame; False when the user pressed q or Esc to stop."""
        if not self.enabled:
            return True
        cv2.imshow("predict", frame)
        return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self):
        if self.enabled:
            cv2.destroyAllWindows()


@dataclass
class Results:
    """What a run produced: COCO records, the table of what each image id is, the skipped inputs."""

    records: list = field(default_factory=list)
    images: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    def add(self, dets, width: int, height: int, category_ids, **where) -> None:
        image_id = len(self.images) + 1
        self.images.append(dict(id=image_id, width=width, height=height, **where))
        self.records += to_coco_results(image_id, dets.boxes, dets.scores, dets.labels, category_ids)

    def skip(self, kind: str, reason: str, source: Path, frame: int | None = None) -> None:
        """Record an input that could not be read: kind is "image", "video" or "frame"."""
        where = dict(kind=kind, source=str(source)) | ({} if frame is None else dict(frame=frame))
        self.skipped.append(dict(where, reason=reason))
        tqdm.write(f"skipped {source}{'' if frame is None else f' frame {frame}'}: {reason}")

    def count(self, kind: str) -> int:
        return sum(1 for x in self.skipped if x["kind"] == kind)


class Predictor:
    """Runs a detector over images and videos, draws, writes and collects results."""

    def __init__(self, detector, save_dir: Path, threshold: float, batch: int, display: Display):
        self.detector, self.save_dir, self.threshold = detector, save_dir, threshold
        self.batch, self.display = batch, display
        self.results = Results()
        self.category_ids = detector.meta.category_ids
        self.used_names: set[str] = set()
        self.stopped = False

    def detect(self, frames_bgr: list[np.ndarray]):
        rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames_bgr]
        return self.detector(rgb, threshold=self.threshold)

    def drawn(self, items, bar):
        """(key, BGR image with the detections drawn, detections) for (key, image) items, detected
        in batches; each is shown after the caller has written it. A closed window stops the run."""
        for batch in batches(items, self.batch):
            for (key, image), dets in zip(batch, self.detect([im for _, im in batch])):
                draw_detections(image, dets)
                yield key, image, dets
                if not self.display.show(image):
                    self.stopped = True
                    return
            bar.update(len(batch))

    def output_name(self, path: Path, suffix: str | None = None) -> str:
        """The input's file name; made unique when a glob matched the same name in two folders."""
        name = path.stem + (suffix or path.suffix)
        stem, ext, n = Path(name).stem, Path(name).suffix, 1
        while name in self.used_names:
            n += 1
            name = f"{stem}-{n}{ext}"
        self.used_names.add(name)
        return name

    def images(self, paths: list[Path]) -> None:
        bar = tqdm(total=len(paths), desc="images", unit="img", dynamic_ncols=True)

        def readable():
            for path in paths:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if image is None:
                    self.results.skip("image", "cannot read the image", path)
                    bar.update()
                else:
                    yield path, image

        for path, image, dets in self.drawn(readable(), bar):
            name = self.output_name(path)
            cv2.imwrite(str(self.save_dir / name), image)
            self.results.add(dets, image.shape[1], image.shape[0], self.category_ids,
                             file_name=name, source=str(path))
        bar.close()

    def video(self, path: Path) -> None:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            self.results.skip("video", "cannot open the video", path)
            return
        fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        name = self.output_name(path, ".mp4")
        writer = cv2.VideoWriter(str(self.save_dir / name), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not writer.isOpened():
            capture.release()
            fail(f"cannot write {self.save_dir / name}: this OpenCV has no mp4v encoder")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        bar = tqdm(total=total if total > 0 else None, desc=path.name, unit="frame", dynamic_ncols=True)

        def readable():
            for index, frame in read_frames(capture):
                if frame is None:
                    self.results.skip("frame", "cannot decode the frame", path, index)
                    bar.update()
                else:
                    yield index, frame

        for index, frame, dets in self.drawn(readable(), bar):
            if (frame.shape[1], frame.shape[0]) != size:  # a stream that changed resolution
                frame = cv2.resize(frame, size)
            writer.write(frame)
            self.results.add(dets, frame.shape[1], frame.shape[0], self.category_ids,
                             file_name=name, source=str(path), frame=index)
        bar.close()
        capture.release()
        writer.release()

    def write_json(self, model: str) -> None:
        meta = self.detector.meta
        categories = [dict(id=meta.category_id(label), name=name)
                      for label, name in enumerate(meta.class_names) if label > 0]
        (self.save_dir / "detections.json").write_text(json.dumps(self.results.records))
        (self.save_dir / "images.json").write_text(json.dumps(dict(
            model=model, runtime=self.detector.runtime, threshold=self.threshold, categories=categories,
            images=self.results.images, skipped=self.results.skipped), indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtimes.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="run dir, .safetensors, .onnx, OpenVINO .xml or .engine")
    p.add_argument("--source", required=True,
                   help="an image, a folder of images/videos, a quoted glob (\"imgs/**/*.jpg\") or a video file")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="least score to keep and draw (default 0.5; the model itself already drops "
                        "scores below its box_score_thresh)")
    p.add_argument("--save-dir", type=Path,
                   help="where results go (default runs/predict/NAME, with -2, -3, ... rather than overwriting)")
    p.add_argument("--show", action="store_true", help="also show results in a window (q or Esc stops)")
    p.add_argument("--batch", type=int, default=1, help="images or frames per model call (default 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or an OpenVINO device such as GPU")
    p.add_argument("--runtime", choices=RUNTIMES, help="runtime to use (default: from the model file)")
    a = p.parse_args(argv)
    if a.batch < 1:
        fail("--batch must be at least 1")
    if not 0 <= a.threshold <= 1:
        fail(f"--threshold {a.threshold} is outside [0, 1]")
    images, videos = find_sources(a.source)
    try:
        detector = load(a.model, device=a.device, runtime=a.runtime)
    except (ModelLoadError, ImportError, ValueError) as e:
        fail(first_line(e))

    save_dir = a.save_dir or next_free_dir(Path("runs/predict") / default_name(a.source))
    save_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(detector, save_dir, a.threshold, a.batch, Display(a.show))
    start = time.perf_counter()
    try:
        if images:
            predictor.images(images)
        for video in videos:
            if not predictor.stopped:
                predictor.video(video)
    except KeyboardInterrupt:
        tqdm.write("interrupted; saving what was done so far")
    finally:
        predictor.display.close()
        predictor.write_json(str(a.model))
    seconds = time.perf_counter() - start
    r = predictor.results
    summary = []
    if images:
        summary.append(f"{len(images)} images, {r.count('image')} skipped")
    if videos:
        frames = sum("frame" in im for im in r.images)
        summary.append(f"{len(videos)} video(s), {r.count('video')} unreadable: {frames} frames, "
                       f"{r.count('frame')} broken frames skipped")
    summary.append(f"{len(r.records)} detections, {len(r.images) / max(seconds, 1e-9):.1f} images/s "
                   f"on {detector.runtime} ({a.device}, batch {a.batch})")
    print("; ".join(summary))
    print(f"results in {save_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
