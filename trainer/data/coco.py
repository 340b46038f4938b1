"""COCO instances JSON plus an image folder.

    CocoDataset("annotations.json")                    # images found next to it (see below)
    CocoDataset("annotations/instances_val2017.json")  # the COCO layout: ../val2017/*.jpg

Images: `file_name` is resolved against `image_root` when given, else against the first of
these folders that holds the first image: the JSON's folder, its `images/` subfolder, the
COCO layout's `../val2017` for `instances_val2017.json`, the JSON's parent folder.
(`python -m trainer.data.shapes --out DIR` writes DIR/annotations.json with
`file_name` "images/000000.jpg", found from the JSON's folder.) Every image must exist.

Labels: the categories sorted by id are model labels 1..C; `category_ids` keeps the
original ids, so results JSON and COCOeval use them.

Boxes: COCO `bbox` is x, y, width, height in pixels -> x1 y1 x2 y2. Boxes are clipped to
the image and those with no area left dropped, both counted, as torchvision's detection
references keep only x2 > x1 and y2 > y1 after clamping.

Crowds: `iscrowd=1` annotations are kept with `Sample.iscrowd` set, so they count in
evaluation (COCOeval ignores detections that match them) but are never training targets:
the training loader uses `sample.without_crowd()`.

Images without annotations are kept, for training too. torchvision's references drop them
from the training set; we keep them because FasterRCNN trains on empty targets
(background-only images teach it what is not an object) and a labeller who leaves an image
empty usually means "nothing here".

Evaluation: `coco_dict()` gives the file's own annotations of this dataset's images (areas
from the file, every box as written), so mAP equals pycocotools' on the original file, as
with torchvision's `get_coco_api_from_dataset`.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from runtimes.base import is_file
from runtimes.meta import is_finite_number as _is_number

from .base import DatasetError
from .files import FileDataset, ImageRecord, image_size

# Evaluation ground truth kept per image, compactly (a dict per annotation costs ~1 kB).
_GT_FIELDS = ("id", "category_id", "x", "y", "w", "h", "area", "iscrowd")


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None
    if not text.strip():
        raise DatasetError(f"{path}: empty file (expected COCO instances JSON)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise DatasetError(f"{path}: invalid JSON ({e})") from None
    except RecursionError:
        raise DatasetError(f"{path}: invalid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: no {key!r} list (not a COCO instances file?)")
    if not data["categories"]:
        raise DatasetError(f"{path}: empty 'categories' list")
    return data


# json.loads gives int and float (and bool, which must not pass as a number). Exact type
# checks: isinstance against the numbers ABCs is slow over a million annotations.
MAX_ID = 2 ** 53  # ids travel as float64 in the compact ground truth (exact up to 2**53)


def _is_int(v) -> bool:
    return type(v) is int


def _is_id(v) -> bool:
    return type(v) is int and -MAX_ID <= v <= MAX_ID


def _check_records(path: Path, data: dict) -> None:
    """The fields the reader and pycocotools rely on, so a bad file gets a one-line error."""
    image_ids, cat_ids = set(), set()
    for i, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not _is_id(c.get("id")) or not isinstance(c.get("name"), str):
            raise DatasetError(f"{path}: categories[{i}]: needs an integer 'id' and a 'name'")
        if c["id"] in cat_ids:
            raise DatasetError(f"{path}: categories[{i}]: category id {c['id']} appears twice")
        cat_ids.add(c["id"])
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not _is_id(im.get("id")) or not isinstance(im.get("file_name"), str):
            raise DatasetError(f"{path}: images[{i}]: needs an integer 'id' and a 'file_name'")
        if im["id"] in image_ids:
            raise DatasetError(f"{path}: images[{i}]: image id {im['id']} appears twice")
        image_ids.add(im["id"])
    for i, a in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(a, dict) or not _is_id(a.get("id")):
            raise DatasetError(f"{where}: needs an integer 'id'")
        where += f" (id {a['id']})"
        if not _is_int(a.get("image_id")) or a["image_id"] not in image_ids:  # (a list is unhashable)
            raise DatasetError(f"{where}: image_id {a.get('image_id')!r} is not in 'images'")
        if not _is_int(a.get("category_id")) or a["category_id"] not in cat_ids:
            raise DatasetError(f"{where}: unknown category_id {a.get('category_id')!r} "
                               f"(categories: {sorted(cat_ids)})")
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(map(_is_number, bbox))):
            raise DatasetError(f"{where}: 'bbox' must be [x, y, width, height] of finite numbers, got {bbox!r}")
        if "area" in a and not _is_number(a["area"]):
            raise DatasetError(f"{where}: 'area' must be a number, got {a['area']!r}")


def _index(data: dict):
    """pycocotools' index (annotations per image, categories by id) of an already checked dict.

    Not runtimes.coco.load_gt: that deep-copies the dict, which takes minutes for COCO train.
    """
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress lines
        coco.createIndex()
    return coco


def _image_root(path: Path, first_file: str) -> Path:
    folder = path.parent
    candidates = [folder, folder / "images"]
    if path.stem.startswith("instances_"):  # annotations/instances_val2017.json -> val2017/
        candidates.append(folder.parent / path.stem[len("instances_"):])
    candidates.append(folder.parent)
    for root in candidates:
        if is_file(root / first_file):
            return root
    raise DatasetError(f"{path}: image {first_file!r} not found in any of "
                       f"{', '.join(str(c) for c in candidates)} (pass the image folder explicitly)")


class CocoDataset(FileDataset):
    """A COCO instances file and its images; see the module docstring for the conventions."""

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None, name: str | None = None):
        path = Path(annotations)
        data = _read_json(path)
        _check_records(path, data)
        if not data["images"]:
            raise DatasetError(f"{path}: no images")
        coco = _index(data)
        categories = sorted(coco.cats.values(), key=lambda c: c["id"])
        label_of = {c["id"]: k for k, c in enumerate(categories, start=1)}
        root = Path(image_root) if image_root is not None else _image_root(path, data["images"][0]["file_name"])

        records, self._gt = [], {}
        for im in data["images"]:
            image_path = root / im["file_name"]
            where = f"{path}: image id {im['id']} ({im['file_name']})"
            if not is_file(image_path):
                raise DatasetError(f"{where}: {image_path} not found")
            width, height = im.get("width"), im.get("height")
            if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
                width, height = image_size(image_path, where)
            anns = coco.imgToAnns.get(im["id"], [])
            xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            crowd = [bool(a.get("iscrowd", 0)) for a in anns]
            records.append(ImageRecord.checked(
                image_path, im["file_name"], im["id"], width, height, boxes,
                [label_of[a["category_id"]] for a in anns], crowd, where))
            self._gt[im["id"]] = np.array(
                [[a["id"], a["category_id"], *a["bbox"], a.get("area", a["bbox"][2] * a["bbox"][3]), c]
                 for a, c in zip(anns, crowd)], np.float64).reshape(-1, len(_GT_FIELDS))
        super().__init__(records, [c["name"] for c in categories], name or path.name, path,
                         category_ids=[c["id"] for c in categories])
        self.image_root = root

    def coco_dict(self) -> dict:
        """The file's own ground truth for this dataset's images (see the module docstring)."""
        images, annotations = [], []
        for r in self.records:
            images.append(dict(id=r.image_id, file_name=r.file_name, height=r.height, width=r.width))
            for ann_id, cat, x, y, w, h, area, crowd in self._gt[r.image_id].tolist():
                annotations.append(dict(id=int(ann_id), image_id=r.image_id, category_id=int(cat),
                                        bbox=[x, y, w, h], area=area, iscrowd=int(crowd)))
        categories = [dict(id=cid, name=n) for cid, n in zip(self.category_ids, self.class_names)]
        return dict(images=images, annotations=annotations, categories=categories)
