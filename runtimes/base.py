"""The one interface every runtime adapter implements.

An adapter only has to run the deployed graph on a batch of canvas images (`infer`);
input checks, letterboxing, batching and mapping boxes back to the original image are
shared here, in numpy, identical for every runtime.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import OneLineError
from .image import ImageError, Letterbox, boxes_to_image, letterbox, to_rgb_uint8
from .meta import ModelMeta

OUTPUT_NAMES = ("num_detections", "boxes", "scores", "labels")


def pad_batch(canvas: np.ndarray, size: int) -> np.ndarray:
    """`canvas` with blank images appended up to `size` (a fixed-batch artifact's last chunk)."""
    if len(canvas) >= size:
        return canvas
    return np.concatenate([canvas, np.zeros((size - len(canvas), *canvas.shape[1:]), canvas.dtype)])


def is_file(path) -> bool:
    """Path.is_file, but False, not an exception, for a name the OS refuses (too long, a NUL byte)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def is_dir(path) -> bool:
    """Path.is_dir, but False, not an exception, for a name the OS refuses (too long, a NUL byte)."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when empty), for one-line errors."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def image_list(images) -> list:
    """A batch given to a detector as a list: a [B, H, W, C] array or any iterable of images."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ImageError(f"expected an image (HxW, HxWx3 or HxWx4) or a batch [B, H, W, C] of them, "
                             f"got an array of shape {images.shape}")
        return list(images)
    if isinstance(images, (str, bytes)):
        raise ImageError(f"expected an image array or a list of them, got {type(images).__name__} "
                         "(decode image files first, e.g. with cv2.imread)")
    try:
        return list(images)
    except TypeError:
        raise ImageError(f"expected an image array or a list of them, got {type(images).__name__}") from None


def check_threshold(threshold) -> float | None:
    """The least score to keep, as a float in [0, 1], or None."""
    if threshold is None:
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ImageError(f"threshold must be a number in [0, 1] or None, got {threshold!r}") from None
    if not 0 <= value <= 1:  # NaN too
        raise ImageError(f"threshold must be a number in [0, 1] or None, got {threshold!r}")
    return value


class ModelLoadError(OneLineError, RuntimeError):
    """An artifact that cannot be loaded (or, loaded, that its runtime cannot run); the message
    is one line naming the file."""


@dataclass
class Detections:
    """Detections of one image, in original-image pixels (x1, y1, x2, y2)."""

    boxes: np.ndarray  # [n, 4] float32
    scores: np.ndarray  # [n] float32
    labels: np.ndarray  # [n] int64, model labels (1..C)
    names: list[str]  # class name of each detection

    def __len__(self) -> int:
        return len(self.scores)


class Detector:
    """Base class: subclasses set `meta`, `batch` (None = any) and implement `infer`."""

    runtime = "base"
    meta: ModelMeta
    batch: int | None = None
    path: Path | None = None

    def infer(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        """Raw model call: uint8 [B, H, W, 3] canvas batch -> the four padded outputs as numpy arrays."""
        raise NotImplementedError

    @property
    def canvas(self) -> tuple[int, int]:
        return tuple(self.meta.canvas)

    def prepare(self, images: list[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """Check, convert and letterbox images into one canvas batch."""
        h, w = self.canvas
        batch = np.zeros((len(images), h, w, 3), np.uint8)
        boxes = [letterbox(to_rgb_uint8(im), (h, w), out=batch[i])[1] for i, im in enumerate(images)]
        return batch, boxes

    def infer_batched(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        """`infer` on any number of images: chunks of the artifact's fixed batch, the last one padded."""
        if self.batch is None or len(canvas) == self.batch:
            return self.infer(canvas)
        parts = []
        for start in range(0, len(canvas), self.batch):
            chunk = canvas[start: start + self.batch]
            parts.append({k: v[: len(chunk)] for k, v in self.infer(pad_batch(chunk, self.batch)).items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in OUTPUT_NAMES}

    def postprocess(self, out: dict[str, np.ndarray], boxes: list[Letterbox], threshold: float | None) -> list[Detections]:
        result = []
        for i, lb in enumerate(boxes):
            n = min(max(int(out["num_detections"][i]), 0), out["scores"].shape[1])  # a damaged model may count past K
            scores = out["scores"][i, :n].astype(np.float32)
            boxes = boxes_to_image(out["boxes"][i, :n], lb)
            # a box wholly in the letterbox padding has no area left in the image: drop it
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if threshold is not None:
                keep &= scores >= threshold
            labels = out["labels"][i, :n][keep].astype(np.int64)
            result.append(Detections(
                boxes=boxes[keep], scores=scores[keep], labels=labels,
                names=[self.meta.class_names[l] if 0 <= l < len(self.meta.class_names) else str(l) for l in labels]))
        return result

    def __call__(self, images, threshold: float | None = None):
        """Detect objects in one RGB image (H x W x 3 array) or a list/batch of them.

        Returns Detections (one image) or a list of Detections, in original-image pixels.
        Grayscale, RGBA, 16-bit and float [0, 1] images are converted; anything else
        raises runtimes.image.ImageError with one clear line.
        """
        single = isinstance(images, np.ndarray) and images.ndim in (2, 3)
        batch = [images] if single else image_list(images)
        threshold = check_threshold(threshold)
        if not batch:
            return []
        canvas, boxes = self.prepare(batch)
        dets = self.postprocess(self.infer_batched(canvas), boxes, threshold)
        return dets[0] if single else dets

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path}, canvas={self.canvas}, batch={self.batch})"
