"""TXT lines: one image per line, its boxes after it.

    images/0001.jpg 48,240,195,371,0 8,12,352,498,14
    images/0002.jpg                                     (no objects: a background image)

- the path is relative to the TXT file's folder (absolute paths work too) and cannot
  contain spaces: fields are separated by whitespace;
- each box is x1,y1,x2,y2,class: pixel-edge coordinates (0..width) of the top-left and
  bottom-right corners, and an integer class index counted from 0 into the class list;
- the class list is an explicit list, else `classes.txt` next to the TXT file, one name
  per line (line k names class index k). Without one the reader stops with an error
  rather than invent names; a class index outside the list is an error naming the line;
- blank lines and lines starting with # are ignored.

Image sizes come from the image headers (read at construction, no decoding). Image ids
are 1..N in line order.
"""
from __future__ import annotations

from pathlib import Path

from runtimes.base import is_file

from .base import DatasetError
from .files import FileDataset, ImageRecord, image_size, read_class_names

BOX_FORMAT = "x1,y1,x2,y2,class"


def _parse_box(token: str, where: str, num_classes: int, classes_source: str) -> tuple[list[float], int]:
    parts = token.split(",")
    try:
        if len(parts) != 5:
            raise ValueError
        box = [float(v) for v in parts[:4]]
        cls = int(parts[4])
    except ValueError:
        raise DatasetError(f"{where}: bad box {token!r} (expected {BOX_FORMAT}, class an integer)") from None
    if not 0 <= cls < num_classes:
        raise DatasetError(f"{where}: class index {cls} out of range 0..{num_classes - 1} ({classes_source})")
    return box, cls


class TxtDataset(FileDataset):
    """A TXT annotation file; see the module docstring for the format."""

    def __init__(self, path: str | Path, classes: list[str] | None = None, name: str | None = None):
        path = Path(path)
        if classes is None:
            classes_file = path.parent / "classes.txt"
            if not classes_file.is_file():
                raise DatasetError(f"{path}: no {classes_file.name} next to it to name the classes "
                                   "(one name per line; line k names class index k)")
            classes, classes_source = read_class_names(classes_file), str(classes_file)
        else:
            classes_source = f"{len(classes)} classes given"
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except FileNotFoundError:
            raise DatasetError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path}: cannot read ({e})") from None

        records = []
        for lineno, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{path}:{lineno}"
            image_path = path.parent / fields[0]
            if not is_file(image_path):
                raise DatasetError(f"{where}: image {fields[0]} not found (paths are relative to {path.parent})")
            width, height = image_size(image_path, where)
            parsed = [_parse_box(t, where, len(classes), classes_source) for t in fields[1:]]
            records.append(ImageRecord.checked(
                image_path, fields[0], len(records) + 1, width, height,
                [b for b, _ in parsed], [c + 1 for _, c in parsed], [False] * len(parsed), where))
        if not records:
            raise DatasetError(f"{path}: no image lines (expected 'path/to/image.jpg {BOX_FORMAT} ...')")
        super().__init__(records, classes, name or path.name, path)
