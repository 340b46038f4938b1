"""Datasets: the built-in `shapes` set and readers for COCO JSON, Pascal VOC XML and TXT lines.

`build_datasets(spec)` turns the trainer's `--data` argument into (train, val) datasets.
Every reader yields `Sample`s in original-image pixels with labels 1..C; training uses
`sample.without_crowd()` (crowd and VOC difficult boxes count for evaluation only).
"""
from __future__ import annotations

from pathlib import Path

from runtimes.base import is_dir, is_file

from . import coco2017
from .base import DatasetError, DetectionDataset, Sample
from .coco import CocoDataset
from .files import FileDataset, hold_out
from .txt import TxtDataset
from .voc import VocDataset, voc_splits

ACCEPTED = ("shapes[:train=N,val=M,seed=S]; coco-val2017 or coco-train2017[:DIR] (found or downloaded); "
            "a COCO instances .json (or a folder with annotations.json); "
            "a TXT .txt of 'image x1,y1,x2,y2,class ...' lines; a Pascal VOC folder (Annotations/ or *.xml); "
            "coco:PATH, voc:PATH or txt:PATH to force the format")
FORMATS = ("coco", "voc", "txt")


def _parse_options(text: str) -> dict[str, int]:
    opts = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if not (value.isascii() and value.isdigit()):  # (str.isdigit alone takes "²")
            raise DatasetError(f"bad dataset option {part!r} (expected key=integer)")
        opts[key.strip()] = int(value)
    return opts


def _detect(path: Path) -> str | None:
    if is_dir(path):
        if is_dir(path / "Annotations") or any(path.glob("*.xml")):
            return "voc"
        if is_file(path / "annotations.json"):
            return "coco"
        return None
    return {".json": "coco", ".txt": "txt"}.get(path.suffix.lower())


def _open(spec: str, classes: list[str] | None = None,
          download: bool = True) -> tuple[DetectionDataset, DetectionDataset | None]:
    """The dataset a spec names, and its own validation split when the format has one."""
    coco_name = coco2017.parse(spec)
    if coco_name:
        return coco2017.open_splits(*coco_name, download=download)
    name, sep, rest = spec.partition(":")
    if name == "shapes":
        opts = _parse_options(rest)
        unknown = set(opts) - {"train", "val", "seed"}
        if unknown:
            raise DatasetError(f"unknown shapes option(s) {sorted(unknown)}; use train=, val=, seed=")
        from .shapes import shapes_splits

        return shapes_splits(**opts)
    fmt, text = (name, rest) if sep and name in FORMATS else (None, spec)
    path = Path(text)
    if not text.strip() or not (is_file(path) or is_dir(path)):
        raise DatasetError(f"{spec}: no such file or folder; a dataset is one of: {ACCEPTED}")
    fmt = fmt or _detect(path)
    if fmt == "coco":
        return CocoDataset(path / "annotations.json" if is_dir(path) else path), None
    if fmt == "txt":
        return TxtDataset(path, classes), None
    if fmt == "voc":
        splits = voc_splits(path)
        if splits is None:
            return VocDataset(path, classes=classes), None
        train = VocDataset(path, splits[0], classes)
        return train, VocDataset(path, splits[1], train.class_names)
    raise DatasetError(f"{spec}: not a dataset format this trainer reads; a dataset is one of: {ACCEPTED}")


def build_datasets(data: str, val: str | None = None,
                   download: bool = True) -> tuple[DetectionDataset, DetectionDataset]:
    """(train, val) datasets for the trainer's `--data` and optional `--val-data` specs.

    shapes[:train=N,val=M,seed=S]   the built-in synthetic set (held-out val split)
    coco-train2017, coco-val2017[:DIR]  COCO 2017 by name, found under DIR or $COCO_ROOT, or
                                    downloaded when `download` (see trainer.data.coco2017)
    PATH.json | DIR/annotations.json  COCO instances JSON (see trainer.data.coco)
    PATH.txt                        TXT lines, classes.txt beside it (see trainer.data.txt)
    DIR with Annotations/ or *.xml  Pascal VOC (see trainer.data.voc); its
                                    ImageSets/Main/{train,val}.txt split when present
    coco:PATH, voc:PATH, txt:PATH   the same, format forced

    The validation set is `val` when given (its val split for a VOC folder with one), else
    the format's own val split, else a deterministic 10% (at least 1 image) held out of
    `data`. A VOC or TXT validation set takes the training set's class list, so labels
    agree; otherwise differing classes are an error.
    """
    train, own_val = _open(data, download=download)
    if val is not None:
        val_set, val_split = _open(val, classes=train.class_names, download=download)
        val_set = val_split or val_set
        if isinstance(val_set, (VocDataset, TxtDataset)):
            val_set.category_ids = train.category_ids  # same names by construction
    elif own_val is not None:
        val_set = own_val
    elif isinstance(train, FileDataset):
        train, val_set = hold_out(train)
    else:
        raise DatasetError(f"{data}: no validation split; give one with --val-data")
    if (val_set.class_names, val_set.label_category_ids()) != (train.class_names, train.label_category_ids()):
        raise DatasetError(f"{val or data}: classes {val_set.class_names} (ids {val_set.label_category_ids()[1:]}) "
                           f"differ from the training set's {train.class_names} "
                           f"(ids {train.label_category_ids()[1:]})")
    return train, val_set


def validation_set(data: str, val: str | None = None, download: bool = True) -> DetectionDataset:
    """The validation split build_datasets would give, without reading COCO train2017 for it."""
    coco_name = coco2017.parse(val or data)
    if coco_name:
        return coco2017.split_dataset("val2017", coco_name[1], download)
    return build_datasets(data, val, download)[1]


def __getattr__(name: str):
    # shapes is imported on first use, so that `python -m trainer.data.shapes` runs it fresh
    if name in ("ShapesDataset", "shapes_splits"):
        from . import shapes

        return getattr(shapes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CocoDataset", "DatasetError", "DetectionDataset", "FileDataset", "Sample", "ShapesDataset",
           "TxtDataset", "VocDataset", "build_datasets", "hold_out", "shapes_splits", "validation_set"]
