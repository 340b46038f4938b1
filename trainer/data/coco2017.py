"""COCO 2017 by name: `coco-val2017` and `coco-train2017`, optionally `:DIR`.

    python benchmarks/run.py --model torchvision:resnet50_fpn --data coco-val2017
    python -m trainer.eval --checkpoint torchvision:resnet50_fpn --data coco-val2017:/data/coco
    python -m trainer --data coco-train2017 --arch resnet50_fpn --weights-backbone imagenet

The folder is DIR, else $COCO_ROOT, else ~/.cache/frcnn-deploy/coco ($XDG_CACHE_HOME
honoured), in COCO's own layout: annotations/instances_<split>.json and <split>/*.jpg.
A split found there is used as it is. Otherwise the missing parts are downloaded from
images.cocodataset.org into that folder (annotations 241 MB, val2017 778 MB, train2017
18 GB): each zip is checked against its published MD5, resumed where an earlier try
stopped (trainer.download), extracted into a hidden folder that is renamed into place only
when complete, and then deleted. Offline, the one-line error says where to put the zip by
hand; the next run checks and extracts it.

coco-train2017 trains on train2017 and validates on val2017 (COCO's own split; both are
fetched). coco-val2017 is an evaluation set: val2017 is its validation split and its
training split alike (train on coco-train2017).
"""
from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tqdm import tqdm

from ..download import Checksum, DownloadError, fetch
from .base import DatasetError
from .coco import CocoDataset

SPLITS = ("train2017", "val2017")


@dataclass(frozen=True)
class Archive:
    url: str
    checksum: Checksum
    members: str  # the part of the zip this project uses: a prefix of member names


# cocodataset.org publishes no checksums. These MD5s are the ones dataset tools publish: the
# same three values in mlverse/torchvision R/dataset-coco.R (coco_detection_dataset's
# resources) and in intel/neural-compressor
# examples/pytorch/fx/object_detection/maskrcnn/download_dataset.sh (its md5sum listing).
# dmlc/gluon-cv scripts/datasets/mscoco.py publishes SHA-1s of the same zips instead.
# Only the instances JSONs of the annotations zip are extracted.
ARCHIVES = {
    "annotations": Archive("http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
                           Checksum("md5", "f4bbac642086de4f52a3fdda2de5fa2c"), "annotations/instances_"),
    "val2017": Archive("http://images.cocodataset.org/zips/val2017.zip",
                       Checksum("md5", "442b8da7639aecaf257c1dceb8ba8c80"), "val2017/"),
    "train2017": Archive("http://images.cocodataset.org/zips/train2017.zip",
                         Checksum("md5", "cced6f7f71b7629ddf16f17bbcfab6b2"), "train2017/"),
}


def parse(spec: str) -> tuple[str, Path | None] | None:
    """("val2017", DIR or None) for "coco-val2017[:DIR]"; None for any other spec."""
    name, _, folder = spec.partition(":")
    if not name.startswith("coco-"):
        return None
    split = name[len("coco-"):]
    if split not in SPLITS:
        raise DatasetError(f"{spec}: unknown COCO split; use {' or '.join('coco-' + s for s in SPLITS)}[:DIR]")
    return split, Path(folder).expanduser() if folder else None


def default_root() -> Path:
    if os.environ.get("COCO_ROOT"):
        return Path(os.environ["COCO_ROOT"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "frcnn-deploy" / "coco"


def split_dataset(split: str, root: Path | None = None, download: bool = True) -> CocoDataset:
    """One COCO 2017 split under `root` (default_root() when None), fetched first when missing."""
    root = Path(root) if root is not None else default_root()
    annotations = root / "annotations" / f"instances_{split}.json"
    images = root / split
    missing = [p for p, present in ((annotations, annotations.is_file()), (images, images.is_dir())) if not present]
    if missing:
        where = "set COCO_ROOT or use coco-" + split + ":DIR for another folder"
        if not download:
            raise DatasetError(f"coco-{split}: {missing[0]} not found ({where})")
        print(f"coco-{split}: {', '.join(str(p) for p in missing)} not there: downloading into {root} ({where})",
              flush=True)
        if not annotations.is_file():
            install(ARCHIVES["annotations"], root)
        if not images.is_dir():
            install(ARCHIVES[split], root)
    return CocoDataset(annotations, images, name=f"coco-{split}")


def install(archive: Archive, root: Path, progress: bool = True) -> None:
    """Download (or resume, or take a zip put there by hand), verify, extract, delete the zip."""
    zip_path = root / Path(urlparse(archive.url).path).name
    try:
        fetch(archive.url, zip_path, archive.checksum, resume=True, progress=progress)
    except DownloadError as e:
        raise DatasetError(str(e)) from None
    extract(zip_path, root, archive.members, progress)
    zip_path.unlink()


def extract(zip_path: Path, root: Path, prefix: str, progress: bool = True) -> None:
    """The members of `zip_path` named `prefix`* into `root`, complete or not at all: they are
    extracted into a hidden folder (CRC-checked as they are read) and moved into place after."""
    top = prefix.split("/")[0]
    staging = root / f".{zip_path.stem}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = [m for m in zf.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
            if not members:
                raise DatasetError(f"{zip_path}: holds no {prefix}* files (not COCO's archive?)")
            for m in tqdm(members, desc=f"extracting {zip_path.name}", unit="file", disable=not progress,
                          leave=False):
                zf.extract(m, staging)  # ZipFile.extract drops absolute paths and '..'
        source, target = staging / top, root / top
        if target.exists():  # annotations/ may hold the other split's file already
            for f in source.iterdir():
                os.replace(f, target / f.name)
        else:
            os.replace(source, target)
    except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(f"{zip_path}: cannot extract ({' '.join(str(e).split())}); delete it and run "
                           "again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def open_splits(split: str, root: Path | None, download: bool = True) -> tuple[CocoDataset, CocoDataset]:
    """(train, val) for coco-<split>: see the module docstring."""
    val = split_dataset("val2017", root, download)
    return (split_dataset("train2017", root, download) if split == "train2017" else val), val
