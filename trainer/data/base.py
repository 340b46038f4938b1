"""The dataset interface every format implements, and the checks they share.

A dataset yields `Sample`s in original-image pixels with labels 1..C (0 is the
background). Bad input never vanishes silently: it raises `DatasetError` with a one-line
message naming the file (and line), or it is skipped and counted in `skipped`, which the
trainer reports.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from runtimes.errors import one_line


class DatasetError(ValueError):
    """Bad dataset input; the message is one line naming the file and, where known, the line.

    A DataLoader worker's error comes back to the main process as a DatasetError whose
    message is "Caught DatasetError in DataLoader worker process N." plus the worker's
    traceback; the constructor recognises that form and keeps the original one line as the
    message (the traceback stays in `worker_traceback`), so `str(error)` is one line either way.
    """

    def __init__(self, message: str = ""):
        self.worker_traceback = None
        if message.startswith("Caught DatasetError ") and "\nOriginal Traceback" in message:
            self.worker_traceback = message
            message = message.rstrip().splitlines()[-1].split("DatasetError: ", 1)[-1]
        super().__init__(one_line(message))  # a name quoted from a file may hold a line break


@dataclass
class Sample:
    image: np.ndarray  # H x W x 3, RGB, uint8
    boxes: np.ndarray  # N x 4 float32, x1 y1 x2 y2 in image pixels
    labels: np.ndarray  # N int64, 1..C
    image_id: int
    file_name: str
    iscrowd: np.ndarray | None = None  # N bool; crowd boxes count for evaluation only

    @property
    def crowd(self) -> np.ndarray:
        return np.zeros(len(self.labels), bool) if self.iscrowd is None else self.iscrowd.astype(bool)

    def without_crowd(self) -> Sample:
        """The training targets: crowd boxes (COCO iscrowd=1, VOC difficult) removed.

        Crowd boxes stay in the ground truth for evaluation (COCOeval ignores detections that
        match them) but are never regression/classification targets, as in torchvision's
        detection references. The image may end up with no boxes: a background-only sample.
        """
        keep = ~self.crowd
        if keep.all():
            return self
        return Sample(image=self.image, boxes=self.boxes[keep], labels=self.labels[keep],
                      image_id=self.image_id, file_name=self.file_name, iscrowd=None)


@dataclass
class DetectionDataset:
    """Base class: subclasses implement __len__ and load(i)."""

    class_names: list[str]  # without the background
    name: str = "dataset"
    # COCO category id of each class (same order as class_names); default 1..C
    category_ids: list[int] | None = None
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Sample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        return self.load(index)

    def label_category_ids(self) -> list[int]:
        """COCO category id per model label, background (label 0) included as 0."""
        ids = self.category_ids or list(range(1, len(self.class_names) + 1))
        return [0, *ids]

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def skip_report(self) -> str:
        if not self.skipped:
            return ""
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"{self.name}: skipped {parts}"

    def image_info(self, index: int) -> dict:
        """COCO image record plus annotations for item `index`; subclasses may avoid decoding the image."""
        s = self.load(index)
        h, w = s.image.shape[:2]
        return dict(id=s.image_id, file_name=s.file_name, height=h, width=w,
                    boxes=s.boxes, labels=s.labels, iscrowd=s.crowd)

    def coco_dict(self) -> dict:
        """The ground truth as a COCO instances dict, in original-image pixels."""
        cat_ids = self.label_category_ids()
        images, annotations = [], []
        for i in range(len(self)):
            info = self.image_info(i)
            images.append({k: info[k] for k in ("id", "file_name", "height", "width")})
            for box, label, crowd in zip(info["boxes"], info["labels"], info["iscrowd"]):
                x1, y1, x2, y2 = (float(v) for v in box)
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=info["id"], category_id=cat_ids[int(label)],
                    bbox=[x1, y1, x2 - x1, y2 - y1], area=(x2 - x1) * (y2 - y1), iscrowd=int(crowd)))
        categories = [dict(id=cid, name=n) for cid, n in zip(cat_ids[1:], self.class_names)]
        return dict(images=images, annotations=annotations, categories=categories)


def check_boxes(boxes: np.ndarray, width: int, height: int, where: str, dataset: DetectionDataset,
                labels: np.ndarray | None = None, iscrowd: np.ndarray | None = None):
    """Clip boxes that stick out of the image; drop (and count) degenerate ones.

    Returns the kept (boxes, labels, iscrowd). A box is degenerate when it has no area
    left inside the image. Non-finite coordinates raise DatasetError naming `where`.
    `dataset` is whatever counts the skips: anything with a `skip(reason, n)` method.
    """
    with np.errstate(over="ignore"):  # a value past float32's range becomes inf, refused just below
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise DatasetError(f"{where}: box coordinates are not finite numbers")
    outside = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height)
    if outside.any():
        dataset.skip("boxes clipped to the image", int(outside.sum()))
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, height)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    if (~keep).any():
        dataset.skip("degenerate boxes dropped", int((~keep).sum()))
    out = [clipped[keep]]
    for extra in (labels, iscrowd):
        out.append(None if extra is None else np.asarray(extra)[keep])
    return tuple(out)
