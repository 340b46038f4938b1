"""Datasets of image files on disk: what the COCO, VOC and TXT readers share.

A reader parses and checks every annotation when it is constructed, into one
`ImageRecord` per image: the image file must exist, boxes are clipped to the image and
degenerate ones dropped (both counted), sizes come from the annotations or, where absent,
from the image header (PIL reads only the header). No image is decoded then.

Errors and skips:
- construction raises DatasetError (one line naming the file and, where known, the line)
  or counts a skip on the image's record; `dataset.skipped` is the sum over its records,
  so a held-out subset reports exactly its own skips. Construction runs in the main
  process, so the counts are complete before any DataLoader worker starts.
- the only load-time failures are an image that cannot be decoded or whose size differs
  from its annotation: `load` raises DatasetError("<file>: cannot decode image"). Counting
  is impossible there (a DataLoader worker's counters never reach the main process), so it
  is an error, and DatasetError keeps it one line when a worker re-raises it.

Pixels are used as stored: EXIF orientation is ignored, as in pycocotools and
torchvision's PIL loading, which is what annotation sizes and boxes refer to.
"""
from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from runtimes.base import is_file

from .base import DatasetError, DetectionDataset, Sample, check_boxes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MAX_IMAGE_SIDE = 65536  # px: JPEG's limit; a bigger size in an annotation is a typo or corruption
MAX_IMAGE_BYTES = 2**30  # a bigger "image" file is something else (a video, /proc/kcore): not read into memory


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as RGB uint8 HxWx3; DatasetError when it cannot be read or decoded."""
    try:
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise DatasetError(f"{path}: {path.stat().st_size} bytes, too big for an image file")
        data = np.fromfile(path, np.uint8)  # (not cv2.imread: it cannot tell missing from corrupt)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read image ({e.strerror or e})") from None
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    except cv2.error:  # OpenCV refuses some corrupt headers (absurd sizes) with an exception, not None
        image = None
    if image is None:
        raise DatasetError(f"{path}: cannot decode image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DatasetError(f"{where}: image {path} not found") from None
    except Exception:  # a corrupt header makes PIL's format plugins raise all sorts of types
        raise DatasetError(f"{where}: cannot read the size of image {path} (not an image file?)") from None


def read_class_names(path: Path) -> list[str]:
    """A class list file: one name per line, line k (from 0) names class index k."""
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read class list ({e})") from None
    names = [n for n in names if n]
    if not names:
        raise DatasetError(f"{path}: empty class list (write one class name per line)")
    dupes = sorted(n for n, k in Counter(names).items() if k > 1)
    if dupes:
        raise DatasetError(f"{path}: class name(s) listed twice: {', '.join(dupes)}")
    return names


@dataclass
class ImageRecord:
    """One checked image of a file dataset: where it is, its size and its boxes."""

    path: Path  # the image file
    file_name: str  # as the annotations name it (relative to the dataset root)
    image_id: int
    width: int
    height: int
    boxes: np.ndarray  # N x 4 float32 xyxy, clipped to the image, degenerate ones dropped
    labels: np.ndarray  # N int64, 1..C
    iscrowd: np.ndarray  # N bool: evaluation-only boxes (COCO crowd, VOC difficult)
    skipped: Counter = field(default_factory=Counter)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    @classmethod
    def checked(cls, path: Path, file_name: str, image_id: int, width: int, height: int,
                boxes, labels, iscrowd, where: str, skipped: Counter | None = None) -> ImageRecord:
        """A record with its boxes clipped and degenerate ones dropped (counted in `skipped`)."""
        if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
            raise DatasetError(f"{where}: image size {width}x{height} is not a usable size "
                               f"(1..{MAX_IMAGE_SIDE} pixels a side)")
        rec = cls(path, file_name, int(image_id), int(width), int(height), None, None, None,
                  Counter(skipped or {}))
        rec.boxes, rec.labels, rec.iscrowd = check_boxes(
            boxes, rec.width, rec.height, where, rec,
            np.asarray(labels, np.int64).reshape(-1), np.asarray(iscrowd, bool).reshape(-1))
        return rec


class FileDataset(DetectionDataset):
    """Images on disk with annotations checked up front; `load(i)` decodes one image."""

    def __init__(self, records: list[ImageRecord], class_names: list[str], name: str, source: Path,
                 category_ids: list[int] | None = None):
        if not records:
            raise DatasetError(f"{source}: no images")
        super().__init__(class_names=list(class_names), name=name, category_ids=category_ids)
        self.records = list(records)
        self.source = source  # the annotation file or folder, for messages
        self.skipped = sum((r.skipped for r in self.records), Counter())

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> Sample:
        r = self.records[index]
        image = read_image(r.path)
        if image.shape[:2] != (r.height, r.width):
            raise DatasetError(f"{r.path}: image is {image.shape[1]}x{image.shape[0]} pixels but "
                               f"{self.source} says {r.width}x{r.height}")
        # copies: a training transform may change them in place
        return Sample(image=image, boxes=r.boxes.copy(), labels=r.labels.copy(), image_id=r.image_id,
                      file_name=r.file_name, iscrowd=r.iscrowd.copy())

    def image_info(self, index: int) -> dict:
        r = self.records[index]  # sizes are known: no decoding
        return dict(id=r.image_id, file_name=r.file_name, height=r.height, width=r.width,
                    boxes=r.boxes, labels=r.labels, iscrowd=r.iscrowd)

    def subset(self, indices, name: str) -> FileDataset:
        """The images at `indices` as a dataset of their own (same classes, ids and files)."""
        sub = copy.copy(self)
        sub.records = [self.records[i] for i in indices]
        sub.name = name
        sub.skipped = sum((r.skipped for r in sub.records), Counter())
        return sub


def hold_out(dataset: FileDataset, fraction: float = 0.1, seed: int = 0) -> tuple[FileDataset, FileDataset]:
    """Split off a deterministic `fraction` (at least 1 image) as validation: (train, val)."""
    n = len(dataset)
    if n < 2:
        raise DatasetError(f"{dataset.source}: {n} image(s), too few to hold out a validation split; "
                           "give a validation set (--val-data)")
    n_val = max(1, round(n * fraction))
    val_idx = np.sort(np.random.default_rng(seed).permutation(n)[:n_val])
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return (dataset.subset(train_idx.tolist(), f"{dataset.name}[train]"),
            dataset.subset(val_idx.tolist(), f"{dataset.name}[val]"))
