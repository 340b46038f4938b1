"""Calibration images for INT8: one source for every runtime (ONNX Runtime, TensorRT, OpenVINO).

    calib = calibration_set(meta)                          # 300 images of the checkpoint's training data
    calib = calibration_set(meta, 64, "coco/instances_val2017.json")
    for canvas in calib.batches(1): ...                    # uint8 [1, H, W, 3], as deployed

The images come from the training split of the checkpoint's own dataset (its provenance names
it), or of any dataset spec the trainer reads (`--calib-data`), evenly spaced over the split.
They are letterboxed by the runtimes' own `Detector.prepare`, so the network is calibrated on
exactly the pixels it sees when deployed. The images are decoded once, up front (a progress
bar; an unreadable one is a one-line error before any runtime starts), and letterboxed when
iterated, so a COCO-scale canvas does not hold N canvases in memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtimes.base import Detector, first_line
from runtimes.image import ImageError, to_rgb_uint8
from runtimes.meta import ModelMeta

DEFAULT_IMAGES = 300  # NNCF's default subset size; ranges of a few hundred images are stable
MIN_IMAGES = 8  # fewer give the min/max ranges of a handful of pictures


def shared_pipeline(meta: ModelMeta) -> Detector:
    """The runtimes' shared numpy side (prepare: letterbox onto the canvas; postprocess: boxes back
    to the image) for a model described by `meta`, without a runtime behind it."""
    pipeline = Detector()
    pipeline.meta = meta
    return pipeline


class CalibrationError(ValueError):
    """A calibration set that cannot be used; the message is one line."""


@dataclass
class CalibrationSet:
    """Decoded RGB images and the canvas they are letterboxed onto; `describe()` is the metadata record."""

    images: list[np.ndarray]
    meta: ModelMeta
    spec: str  # the dataset spec they came from
    split: str  # that dataset's name (e.g. shapes-train)
    available: int  # images in that split

    def __len__(self) -> int:
        return len(self.images)

    def canvases(self, progress: str | None = None):
        """Each image letterboxed onto the canvas: uint8 [H, W, 3], with a progress bar when `progress` names it."""
        from tqdm import tqdm

        pipeline = shared_pipeline(self.meta)
        for image in tqdm(self.images, desc=progress, unit="img", leave=False, disable=progress is None):
            yield pipeline.prepare([image])[0][0]

    def batches(self, size: int = 1, progress: str | None = None):
        """Canvas batches uint8 [size, H, W, 3]; the last is filled with the first images again
        (no blank canvases: they would pull the ranges towards the padding)."""
        chunk = []
        for canvas in self.canvases(progress):
            chunk.append(canvas)
            if len(chunk) == size:
                yield np.stack(chunk)
                chunk = []
        if chunk:
            first = self.canvases()
            while len(chunk) < size:
                chunk.append(next(first))
            yield np.stack(chunk)

    def describe(self) -> dict:
        """What the artifact's metadata records about its calibration."""
        return dict(dataset=self.spec, split=self.split, images=len(self), of=self.available,
                    letterbox=f"{self.meta.canvas[0]}x{self.meta.canvas[1]}")


def calibration_set(meta: ModelMeta, images: int = DEFAULT_IMAGES, spec: str | None = None) -> CalibrationSet:
    """`images` images of the training split of `spec` (default: the checkpoint's training data).
    CalibrationError, one line, when there is no such data, it is unreadable or too small."""
    from tqdm import tqdm

    from trainer.data import DatasetError, build_datasets

    if images < MIN_IMAGES:
        raise CalibrationError(f"--calib-images {images}: at least {MIN_IMAGES} images are needed")
    named = spec is not None  # a dataset known by name (coco-train2017) is downloaded only when asked for
    if spec is None:
        spec = meta.provenance.get("dataset")
        if not spec:
            raise CalibrationError("the checkpoint names no training dataset (its provenance has none): "
                                   "give calibration images with --calib-data SPEC")
        val = meta.provenance.get("val_dataset")
    else:
        val = None
    try:
        dataset = build_datasets(spec, val, download=named)[0]
    except (DatasetError, OSError) as e:
        raise CalibrationError(f"calibration data {spec!r}: {first_line(e)}") from None
    if len(dataset) == 0:
        raise CalibrationError(f"calibration data {spec!r} holds no images")
    if len(dataset) < images:
        raise CalibrationError(f"calibration data {spec!r} holds {len(dataset)} training images, fewer than "
                               f"--calib-images {images}; lower it (at least {MIN_IMAGES}) or use a larger set")
    picked = np.unique(np.linspace(0, len(dataset) - 1, images).round().astype(int))
    decoded = []
    for i in tqdm(picked, desc=f"calibration images ({dataset.name})", unit="img", leave=False):
        try:
            image = dataset.load(int(i)).image
        except (DatasetError, OSError) as e:
            raise CalibrationError(f"calibration data {spec!r}: {first_line(e)}") from None
        try:
            decoded.append(to_rgb_uint8(image))
        except ImageError as e:
            raise CalibrationError(f"calibration data {spec!r}: image {i}: {e}") from None
    return CalibrationSet(decoded, meta, spec, dataset.name, len(dataset))
