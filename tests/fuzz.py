"""Fuzzing every input the toolkit reads: datasets, model files and detector inputs.

The rule (issue 16): a bad input ends in a one-line DatasetError, ModelLoadError or ImageError,
or in a counted skip, never in another exception; an input that is accepted gives well-formed
output (samples, ground truth, detections). Each target starts from a valid input written to a
fresh temporary folder, lets hypothesis mutate it (structure, JSON/XML types, non-finite and
huge numbers, encodings, truncation, images, file names), runs it through the public entry
point (`build_datasets`, `runtimes.load`, `detector(image)`) and checks that rule.

    python -m pytest -q tests/test_fuzz.py       # bounded example counts, fixed seed (CI)
    python -m tests.fuzz --minutes 10            # a longer random run; prints the case counts

The mutation classes, per target:
- coco, voc, txt: the annotation file's structure (delete, duplicate, wrap, retype nodes), wrong
  JSON types, non-finite / huge / unicode-digit numbers, text encodings and byte damage,
  truncation; images missing, empty, truncated, undecodable, another size, 16-bit, grey,
  RGBA, a header claiming a huge size, a folder in their place; file names too long, with
  NUL or line breaks, absolute or pointing outside the data folder; class lists and split lists.
- spec: dataset spec strings (shapes options, format prefixes, odd paths).
- model files: every artifact kind (.onnx, .xml/.bin, run dir .safetensors/.json, .pth,
  .engine + .engine.json) truncated, byte-damaged, emptied, deleted, swapped for another
  format; their metadata (ONNX metadata_props, OpenVINO rt_info, JSON sidecars, the
  safetensors header) with mutated JSON; IR layer attributes mutated.
- detector inputs: every dtype, 0-5 dimensions, empty and huge arrays, NaN and inf,
  non-contiguous views, array subclasses, non-arrays, lists of them, odd thresholds.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import runtimes
from runtimes import Detections, ImageError, ModelLoadError
from trainer.data import DatasetError, build_datasets

ALLOWED = (DatasetError, ModelLoadError, ImageError)
COUNTS: Counter = Counter()  # (target, outcome) -> cases; outcomes: accepted, skipped, error

# ------------------------------------------------------------------ odd values
ODD_STRINGS = [
    "", " ", "0", "-1", "00", "1e400", "-1e400", "1e-400", "nan", "NaN", "inf", "-inf", "Infinity", "0x10",
    "1_000", "٣", "²", "１２", "9" * 400, "3.", ".5", "1,2", "true", "null", "None",
    "../" * 8 + "etc/passwd", "/etc/passwd", "/dev/zero", "/dev/stdin", "/proc/self/mem", "/", ".", "..", "~",
    "a" * 300, "a" * 5000, "d/" * 2100 + "x.jpg", "images/", "im\x00g.jpg", "a\nb.jpg", "a\rb", "line\u2028sep",
    "\ud800", "é.jpg", "日本.png", "x" + "\u0301" * 50, "\t", "%s%n", "{}", "[]", "<a/>", "&amp;",
]
ODD_NUMBERS = [0, -1, 1, 2, 255, 256, 2**31, 2**31 - 1, 2**53 + 1, 2**63, 2**64, 10**20, 10**400, -10**400,
               1e308, -1e308, 1.7976931348623157e308, 5e-324, float("inf"), float("-inf"), float("nan"), 0.5,
               -0.0, 1e-7, 12.999999]
scalars = st.one_of(st.none(), st.booleans(), st.sampled_from(ODD_NUMBERS), st.integers(),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(ODD_STRINGS),
                    st.text(max_size=12))
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=8)
LONG_NAMES = ["a" * 256, "a" * 300, "a" * 5000, "d/" * 2100 + "x.jpg", "../" * 40 + "x.jpg", "/" + "x" * 255 + "/y"]
wrong_types = st.sampled_from([None, True, False, [], {}, [1], [[1, 2, 3, 4]], {"a": 1}, "1", "", 1.5, 10**400,
                               float("nan"), "images/a.jpg"])


def odd_for(node):
    """A strategy of values that stand where `node` was: odd ones of its own type, or another type."""
    if isinstance(node, bool) or node is None:
        mine = st.sampled_from([0, 1, 2, -1, "1", "true"])
    elif isinstance(node, (int, float)):
        mine = st.sampled_from(ODD_NUMBERS) | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    elif isinstance(node, str):
        mine = st.sampled_from(ODD_STRINGS + LONG_NAMES) | st.text(max_size=12)
    elif isinstance(node, list):
        mine = st.sampled_from([[], [None], node[:1], node * 3 if len(node) < 10 else node]) | st.lists(scalars, max_size=5)
    else:
        mine = st.sampled_from([{}, {"id": 1}])
    return st.one_of(mine, mine, wrong_types, json_values)


odd_texts = st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=20),
                      st.sampled_from(ODD_NUMBERS).map(repr), st.integers().map(str),
                      st.floats(allow_nan=True, allow_infinity=True).map(repr))


def json_paths(node, path=()):
    """Every path (tuple of keys / indices) to a node of a JSON tree, the root included."""
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from json_paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from json_paths(v, path + (i,))


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def mutate_json(data, draw, max_mutations: int = 3):
    """`data` (a JSON tree) with 1..max_mutations structural or type mutations."""
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = list(json_paths(data))
        leaves = [p for p in paths if not isinstance(_at(data, p), (dict, list))]
        path = draw(st.sampled_from(leaves) if leaves and draw(st.integers(0, 3)) else st.sampled_from(paths))
        op = draw(st.sampled_from(["replace"] * 6 + ["delete", "duplicate", "wrap", "stringify", "add_key", "empty",
                                                     "nest"]))
        node = _at(data, path)
        if op == "replace":  # (copies: a drawn constant or a piece of the tree must not end up shared)
            new = copy.deepcopy(draw(odd_for(node)))
        elif op == "wrap":
            new = [node]
        elif op == "stringify":
            new = json.dumps(node) if draw(st.booleans()) else str(node)
        elif op == "empty":
            new = type(node)() if isinstance(node, (dict, list, str)) else None
        elif op == "nest":
            new = node
            for _ in range(draw(st.integers(2, 50))):
                new = [new]
        elif op == "add_key" and isinstance(node, dict):
            node[draw(st.sampled_from(["id", "name", "width", "bbox", "iscrowd", "area", "format"]) | st.text(max_size=6))] \
                = copy.deepcopy(draw(json_values))
            continue
        elif op == "duplicate" and path and isinstance(_at(data, path[:-1]), list):
            _at(data, path[:-1]).insert(path[-1], copy.deepcopy(node))
            continue
        elif op == "delete" and path:
            parent = _at(data, path[:-1])
            del parent[path[-1]]
            continue
        else:
            new = copy.deepcopy(draw(odd_for(node)))
        if path:
            _at(data, path[:-1])[path[-1]] = new
        else:
            data = new
    return data


ENCODINGS = ["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "utf-8-sig", "utf-7"]


def mutate_bytes(data: bytes, draw) -> bytes:
    """`data` damaged once: truncated, bytes flipped / inserted / deleted, re-encoded, emptied, replaced."""
    op = draw(st.sampled_from(["truncate", "truncate", "flip", "flip", "insert", "delete", "encode", "bom",
                               "empty", "garbage", "double", "nul"]))
    n = len(data)
    if op == "truncate":
        return data[: draw(st.integers(0, max(n - 1, 0)))]
    if op == "flip" and n:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 16))):
            out[draw(st.integers(0, n - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if op == "insert":
        at = draw(st.integers(0, n))
        return data[:at] + draw(st.binary(min_size=1, max_size=32) | st.sampled_from([b"\xff\xfe", b"\x00", b"\xc3("]))\
            + data[at:]
    if op == "delete" and n:
        at = draw(st.integers(0, n - 1))
        return data[:at] + data[at + draw(st.integers(1, 64)):]
    if op == "encode":
        encoding = draw(st.sampled_from(ENCODINGS))
        return data.decode("utf-8", "replace").encode(encoding, "replace")
    if op == "bom":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff"])) + data
    if op == "empty":
        return b""
    if op == "garbage":
        return draw(st.binary(max_size=256))
    if op == "double":
        return data + data
    if op == "nul":
        return data.replace(b" ", b"\x00", draw(st.integers(1, 4)))
    return data


# ------------------------------------------------------------------ images
def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose pixel data is a few bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def encoded_image(width: int, height: int, ext: str = ".jpg", seed: int = 0, channels: int = 3,
                  dtype=np.uint8) -> bytes:
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    pixels = rng.integers(0, top, (height, width, channels) if channels > 1 else (height, width)).astype(dtype)
    ok, buf = cv2.imencode(ext, pixels)
    assert ok
    return buf.tobytes()


IMAGE_DAMAGE = ["delete", "empty", "truncate", "garbage", "text", "other_size", "sixteen_bit", "grey", "rgba",
                "tiny", "huge_header", "absurd_header", "folder", "png_as_jpg", "flip"]


def damage_image(path: Path, size: tuple[int, int], draw) -> str:
    """Replace the image at `path` (size (w, h)) by a damaged or unusual one; returns what was done."""
    op = draw(st.sampled_from(IMAGE_DAMAGE))
    data = path.read_bytes() if path.is_file() else b""
    w, h = size
    if path.is_file():
        path.unlink()
    if op == "delete":
        return op
    content = {
        "empty": lambda: b"",
        "truncate": lambda: data[: draw(st.integers(0, max(len(data) - 1, 0)))],
        "garbage": lambda: draw(st.binary(max_size=512)),
        "text": lambda: b"this is not an image\n",
        "other_size": lambda: encoded_image(w + 7, h + 3, path.suffix or ".jpg"),
        "sixteen_bit": lambda: encoded_image(w, h, ".png", dtype=np.uint16),
        "grey": lambda: encoded_image(w, h, ".png", channels=1),
        "rgba": lambda: encoded_image(w, h, ".png", channels=4),
        "tiny": lambda: encoded_image(1, 1, ".png"),
        "huge_header": lambda: png_with_size(12000, 12000),  # PIL reads the size; decoding fails
        "absurd_header": lambda: png_with_size(2**31 - 1, 1),
        "png_as_jpg": lambda: encoded_image(w, h, ".png"),
        "flip": lambda: mutate_bytes(data, draw),
    }
    if op == "folder":
        path.mkdir()
        return op
    path.write_bytes(content[op]())
    return op


# ------------------------------------------------------------------ checks of accepted output
def one_line_error(error: BaseException) -> None:
    message = str(error)
    assert message and len(message.splitlines()) == 1, f"{type(error).__name__} is not one line: {message!r}"


def attempt(call):
    """(call(), None), or (None, the error) for an allowed one-line error; anything else propagates."""
    try:
        return call(), None
    except ALLOWED as e:
        one_line_error(e)
        return None, e


def check_sample(sample, num_classes: int) -> None:
    image = sample.image
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    h, w = image.shape[:2]
    assert h > 0 and w > 0
    boxes, labels = sample.boxes, sample.labels
    assert boxes.dtype == np.float32 and boxes.shape == (len(labels), 4) and np.isfinite(boxes).all()
    assert ((boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= w) & (boxes[:, 3] <= h)).all()
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
    assert labels.dtype == np.int64 and ((labels >= 1) & (labels <= num_classes)).all()
    assert len(sample.crowd) == len(labels)


def check_dataset(ds, max_items: int = 6) -> None:
    """Every sample of a small dataset (the first few of a big one), its ground truth and its
    COCO evaluation against detections equal to the ground truth, and one training item."""
    from runtimes.coco import evaluate, to_coco_results
    from trainer.data import FileDataset
    from trainer.loader import CanvasDataset

    n = len(ds)
    assert n > 0
    indices = sorted({0, n - 1, *range(min(n, max_items))})
    for i in indices:
        check_sample(ds[i], len(ds.class_names))
    item = CanvasDataset(ds, (64, 96), train=True)[(0, True)]
    assert item["image"].shape == (3, 64, 96) and bool(item["boxes"].isfinite().all())
    if isinstance(ds, FileDataset) or n <= max_items:
        gt = ds.coco_dict()
        json.dumps(gt)  # what the trainer and benchmarks write must serialise
        ids = ds.label_category_ids()
        results = [r for i in range(n) for info in [ds.image_info(i)]
                   for r in to_coco_results(info["id"], info["boxes"], np.ones(len(info["labels"])),
                                            info["labels"], ids)]
        stats = evaluate(gt, results)
        assert all(math.isfinite(v) for v in stats.values())
    assert isinstance(ds.skip_report(), str)


def read_dataset(target: str, spec: str) -> None:
    """build_datasets(spec) and everything in it; counts the outcome."""
    def build():
        datasets = build_datasets(spec)
        for ds in datasets:
            check_dataset(ds)
        return datasets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the huge-header images: PIL warns, we refuse
        datasets, error = attempt(build)
    COUNTS[target, "error" if error else "skipped" if any(ds.skipped for ds in datasets) else "accepted"] += 1


@contextlib.contextmanager
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="frcnn-fuzz-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def long_name_or_odd(draw) -> str:
    return draw(st.sampled_from(LONG_NAMES) | st.sampled_from(ODD_STRINGS) | st.text(min_size=1, max_size=40))


# ------------------------------------------------------------------ dataset targets
IMAGE_SIZES = [(48, 32), (40, 40), (33, 57)]  # (w, h)


def write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        w, h = IMAGE_SIZES[k % len(IMAGE_SIZES)]
        (folder / name).write_bytes(encoded_image(w, h, Path(name).suffix, seed=k))


def damage_some_images(folder: Path, names: list[str], draw) -> None:
    for k in draw(st.sets(st.integers(0, len(names) - 1), max_size=2)):
        damage_image(folder / names[k], IMAGE_SIZES[k % len(IMAGE_SIZES)], draw)


COCO_NAMES = ["a.jpg", "b.png", "c.jpg"]


def coco_base() -> dict:
    images = [dict(id=k + 1, file_name=f"images/{n}", width=w, height=h)
              for k, (n, (w, h)) in enumerate(zip(COCO_NAMES, IMAGE_SIZES))]
    annotations = [
        dict(id=1, image_id=1, category_id=1, bbox=[2, 3, 20, 10], area=200.0, iscrowd=0),
        dict(id=2, image_id=1, category_id=7, bbox=[30.5, 4, 40, 40], area=1600.0, iscrowd=0),  # sticks out: clipped
        dict(id=3, image_id=2, category_id=7, bbox=[5, 5, 0, 8], area=0.0, iscrowd=0),  # degenerate: dropped
        dict(id=4, image_id=3, category_id=1, bbox=[1, 1, 30, 50], area=1500.0, iscrowd=1),
    ]
    return dict(images=images, annotations=annotations, categories=[dict(id=1, name="cat"), dict(id=7, name="dog")])


def fuzz_coco(data) -> None:
    draw = data.draw
    with scratch() as root:
        write_images(root / "images", COCO_NAMES)
        tree = coco_base()
        if draw(st.booleans()):
            tree = mutate_json(tree, draw)
        if draw(st.integers(0, 4)) == 0:  # a file name from the odd ones, in one image record
            images = tree.get("images") if isinstance(tree, dict) else None
            records = [im for im in images if isinstance(im, dict)] if isinstance(images, list) else []
            if records:
                draw(st.sampled_from(records))["file_name"] = long_name_or_odd(draw)
        text = json.dumps(tree).encode()
        if draw(st.integers(0, 3)) == 0:
            text = mutate_bytes(text, draw)
        (root / "annotations.json").write_bytes(text)
        if draw(st.booleans()):
            damage_some_images(root / "images", COCO_NAMES, draw)
        read_dataset("coco", draw(st.sampled_from([str(root / "annotations.json"), f"coco:{root}", str(root)])))


VOC_NAMES = ["a", "b", "c"]
VOC_OBJECTS = {"a": [("cat", (3, 4, 20, 15), 0), ("dog", (10, 2, 60, 30), 0)], "b": [("dog", (1, 1, 40, 40), 1)],
               "c": [("cat", (0, 5, 10, 9), 0), ("bird", (2, 2, 8, 8), 0)]}


def voc_xml(stem: str, size: tuple[int, int]) -> ET.Element:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC"
    ET.SubElement(root, "filename").text = f"{stem}.jpg"
    s = ET.SubElement(root, "size")
    for tag, value in zip(("width", "height", "depth"), (*size, 3)):
        ET.SubElement(s, tag).text = str(value)
    for name, box, difficult in VOC_OBJECTS[stem]:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = str(difficult)
        bb = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bb, tag).text = str(value)
    return root


def mutate_xml(root: ET.Element, draw) -> ET.Element:
    """1..3 mutations of an element tree: odd texts, removed / duplicated / renamed elements, attributes."""
    for _ in range(draw(st.integers(1, 3))):
        elements = list(root.iter())
        element = draw(st.sampled_from(elements))
        parents = {c: p for p in root.iter() for c in p}
        op = draw(st.sampled_from(["text", "text", "text", "remove", "duplicate", "rename", "child", "attribute"]))
        if op == "text":
            element.text = draw(odd_texts)
        elif op == "remove" and element in parents:
            parents[element].remove(element)
        elif op == "duplicate" and element in parents:
            parents[element].append(copy.deepcopy(element))
        elif op == "rename":
            element.tag = draw(st.sampled_from(["object", "name", "size", "width", "bndbox", "xmin", "filename",
                                                "difficult", "annotation", "x"]))
        elif op == "child":
            ET.SubElement(element, draw(st.sampled_from(["object", "bndbox", "size", "name", "width"]))).text = \
                draw(odd_texts)
        else:
            element.set(draw(st.sampled_from(["a", "encoding", "value"])), draw(odd_texts).replace("\x00", ""))
    return root


XML_PREAMBLES = [b'<?xml version="1.0" encoding="foo"?>', b'<?xml version="1.0" encoding="utf-16"?>',
                 b'<?xml version="2.0"?>', b'<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
                 b'<!DOCTYPE a [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
                 b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
                 b'<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>']


def xml_bytes(root: ET.Element, draw) -> bytes:
    try:
        data = ET.tostring(root, encoding="utf-8")
    except ValueError:  # a lone surrogate drawn as text: unencodable
        data = ET.tostring(root, encoding="utf-8").decode("utf-8", "replace").encode()
    if draw(st.integers(0, 5)) == 0:
        data = draw(st.sampled_from(XML_PREAMBLES)) + data.split(b"?>", 1)[-1]
    if draw(st.integers(0, 3)) == 0:
        data = mutate_bytes(data, draw)
    return data


def text_lines_damage(lines: list[str], draw) -> bytes:
    """A one-name-per-line file (class list, split list) damaged."""
    op = draw(st.sampled_from(["none", "empty", "dup", "odd", "bytes", "blank"]))
    if op == "empty":
        lines = []
    elif op == "dup":
        lines = lines + lines[:1]
    elif op == "odd":
        lines = lines + [draw(odd_texts)]
    elif op == "blank":
        lines = ["", "  "] + lines
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    return mutate_bytes(data, draw) if op == "bytes" else data


def fuzz_voc(data) -> None:
    draw = data.draw
    with scratch() as root:
        devkit = draw(st.booleans())
        xml_dir, image_dir = (root / "Annotations", root / "JPEGImages") if devkit else (root, root)
        xml_dir.mkdir(exist_ok=True)
        write_images(image_dir, [f"{s}.jpg" for s in VOC_NAMES])
        for k, stem in enumerate(VOC_NAMES):
            tree = voc_xml(stem, IMAGE_SIZES[k])
            if draw(st.integers(0, 2)) == 0:
                tree = mutate_xml(tree, draw)
            if draw(st.integers(0, 6)) == 0 and tree.find("filename") is not None:
                tree.find("filename").text = long_name_or_odd(draw)
            (xml_dir / f"{stem}.xml").write_bytes(xml_bytes(tree, draw) if draw(st.integers(0, 2)) == 0
                                                  else ET.tostring(tree, encoding="utf-8"))
        if devkit and draw(st.booleans()):
            main = root / "ImageSets" / "Main"
            main.mkdir(parents=True)
            (main / "train.txt").write_bytes(text_lines_damage(["a", "c"], draw))
            (main / "val.txt").write_bytes(text_lines_damage(["b"], draw))
        if draw(st.booleans()):
            (root / "classes.txt").write_bytes(text_lines_damage(["cat", "dog"], draw))
        if draw(st.booleans()):
            damage_some_images(image_dir, [f"{s}.jpg" for s in VOC_NAMES], draw)
        read_dataset("voc", draw(st.sampled_from([str(root), f"voc:{root}"])))


TXT_LINES = ["images/a.jpg 3,4,20,15,0 10,2,60,30,1", "# a comment", "", "images/b.png 1,1,40,40,1",
             "images/c.jpg"]


def mutate_txt_lines(lines: list[str], draw) -> list[str]:
    lines = list(lines)
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.integers(0, len(lines) - 1)) if lines else 0
        op = draw(st.sampled_from(["token", "token", "number", "path", "delete", "insert", "sep", "dup"]))
        tokens = lines[k].split(" ") if lines else []
        if op == "token" and tokens:
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(odd_texts)
        elif op == "number" and len(tokens) > 1:
            t = draw(st.integers(1, len(tokens) - 1))
            parts = tokens[t].split(",")
            parts[draw(st.integers(0, len(parts) - 1))] = draw(odd_texts)
            tokens[t] = ",".join(parts)
        elif op == "path" and tokens:
            tokens[0] = long_name_or_odd(draw)
        elif op == "delete" and lines:
            del lines[k]
            continue
        elif op == "insert":
            lines.insert(k, draw(st.sampled_from(TXT_LINES) | odd_texts))
            continue
        elif op == "sep":
            tokens = lines[k].replace(" ", draw(st.sampled_from(["\t", ";", "  ", ", ", "\x0b"]))).split(" ") \
                if lines else []
        elif op == "dup" and lines:
            lines.append(lines[k])
            continue
        if lines:
            lines[k] = " ".join(tokens)
    return lines


def fuzz_txt(data) -> None:
    draw = data.draw
    with scratch() as root:
        write_images(root / "images", ["a.jpg", "b.png", "c.jpg"])
        lines = mutate_txt_lines(TXT_LINES, draw) if draw(st.booleans()) else list(TXT_LINES)
        text = "\n".join(lines).encode("utf-8", "surrogatepass")
        if draw(st.integers(0, 3)) == 0:
            text = mutate_bytes(text, draw)
        (root / "labels.txt").write_bytes(text)
        if draw(st.integers(0, 5)):  # mostly present
            (root / "classes.txt").write_bytes(text_lines_damage(["cat", "dog"], draw))
        if draw(st.booleans()):
            damage_some_images(root / "images", ["a.jpg", "b.png", "c.jpg"], draw)
        read_dataset("txt", draw(st.sampled_from([str(root / "labels.txt"), f"txt:{root / 'labels.txt'}"])))


SPEC_KEYS = ["train", "val", "seed", "Train", "", " train", "x", "train ", "val=1"]
SPEC_VALUES = ["1", "2", "3", "0", "00", "-1", "1.5", "", "٣", "²", "１", "9" * 30, "10000001", "1e3", " 2", "2 ", "x"]


@st.composite
def spec_strings(draw):
    kind = draw(st.sampled_from(["shapes", "shapes", "prefix", "path", "random"]))
    if kind == "shapes":
        opts = [f"{draw(st.sampled_from(SPEC_KEYS))}={draw(st.sampled_from(SPEC_VALUES) | st.text(max_size=5))}"
                for _ in range(draw(st.integers(0, 4)))]
        sep = draw(st.sampled_from([":", ":", "", "::", ";"]))
        return draw(st.sampled_from(["shapes", "shapes", "SHAPES", "shape", "shapes "])) + sep + \
            draw(st.sampled_from([",", ",", ";", ",,"])).join(opts)
    if kind == "prefix":
        return draw(st.sampled_from(["coco:", "voc:", "txt:", "COCO:", "coco::", ":"])) + draw(
            st.sampled_from(ODD_STRINGS) | st.text(max_size=20))
    if kind == "path":
        return draw(st.sampled_from(ODD_STRINGS))
    return draw(st.text(max_size=40))


def fuzz_spec(spec: str, val: str | None) -> None:
    def build():
        datasets = build_datasets(spec, val)
        for ds in datasets:
            check_dataset(ds, max_items=2)
        return datasets

    datasets, error = attempt(build)
    COUNTS["spec", "error" if error else "skipped" if any(ds.skipped for ds in datasets) else "accepted"] += 1


# ------------------------------------------------------------------ model files
@dataclass
class Artifacts:
    """One valid artifact of each kind, made once: what the model-file and detector targets mutate."""

    folder: Path
    onnx: Path  # model.onnx, batch 1
    openvino: Path  # folder with model.xml + model.bin
    run: Path  # run dir: model.safetensors + model.json
    pth: Path  # torchvision-format state dict
    engine: Path  # model.engine (ONNX bytes: no TensorRT here) + model.engine.json

    def files(self, kind: str) -> list[Path]:
        return {"onnx": [self.onnx], "openvino": sorted(self.openvino.iterdir()),
                "checkpoint": [self.run / "model.safetensors", self.run / "model.json"], "pth": [self.pth],
                "engine": [self.engine, self.engine.with_name(self.engine.name + ".json")]}[kind]


def make_artifacts(folder: Path, run: Path | None = None, onnx_path: Path | None = None) -> Artifacts:
    """Every artifact kind from a random tiny checkpoint (or the given run dir and ONNX export)."""
    import torch

    from exporters.onnx import export_onnx
    from exporters.openvino import convert
    from exporters.trt import write_sidecar
    from tests.conftest import make_tiny_checkpoint
    from trainer.checkpoint import load_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    if run is None:
        run = make_tiny_checkpoint(folder / "run")
    model, meta = load_checkpoint(run)
    if onnx_path is None:
        onnx_path = export_onnx(model, meta, folder / "model.onnx", batch=1)
    openvino = folder / "openvino"
    if not (openvino / "model.xml").is_file():
        convert(onnx_path, openvino)
    pth = folder / "model.pth"
    torch.save(model.state_dict(), pth)
    engine = folder / "engine" / "model.engine"
    engine.parent.mkdir(exist_ok=True)
    shutil.copy(onnx_path, engine)
    meta.export = dict(format="tensorrt", precision="fp32", plugins="builtin", batch=1, batch_range=[1, 1, 1])
    write_sidecar(engine, meta)
    return Artifacts(folder, Path(onnx_path), openvino, Path(run), pth, engine)


ARTIFACTS: Artifacts | None = None


def use_artifacts(artifacts: Artifacts) -> None:
    global ARTIFACTS
    ARTIFACTS = artifacts


def mutate_onnx_metadata(data: bytes, draw) -> bytes:
    import onnx

    from runtimes.meta import META_KEY

    proto = onnx.load_from_string(data)
    props = {p.key: p.value for p in proto.metadata_props}
    op = draw(st.sampled_from(["json", "json", "garbage", "drop", "type"]))
    if op == "drop":
        props.pop(META_KEY)
    elif op == "garbage":
        props[META_KEY] = draw(st.sampled_from(ODD_STRINGS) | st.text(max_size=30))
    elif op == "type":  # the graph's input retyped: not the deployed-model contract
        proto.graph.input[0].type.tensor_type.elem_type = draw(st.sampled_from([1, 2, 3, 6, 7, 10, 11]))
    else:
        props[META_KEY] = json.dumps(mutate_json(json.loads(props[META_KEY]), draw))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    return proto.SerializeToString()


def mutate_ir_xml(data: bytes, draw) -> bytes:
    """The IR's XML with its rt_info metadata JSON or a layer attribute mutated."""
    from runtimes.meta import META_KEY

    root = ET.fromstring(data)
    if draw(st.booleans()):
        node = root.find(f"./rt_info/{META_KEY}")
        text = node.get("value")
        node.set("value", json.dumps(mutate_json(json.loads(text), draw)) if draw(st.integers(0, 3))
                 else draw(st.sampled_from(ODD_STRINGS)).replace("\x00", ""))
    else:
        datas = [e for e in root.iter("data") if e.attrib]
        element = draw(st.sampled_from(datas))
        key = draw(st.sampled_from(sorted(element.attrib)))
        element.set(key, draw(st.sampled_from(["-1", "0", "1", "99999999999", "18446744073709551615", "1e400",
                                               "nan", "", "f64", "u1", "?", "1,1,1,1,1,1,1", "-1,-1"])))
    return ET.tostring(root, encoding="utf-8")


def mutate_safetensors(data: bytes, draw) -> bytes:
    """A safetensors file whose JSON header (dtypes, shapes, offsets) or header length is mutated."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8: 8 + n])
    if draw(st.booleans()):
        new = json.dumps(mutate_json(header, draw)).encode()
        return struct.pack("<Q", len(new)) + new + data[8 + n:]
    return struct.pack("<Q", draw(st.sampled_from([0, 1, n - 1, n + 1, 2**63, 2**64 - 1]))) + data[8:]


def damage_model_file(path: Path, draw, artifacts: Artifacts) -> None:
    """Replace one file of a copied artifact by a damaged one (written anew: the copies are hard links)."""
    data = path.read_bytes()
    path.unlink()
    ops = ["bytes", "bytes", "truncate", "delete", "swap", "late_bytes"]
    if path.suffix == ".json":
        ops += ["json", "json", "provenance"]
    if path.suffix == ".onnx" or path.name == "model.engine":
        ops += ["onnx_meta", "onnx_meta"]
    if path.suffix == ".xml":
        ops += ["ir_xml", "ir_xml"]
    if path.suffix == ".safetensors":
        ops += ["safetensors_header"]
    op = draw(st.sampled_from(ops))
    if op == "delete":
        return
    if op == "truncate":
        data = data[: draw(st.sampled_from([0, 1, 8, 16, 100, len(data) // 2, len(data) - 1]))]
    elif op == "bytes":
        data = mutate_bytes(data, draw)
    elif op == "late_bytes":  # in the second half, mostly weights: the file may well still load
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(len(out) // 2, len(out) - 1))] = draw(st.integers(0, 255))
        data = bytes(out)
    elif op == "provenance":  # an edit where edits are harmless, next to the ones that are not
        tree = json.loads(data)
        tree["provenance"] = mutate_json(tree.get("provenance", {}), draw)
        data = json.dumps(tree).encode()
    elif op == "swap":  # another format's file under this name
        others = [p for kind in ("onnx", "openvino", "checkpoint", "pth") for p in artifacts.files(kind)]
        data = draw(st.sampled_from(others)).read_bytes()
    elif op == "json":
        try:
            tree = json.loads(data)
        except ValueError:
            tree = {}
        data = json.dumps(mutate_json(tree, draw)).encode()
    elif op == "onnx_meta":
        data = mutate_onnx_metadata(data, draw)
    elif op == "ir_xml":
        data = mutate_ir_xml(data, draw)
    elif op == "safetensors_header":
        data = mutate_safetensors(data, draw)
    path.write_bytes(data)


def link_copy(files: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        os.link(f, folder / f.name)
        out.append(folder / f.name)
    return out


def check_detections(dets, image: np.ndarray, threshold: float | None = None) -> None:
    assert isinstance(dets, Detections)
    h, w = image.shape[:2]
    n = len(dets)
    assert dets.boxes.shape == (n, 4) and dets.boxes.dtype == np.float32 and np.isfinite(dets.boxes).all()
    assert ((dets.boxes[:, 0::2] >= 0) & (dets.boxes[:, 0::2] <= w)).all()
    assert ((dets.boxes[:, 1::2] >= 0) & (dets.boxes[:, 1::2] <= h)).all()
    assert dets.scores.shape == (n,) and np.isfinite(dets.scores).all()
    if threshold is not None:
        assert (dets.scores >= threshold).all()
    assert dets.labels.shape == (n,) and len(dets.names) == n and all(isinstance(s, str) for s in dets.names)


MODEL_KINDS = ("onnx", "openvino", "checkpoint", "pth", "engine")
ODD_DEVICES = ["cpu", "CPU", "cuda", "cuda:0", "cuda:1", "cuda:x", "cuda:-1", "cuda:99999999999999999999", "gpu",
               "GPU", "GPU.1", "NPU", "AUTO", "AUTO:", "AUTO:CPU", "HETERO", "HETERO:CPU", "MULTI:", "BATCH:CPU",
               "meta", "mps", "xpu", "", " ", "cpu:0", "cpu:1", "\x00", "CPU,GPU", "nonsense", "é"]
PROBE_IMAGE = np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8)


@contextlib.contextmanager
def no_openvino_cache():
    """Compiled blobs of damaged IRs stay out of the user's cache (runtimes.load takes no options
    here: a damaged folder may load as another runtime, whose adapter has other options)."""
    from runtimes.openvino import CACHE_ENV

    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = "none"
    try:
        yield
    finally:
        if before is None:
            del os.environ[CACHE_ENV]
        else:
            os.environ[CACHE_ENV] = before


def fuzz_model_file(kind: str, data) -> None:
    from runtimes.tensorrt import read_sidecar

    draw = data.draw
    artifacts = ARTIFACTS
    target = f"model:{kind}"
    with scratch() as folder:
        files = link_copy(artifacts.files(kind), folder / "m")
        how = draw(st.sampled_from(["damage", "damage", "damage", "damage", "device", "runtime"]))
        options = {}
        if how == "damage":
            for k in sorted(draw(st.sets(st.integers(0, len(files) - 1), min_size=1, max_size=len(files)))):
                damage_model_file(files[k], draw, artifacts)
        elif how == "device":
            options["device"] = draw(st.sampled_from(ODD_DEVICES) | st.text(max_size=10))
        else:  # the runtime forced, maybe the wrong one for the file
            options["runtime"] = draw(st.sampled_from([*runtimes.RUNTIMES, "", "ONNX", "trt", "torch "]))
        path = {"openvino": folder / "m", "checkpoint": folder / "m"}.get(kind, files[0])
        if kind == "checkpoint" and draw(st.booleans()):
            path = files[draw(st.integers(0, 1))]  # the .safetensors or the .json
        if kind == "engine":  # TensorRT is missing here, so loading stops before the sidecar: read it alone too
            meta, error = attempt(lambda: read_sidecar(files[0]))
            COUNTS[target, "sidecar error" if error else "sidecar accepted"] += 1
        with no_openvino_cache():
            detector, error = attempt(lambda: runtimes.load(path, **options))
        if error:
            COUNTS[target, "error"] += 1
            return
        dets, error = attempt(lambda: detector(PROBE_IMAGE))  # a damaged model that loads may still fail to run
        COUNTS[target, "error at the first call" if error else "accepted"] += 1
        if dets is not None:
            check_detections(dets, PROBE_IMAGE)


# ------------------------------------------------------------------ detector inputs
DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64, np.float16,
          np.float32, np.float64, np.bool_, np.complex64, ">u2", ">f4", "<U3", "S2", "M8[s]", "m8[s]"]
_DETECTOR = None


def detector():
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = runtimes.load(ARTIFACTS.onnx)
    return _DETECTOR


image_arrays = st.one_of(
    hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5)),
    hnp.arrays(st.sampled_from([np.uint8, np.uint16, np.float32, np.float64, np.bool_, np.float16]),
               st.tuples(st.integers(1, 90), st.integers(1, 90), st.sampled_from([1, 2, 3, 4, 5]))),
    hnp.arrays(st.sampled_from([np.float32, np.float64]),
               st.tuples(st.integers(1, 40), st.integers(1, 40), st.just(3)), elements=st.floats(0, 1)),
    hnp.arrays(np.uint8, st.tuples(st.sampled_from([1, 2, 3, 1000, 2000]), st.sampled_from([1, 2, 3, 1000, 2000]))),
)


@st.composite
def detector_inputs(draw):
    """(the input, the images in it or None when it is not an image / list of images)."""
    kind = draw(st.sampled_from(["array", "array", "view", "list", "batch", "other", "subclass"]))
    if kind == "array":
        return draw(image_arrays)
    if kind == "view":
        a = draw(hnp.arrays(np.uint8, st.tuples(st.integers(2, 40), st.integers(2, 40), st.sampled_from([3, 4]))))
        return draw(st.sampled_from([a[::-1], a[:, ::2], a.transpose(1, 0, 2), a[::2, ::-3], a[..., ::-1]]))
    if kind == "list":
        items = draw(st.lists(image_arrays | st.sampled_from([None, 3, "x"]), max_size=3))
        return draw(st.sampled_from([list, tuple, iter]))(items)
    if kind == "batch":
        return draw(hnp.arrays(st.sampled_from([np.uint8, np.float32]),
                               st.tuples(st.integers(0, 3), st.integers(1, 30), st.integers(1, 30), st.just(3))))
    if kind == "subclass":
        base = draw(hnp.arrays(np.uint8, st.tuples(st.integers(1, 20), st.integers(1, 20))))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix: still what some code passes
            return draw(st.sampled_from([np.asmatrix(base), np.ma.masked_array(base, base > 100),
                                         np.rec.array(base)]))
    return draw(st.sampled_from([None, 0, 1.5, "image.jpg", b"\x89PNG", {"image": 1}, [[1, 2], [3, 4]],
                                 np.uint8(3), np.array(5), object(), np.array([None, None], object),
                                 np.empty((2, 2, 3), object)]))


thresholds = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2),
                       st.sampled_from(["0.5", "x", [0.5], True, np.float32(0.3), None, 1e-9]))


def fuzz_detector_input(images, threshold) -> None:
    det = detector()
    single = isinstance(images, np.ndarray) and images.ndim in (2, 3)
    listed = None  # the images of a batch input, to check the detections against
    if isinstance(images, np.ndarray) and images.ndim == 4 or isinstance(images, (list, tuple)):
        listed = list(images)
    elif isinstance(images, type(iter([]))):
        listed = list(images)
        images = iter(listed)
    out, error = attempt(lambda: det(images, threshold=threshold))
    COUNTS["detector", "error" if error else "accepted"] += 1
    if error:
        return
    t = None if threshold is None else float(threshold)
    if single:
        check_detections(out, np.asarray(images), t)
    else:
        assert listed is not None, f"accepted {type(images).__name__} as a batch of images"
        assert isinstance(out, list) and len(out) == len(listed)
        for d, im in zip(out, listed):
            check_detections(d, np.asarray(im), t)


def huge_images() -> list[np.ndarray]:
    """Explicit huge cases (made when the target runs, not at import)."""
    return [np.zeros((1, 100_000, 3), np.uint8), np.zeros((60_000, 2), np.uint16),
            np.full((6000, 7000, 3), 200, np.uint8), np.full((3000, 3000, 3), 0.5, np.float32)]


# ------------------------------------------------------------------ the targets
def _tests():
    """name -> the property test (undecorated by settings): hypothesis strategy + check."""
    def model(kind):
        return given(st.data())(lambda data: fuzz_model_file(kind, data))

    tests = {
        "coco": given(st.data())(fuzz_coco),
        "voc": given(st.data())(fuzz_voc),
        "txt": given(st.data())(fuzz_txt),
        "spec": given(spec_strings(), st.none() | spec_strings())(fuzz_spec),
        "detector": given(detector_inputs(), thresholds)(fuzz_detector_input),
    }
    for image in huge_images():  # explicit cases, run first every time
        tests["detector"] = example(image, None)(tests["detector"])
    tests.update({f"model:{kind}": model(kind) for kind in MODEL_KINDS})
    return tests


TARGETS = ("coco", "voc", "txt", "spec", "detector", *(f"model:{kind}" for kind in MODEL_KINDS))


def run_target(name: str, max_examples: int, derandomize: bool, phases=None) -> None:
    """Run target `name` for up to `max_examples` examples; a failing example raises (after shrinking)."""
    test = _tests()[name]  # fresh: a settings object can decorate a test once
    kwargs = dict(max_examples=max_examples, derandomize=derandomize, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), print_blob=True)
    if phases is not None:
        kwargs["phases"] = phases
    settings(**kwargs)(test)()


# ------------------------------------------------------------------ the long run
def cases_of(target: str) -> int:
    """Cases run so far of `target` (an engine's sidecar, read on the side, is not one)."""
    return sum(v for (t, k), v in COUNTS.items() if t == target and not k.startswith("sidecar"))


def main(argv=None) -> int:
    from tqdm import tqdm

    p = argparse.ArgumentParser(prog="python -m tests.fuzz",
                                description="Fuzz every input the toolkit reads (datasets, model files, detector "
                                            "inputs) for a while, with random examples, and report the case counts "
                                            "and any crash: an exception other than a one-line DatasetError, "
                                            "ModelLoadError or ImageError, or a malformed accepted result.")
    p.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated (default all: {', '.join(TARGETS)})")
    p.add_argument("--slice", type=float, default=15.0,
                   help="seconds each target runs per round, so fast targets get more cases (default 15)")
    p.add_argument("--out", type=Path, help="also write the counts and crashes here (JSON)")
    a = p.parse_args(argv)
    targets = [t.strip() for t in a.targets.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        p.exit(2, f"error: unknown target(s) {unknown}; choose from {', '.join(TARGETS)}\n")
    if not (a.minutes > 0 and a.slice > 0):
        p.exit(2, "error: --minutes and --slice must be positive\n")

    crashes = []
    with tempfile.TemporaryDirectory(prefix="frcnn-fuzz-artifacts-") as folder:
        print("making one artifact of each kind (a random tiny model) ...", flush=True)
        use_artifacts(make_artifacts(Path(folder)))
        deadline = time.monotonic() + a.minutes * 60
        bar = tqdm(total=round(a.minutes * 60), unit="s", desc="fuzzing", dynamic_ncols=True)
        started, rounds = time.monotonic(), 0
        batch = dict.fromkeys(targets, 10)  # examples per hypothesis run, sized to take a few seconds
        while time.monotonic() < deadline:
            for name in targets:
                slice_end = min(deadline, time.monotonic() + a.slice)
                while time.monotonic() < slice_end:
                    t0, n0 = time.monotonic(), cases_of(name)
                    try:
                        with contextlib.redirect_stdout(io.StringIO()) as said:
                            run_target(name, batch[name], derandomize=False)
                    except Exception as e:  # a crash: hypothesis re-raises the shrunk failing example(s)
                        for error in (e.exceptions if isinstance(e, BaseExceptionGroup) else [e]):
                            notes = "\n".join(getattr(error, "__notes__", []))
                            what = f"{type(error).__name__}: {runtimes.first_line(error)}"
                            crashes.append(dict(target=name, error=what, example=notes or said.getvalue()[-2000:]))
                            tqdm.write(f"CRASH in {name}: {what}\n{notes}")
                    per_case = (time.monotonic() - t0) / max(1, cases_of(name) - n0)
                    batch[name] = int(min(200, max(10, 4 / per_case)))
                    bar.n = min(round(time.monotonic() - started), bar.total)
                    bar.set_postfix(cases=sum(map(cases_of, targets)), crashes=len(crashes), refresh=True)
            rounds += 1
        bar.close()

    print(f"\n{'target':<16} {'cases':>7}  outcomes")
    per_target = {}
    for name in targets:
        c = {k: v for (t, k), v in COUNTS.items() if t == name}
        cases = cases_of(name)
        per_target[name] = dict(c, cases=cases)
        print(f"{name:<16} {cases:>7}  " + ", ".join(f"{v} {k}" for k, v in sorted(c.items())))
    total = sum(t["cases"] for t in per_target.values())
    print(f"{'all':<18} {total:>7}   in {a.minutes:g} min, {rounds} rounds; crashes: {len(crashes)}")
    if a.out:
        a.out.write_text(json.dumps(dict(minutes=a.minutes, rounds=rounds, cases=total, targets=per_target,
                                         crashes=crashes), indent=2))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
