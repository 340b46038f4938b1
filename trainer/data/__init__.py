"""Datasets: the built-in `shapes` set and readers for COCO JSON, Pascal VOC XML and TXT lines.

`build_datasets(spec)` turns the trainer's `--data` argument into (train, val) datasets.
"""
from __future__ import annotations

from .base import DatasetError, DetectionDataset, Sample
from .shapes import ShapesDataset, shapes_splits


def _parse_options(text: str) -> dict[str, int]:
    opts = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if not value.isdigit():
            raise DatasetError(f"bad dataset option {part!r} (expected key=integer)")
        opts[key.strip()] = int(value)
    return opts


def build_datasets(data: str, val: str | None = None) -> tuple[DetectionDataset, DetectionDataset]:
    """(train, val) datasets for a `--data` spec.

    shapes[:train=N,val=M,seed=S]   the built-in synthetic set (held-out val split)
    """
    name, _, options = data.partition(":")
    if name == "shapes":
        opts = _parse_options(options)
        unknown = set(opts) - {"train", "val", "seed"}
        if unknown:
            raise DatasetError(f"unknown shapes option(s) {sorted(unknown)}; use train=, val=, seed=")
        return shapes_splits(**opts)
    raise DatasetError(f"unknown dataset {data!r}")


__all__ = ["DatasetError", "DetectionDataset", "Sample", "ShapesDataset", "build_datasets", "shapes_splits"]
