"""Pascal VOC XML, as the VOC devkit, labelImg and CVAT's "Pascal VOC" export write it.

Layouts:
    ROOT/Annotations/*.xml + ROOT/JPEGImages/        (the devkit's and CVAT's)
    ROOT/*.xml next to the images                     (labelImg's default)
An XML's image is `<filename>` in the image folder, else the XML's stem with an image
extension. Splits: ROOT/ImageSets/Main/{train,val}.txt (or {trainval,test}.txt) list XML
stems, one per line; `voc_splits(root)` says which pair exists.

Classes: an explicit list, else ROOT/classes.txt (one name per line), else every name in
the folder's XMLs, sorted (for VOC's 20 classes that is the devkit's order). Objects whose
name is not in the list are skipped and counted per name ("objects of unknown class 'dgo'"):
an explicit list is how one trains on a subset of the classes, and the count shows typos.

Boxes: VOC coordinates are 1-based inclusive pixel indices (xmin=1, xmax=W spans the whole
image), so the box in pixel-edge coordinates is (xmin - 1, ymin - 1, xmax, ymax), as in
detectron2's VOC reader; the devkit's own area is (xmax - xmin + 1) * (ymax - ymin + 1),
the same width. Boxes outside the image are clipped and counted (labelImg writes xmin=0
at the left edge, which becomes -1 and is clipped).

`<difficult>1` objects are treated like COCO crowds: kept for evaluation with
`Sample.iscrowd` set (COCOeval then ignores detections that match them, as the devkit
ignores difficult objects), never training targets (`sample.without_crowd()`).

Image ids are 1..N in the sorted order of all the folder's XML stems, so the train and val
splits of one folder never share an id.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from runtimes.base import is_file

from .base import DatasetError
from .files import IMAGE_EXTENSIONS, FileDataset, ImageRecord, image_size, read_class_names

SPLIT_PAIRS = (("train", "val"), ("trainval", "test"))


def _layout(root: Path) -> tuple[Path, Path]:
    """(XML folder, image folder)."""
    if (root / "Annotations").is_dir():
        return root / "Annotations", root / "JPEGImages"
    return root, root


def voc_splits(root: str | Path) -> tuple[str, str] | None:
    """The (train, val) split names whose lists exist under ImageSets/Main, or None."""
    main = Path(root) / "ImageSets" / "Main"
    for pair in SPLIT_PAIRS:
        if all((main / f"{s}.txt").is_file() for s in pair):
            return pair
    return None


def _text(element, tag: str) -> str | None:
    child = element.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def parse_xml(path: Path) -> dict:
    """One VOC annotation file: filename, width, height (0 when absent) and its objects."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        if path.stat().st_size == 0:
            raise DatasetError(f"{path}: empty file (expected a VOC <annotation>)") from None
        # str(e) is "mismatched tag: line 3, column 4"
        raise DatasetError(f"{path}: line {e.position[0]}: malformed XML ({str(e).split(':')[0]})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or e})") from None
    except LookupError as e:  # <?xml encoding="..."?> naming an encoding Python does not know
        raise DatasetError(f"{path}: cannot read ({e})") from None
    if root.tag != "annotation":
        raise DatasetError(f"{path}: root element is <{root.tag}>, expected <annotation> (not a VOC file?)")
    size = root.find("size")
    dims = []
    for tag in ("width", "height"):
        value = None if size is None else _text(size, tag)
        try:
            dims.append(int(float(value)) if value else 0)
        except (ValueError, OverflowError):  # OverflowError: "1e999", infinite
            raise DatasetError(f"{path}: <size><{tag}> is {value!r}, not a number") from None
    objects = []
    for k, obj in enumerate(root.findall("object"), start=1):
        name = _text(obj, "name")
        if not name:
            raise DatasetError(f"{path}: object {k} has no <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(f"{path}: object {k} ({name}) has no <bndbox>")
        coords = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            value = _text(bndbox, tag)
            try:
                coords.append(float(value))
            except (TypeError, ValueError):
                raise DatasetError(f"{path}: object {k} ({name}): <{tag}> is {value!r}, not a number") from None
        difficult = (_text(obj, "difficult") or "0").lower() in ("1", "true")
        objects.append((name, coords, difficult))
    return dict(filename=_text(root, "filename"), width=dims[0], height=dims[1], objects=objects)


def voc_class_names(root: str | Path) -> list[str]:
    """Every object name in the folder's XMLs, sorted."""
    xml_dir, _ = _layout(Path(root))
    return sorted({name for p in xml_dir.glob("*.xml") for name, _, _ in parse_xml(p)["objects"]})


def _find_image(image_dir: Path, filename: str | None, stem: str) -> Path | None:
    candidates = [image_dir / filename] if filename else []
    candidates += [image_dir / (stem + ext) for ext in IMAGE_EXTENSIONS]
    return next((p for p in candidates if is_file(p)), None)


def _split_stems(root: Path, split: str, known: set[str]) -> list[str]:
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"{root}: no split list {path}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read split list ({e})") from None
    stems = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        stem = line.split()[0]
        if stem not in known:
            raise DatasetError(f"{path}:{lineno}: no annotation file {stem}.xml")
        stems.append(stem)
    if not stems:
        raise DatasetError(f"{path}: empty split list")
    return stems


class VocDataset(FileDataset):
    """A VOC folder (or one split of it); see the module docstring for the conventions."""

    def __init__(self, root: str | Path, split: str | None = None, classes: list[str] | None = None,
                 name: str | None = None):
        root = Path(root)
        xml_dir, image_dir = _layout(root)
        xml_files = sorted(xml_dir.glob("*.xml"))
        if not xml_files:
            raise DatasetError(f"{xml_dir}: no .xml annotation files")
        image_id = {p.stem: i for i, p in enumerate(xml_files, start=1)}
        stems = _split_stems(root, split, set(image_id)) if split else list(image_id)
        if classes is None:
            classes_file = root / "classes.txt"
            classes = read_class_names(classes_file) if classes_file.is_file() else voc_class_names(root)
            if not classes:
                raise DatasetError(f"{xml_dir}: no objects in any XML and no classes.txt to name the classes")
        label_of = {n: k for k, n in enumerate(classes, start=1)}

        records = []
        for stem in stems:
            xml = xml_dir / f"{stem}.xml"
            ann = parse_xml(xml)
            image_path = _find_image(image_dir, ann["filename"], stem)
            if image_path is None:
                raise DatasetError(f"{xml}: image {ann['filename'] or stem + '.*'} not found in {image_dir}")
            width, height = ann["width"], ann["height"]
            if width <= 0 or height <= 0:  # labelImg/CVAT write <size>, hand-made files may not
                width, height = image_size(image_path, str(xml))
            skipped, boxes, labels, difficult = Counter(), [], [], []
            for obj_name, (x1, y1, x2, y2), diff in ann["objects"]:
                if obj_name not in label_of:
                    skipped[f"objects of unknown class {obj_name!r}"] += 1
                    continue
                boxes.append([x1 - 1, y1 - 1, x2, y2])
                labels.append(label_of[obj_name])
                difficult.append(diff)
            records.append(ImageRecord.checked(
                image_path, Path(os.path.relpath(image_path, root)).as_posix(), image_id[stem], width, height,
                boxes, labels, difficult, str(xml), skipped))
        super().__init__(records, classes, name or (f"{root.name}/{split}" if split else root.name), root)
