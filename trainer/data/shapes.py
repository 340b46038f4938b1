"""`shapes`: the built-in synthetic detection set.

Coloured circles, squares and triangles on textured backgrounds, several per image, sizes
from a few pixels up. Image i of a split is a pure function of (seed, i), so the set is
generated on the fly, identical on every machine, and needs no download.

    python -m trainer.data.shapes --out DIR --num N   # write it as COCO JSON + images
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import cv2
import numpy as np

from .base import DatasetError, DetectionDataset, Sample

CLASSES = ("circle", "square", "triangle")
SPLIT_SEEDS = {"train": 0, "val": 1_000_003}
MIN_OBJECT = 12  # px: the smallest side, COCO "small" territory; sizes are log-uniform above it
MAX_IMAGES = 10_000_000  # per split: a bigger number in a spec is a typo (len() must fit an index)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random mix of a colour gradient, stripes or checks, and noise."""
    c0, c1 = rng.uniform(0, 255, (2, 3))
    t = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
    grad = c0 + (c1 - c0) * t[:, None]
    img = np.broadcast_to(grad[None] if len(t) == w else grad[:, None], (h, w, 3)).astype(np.float32)
    kind = rng.integers(3)
    if kind:
        period = rng.uniform(6, 40)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, math.pi)
        u = xx * math.cos(angle) + yy * math.sin(angle)
        pattern = np.sin(u * 2 * math.pi / period)
        if kind == 2:
            pattern = pattern * np.sin((-xx * math.sin(angle) + yy * math.cos(angle)) * 2 * math.pi / period)
        img += (pattern * rng.uniform(10, 45))[:, :, None]
    img += rng.normal(0, rng.uniform(2, 14), (h, w, 1)).astype(np.float32)
    return np.ascontiguousarray(np.clip(img, 0, 255), dtype=np.uint8)


def _colour_far_from(rng: np.random.Generator, ref: np.ndarray) -> tuple[int, int, int]:
    for _ in range(20):
        c = rng.uniform(0, 255, 3)
        if np.abs(c - ref).sum() > 160:
            break
    return tuple(int(v) for v in c)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def render(seed: int, index: int, size_range=((192, 288), (224, 320)), max_objects: int = 6):
    """Image `index` of the set with `seed`: (RGB uint8 image, boxes xyxy float32, labels 1..3)."""
    rng = np.random.default_rng([seed, index])
    h = int(rng.integers(*size_range[0]))
    w = int(rng.integers(*size_range[1]))
    img = _background(rng, h, w)
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(10):
            # log-uniform sizes: many small objects, some large
            s = float(np.exp(rng.uniform(np.log(MIN_OBJECT), np.log(min(h, w) * 0.45))))
            cx, cy = rng.uniform(s / 2, w - s / 2), rng.uniform(s / 2, h - s / 2)
            cls = int(rng.integers(len(CLASSES)))
            if cls == 0:
                r = s / 2
                box = np.array([cx - r, cy - r, cx + r, cy + r])
            elif cls == 1:
                box = np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2])
            else:
                a0 = rng.uniform(0, 2 * math.pi)
                pts = np.array([[cx + s / 2 * math.cos(a0 + k * 2 * math.pi / 3),
                                 cy + s / 2 * math.sin(a0 + k * 2 * math.pi / 3)] for k in range(3)])
                box = np.concatenate([pts.min(0), pts.max(0)])
            if all(_iou(box, b) < 0.15 for b in boxes):
                break
        else:
            continue
        ref = img[int(np.clip(cy, 0, h - 1)), int(np.clip(cx, 0, w - 1))].astype(np.float64)
        colour = _colour_far_from(rng, ref)
        shift = 4  # sub-pixel precision for anti-aliased edges
        if cls == 0:
            cv2.circle(img, (int(cx * 16), int(cy * 16)), int(s / 2 * 16), colour, -1, cv2.LINE_AA, shift)
        elif cls == 1:
            cv2.rectangle(img, (int(box[0] * 16), int(box[1] * 16)), (int(box[2] * 16), int(box[3] * 16)),
                          colour, -1, cv2.LINE_AA, shift)
        else:
            cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], colour, cv2.LINE_AA, shift)
        box = np.clip(box, 0, [w, h, w, h])
        boxes.append(box)
        labels.append(cls + 1)
    return img, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


class ShapesDataset(DetectionDataset):
    """`num` images of the synthetic set, deterministic from `seed`."""

    def __init__(self, num: int = 1000, seed: int = 0, name: str = "shapes"):
        super().__init__(class_names=list(CLASSES), name=name)
        self.num, self.seed = int(num), int(seed)

    def __len__(self) -> int:
        return self.num

    def load(self, index: int) -> Sample:
        if not 0 <= index < self.num:
            raise IndexError(index)
        img, boxes, labels = render(self.seed, index)
        return Sample(image=img, boxes=boxes, labels=labels, image_id=index + 1,
                      file_name=f"{index:06d}.jpg")


def shapes_splits(train: int = 1200, val: int = 200, seed: int = 0):
    """The train and held-out validation splits (disjoint seeds)."""
    for split, n in (("train", train), ("val", val)):
        if not 0 < n <= MAX_IMAGES:
            raise DatasetError(f"shapes: {split}={n} images; each split needs 1..{MAX_IMAGES}")
    return (ShapesDataset(train, SPLIT_SEEDS["train"] + seed, "shapes-train"),
            ShapesDataset(val, SPLIT_SEEDS["val"] + seed, "shapes-val"))


def write_coco(dataset: DetectionDataset, out: Path, progress: bool = True) -> Path:
    """Write a dataset as `out/annotations.json` plus `out/images/*.jpg` (COCO instances format)."""
    from tqdm import tqdm

    images_dir = Path(out) / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    coco = dataset.coco_dict()
    for i in tqdm(range(len(dataset)), desc=f"writing {dataset.name}", disable=not progress, unit="img"):
        s = dataset.load(i)
        cv2.imwrite(str(images_dir / s.file_name), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
    for im in coco["images"]:
        im["file_name"] = f"images/{im['file_name']}"
    path = Path(out) / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.data.shapes",
                                description="Write the synthetic shapes set as COCO JSON + JPEG images.")
    p.add_argument("--out", required=True, type=Path, help="output folder (annotations.json, images/)")
    p.add_argument("--num", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--split", choices=sorted(SPLIT_SEEDS), default="val",
                   help="which split's images to write (default val, the held-out split)")
    p.add_argument("--seed", type=int, default=0, help="offset added to the split's seed (default 0)")
    a = p.parse_args(argv)
    if a.num <= 0:
        p.error("--num must be positive")
    ds = ShapesDataset(a.num, SPLIT_SEEDS[a.split] + a.seed, f"shapes-{a.split}")
    path = write_coco(ds, a.out)
    print(f"wrote {a.num} images and {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
