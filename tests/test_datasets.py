"""Dataset readers: COCO JSON, Pascal VOC XML and TXT lines, read back from real files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from runtimes.coco import evaluate, to_coco_results
from trainer.data import (CocoDataset, DatasetError, ShapesDataset, TxtDataset, VocDataset,
                          build_datasets, hold_out)
from trainer.data import files as data_files
from trainer.data.shapes import SPLIT_SEEDS, render

REPO = Path(__file__).resolve().parents[1]


def write_image(path: Path, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A PNG (lossless, so pixels round-trip) of random colours; returns the RGB array."""
    img = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return img


def error_of(fn, *args, **kwargs) -> str:
    """The message of the DatasetError `fn` raises; it must be one line."""
    with pytest.raises(DatasetError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def perfect_detections(dataset) -> list[dict]:
    """Every non-crowd ground-truth box as a detection with score 1."""
    results = []
    for i in range(len(dataset)):
        info = dataset.image_info(i)
        keep = ~info["iscrowd"]
        results += to_coco_results(info["id"], info["boxes"][keep], np.ones(keep.sum()),
                                   info["labels"][keep], dataset.label_category_ids())
    return results


# ---------------------------------------------------------------- COCO


def write_coco(root: Path, images, annotations, categories=None, name="annotations.json") -> Path:
    categories = categories or [dict(id=3, name="cat"), dict(id=7, name="dog")]
    path = root / name
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=categories)))
    return path


@pytest.fixture
def coco_file(tmp_path: Path) -> Path:
    """Three images: ids 101, 205 (no width/height: read from the header), 333 (no annotations)."""
    write_image(tmp_path / "images" / "a.png", 60, 80, seed=1)
    write_image(tmp_path / "images" / "b.png", 50, 40, seed=2)
    write_image(tmp_path / "images" / "c.png", 30, 30, seed=3)
    images = [dict(id=101, file_name="a.png", width=80, height=60), dict(id=205, file_name="b.png"),
              dict(id=333, file_name="c.png", width=30, height=30)]
    annotations = [
        dict(id=1, image_id=101, category_id=7, bbox=[10, 5, 20, 30], area=500.0, iscrowd=0),
        dict(id=2, image_id=101, category_id=3, bbox=[40.5, 10, 30, 20], area=600.0, iscrowd=0),
        dict(id=3, image_id=101, category_id=3, bbox=[0, 0, 70, 50], area=3000.0, iscrowd=1),
        dict(id=4, image_id=205, category_id=3, bbox=[1, 2, 3, 4]),  # no area / iscrowd: defaults
    ]
    return write_coco(tmp_path, images, annotations)


def test_coco_round_trip(coco_file: Path):
    ds = CocoDataset(coco_file)
    assert ds.image_root == coco_file.parent / "images"  # the `images/` sibling
    assert ds.class_names == ["cat", "dog"] and ds.category_ids == [3, 7]
    assert ds.label_category_ids() == [0, 3, 7]
    assert len(ds) == 3 and not ds.skipped

    s = ds[0]
    assert s.image.shape == (60, 80, 3) and s.image.dtype == np.uint8
    assert s.image_id == 101 and s.file_name == "a.png"
    np.testing.assert_allclose(s.boxes, [[10, 5, 30, 35], [40.5, 10, 70.5, 30], [0, 0, 70, 50]])
    assert s.boxes.dtype == np.float32 and s.labels.dtype == np.int64
    assert s.labels.tolist() == [2, 1, 1]
    assert s.iscrowd.tolist() == [False, False, True]
    # training targets never include the crowd box
    t = s.without_crowd()
    assert t.labels.tolist() == [2, 1] and len(t.boxes) == 2

    info = ds.image_info(1)  # size read from the header
    assert (info["width"], info["height"], info["id"]) == (40, 50, 205)
    empty = ds[2]  # images without annotations are kept (background-only)
    assert empty.boxes.shape == (0, 4) and empty.labels.shape == (0,)


def test_coco_ground_truth_evaluates(coco_file: Path, monkeypatch):
    ds = CocoDataset(coco_file)
    # coco_dict() and image_info() must not decode images
    monkeypatch.setattr(data_files, "read_image", lambda p: pytest.fail(f"decoded {p}"))
    gt = ds.coco_dict()
    assert [c["id"] for c in gt["categories"]] == [3, 7]
    by_id = {a["id"]: a for a in gt["annotations"]}
    assert by_id[1]["area"] == 500.0 and by_id[3]["iscrowd"] == 1  # the file's own values
    assert by_id[4]["area"] == 12 and by_id[4]["iscrowd"] == 0  # defaults where absent
    stats = evaluate(gt, perfect_detections(ds))
    assert stats["AP@[.5:.95]"] == pytest.approx(1.0)
    # a held-out subset's ground truth covers only its own images
    sub = ds.subset([0], "one")
    assert {a["image_id"] for a in sub.coco_dict()["annotations"]} == {101}


def test_coco_layout_and_explicit_root(tmp_path: Path):
    write_image(tmp_path / "val2017" / "x.jpg", 20, 20)
    (tmp_path / "annotations").mkdir()
    images = [dict(id=1, file_name="x.jpg", width=20, height=20)]
    path = write_coco(tmp_path / "annotations", images, [], name="instances_val2017.json")
    assert CocoDataset(path).image_root == tmp_path / "val2017"
    assert len(CocoDataset(path, image_root=tmp_path / "val2017")) == 1


def test_shapes_cli_output_reads_back(tmp_path: Path):
    out = tmp_path / "shapes"
    subprocess.run([sys.executable, "-m", "trainer.data.shapes", "--out", str(out), "--num", "5"],
                   cwd=REPO, check=True, capture_output=True)
    ref = ShapesDataset(5, SPLIT_SEEDS["val"])
    # given as its own validation set, the whole file is the training set
    train, val = build_datasets(str(out / "annotations.json"), val=str(out))
    assert len(train) == len(val) == 5 and train.class_names == ref.class_names
    for i in range(5):
        s, r = train[i], ref[i]
        assert s.image_id == r.image_id and s.file_name == f"images/{r.file_name}"
        np.testing.assert_allclose(s.boxes, r.boxes, atol=1e-3)
        assert s.labels.tolist() == r.labels.tolist()
        assert s.image.shape == r.image.shape
        assert np.abs(s.image.astype(int) - r.image).mean() < 3  # JPEG quality 95
    # without a val spec: a deterministic 10% (at least 1 image) is held out
    train, val = build_datasets(str(out / "annotations.json"))
    assert (len(train), len(val)) == (4, 1)


# ---------------------------------------------------------------- Pascal VOC


def voc_xml(filename: str | None, size, objects) -> str:
    parts = ["<annotation>", "<folder>JPEGImages</folder>"]
    if filename:
        parts.append(f"<filename>{filename}</filename><path>/somewhere/else/{filename}</path>")
    if size:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<difficult>{int(difficult)}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                     f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "\n".join(parts + ["</annotation>"])


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """Devkit layout, 4 images, train/val split lists, no classes.txt (names from the XMLs)."""
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    objects = {
        "img0": [("person", (11, 21, 40, 45), False), ("dog", (1, 1, 64, 48), True)],
        "img1": [("cat", (5, 5, 10, 10), False)],
        "img2": [],
        "img3": [("dog", (2, 3, 30.5, 20), False)],
    }
    for k, (stem, objs) in enumerate(objects.items()):
        write_image(root / "JPEGImages" / f"{stem}.jpg", 48, 64, seed=k)
        size = (64, 48) if stem != "img3" else None  # img3: size from the image header
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", size, objs))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("img0\nimg2\nimg3\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("img1\n")
    return root


def test_voc_round_trip(voc_root: Path):
    train, val = build_datasets(str(voc_root))  # folder with Annotations/ -> VOC, its own split
    assert isinstance(train, VocDataset) and isinstance(val, VocDataset)
    assert train.class_names == val.class_names == ["cat", "dog", "person"]
    assert [r.image_id for r in train.records] == [1, 3, 4] and [r.image_id for r in val.records] == [2]

    s = train[0]
    assert s.file_name == "JPEGImages/img0.jpg" and s.image.shape == (48, 64, 3)
    # 1-based inclusive pixel indices -> pixel edges: (xmin - 1, ymin - 1, xmax, ymax)
    np.testing.assert_allclose(s.boxes, [[10, 20, 40, 45], [0, 0, 64, 48]])
    assert s.labels.tolist() == [3, 2]
    assert s.iscrowd.tolist() == [False, True]  # difficult: evaluation only
    assert s.without_crowd().labels.tolist() == [3]
    assert train[1].boxes.shape == (0, 4)
    info = train.image_info(2)
    assert (info["width"], info["height"]) == (64, 48)
    np.testing.assert_allclose(info["boxes"], [[1, 2, 30.5, 20]])
    assert not train.skipped and not val.skipped

    assert evaluate(train.coco_dict(), perfect_detections(train))["AP@[.5:.95]"] == pytest.approx(1.0)


def test_voc_flat_folder_with_classes_file(tmp_path: Path):
    """labelImg's layout: XML next to the image; classes.txt restricts the classes."""
    write_image(tmp_path / "a.png", 40, 50)
    (tmp_path / "a.xml").write_text(voc_xml("a.png", (50, 40), [
        ("car", (1, 1, 10, 10), False), ("dgo", (5, 5, 20, 20), False), ("dgo", (6, 6, 20, 20), False),
        ("bus", (0, 2, 60, 30), False)]))  # labelImg's xmin=0, and past the right edge: clipped
    write_image(tmp_path / "b.png", 40, 50)
    (tmp_path / "b.xml").write_text(voc_xml(None, None, [("bus", (3, 3, 9, 9), False)]))  # no <filename>
    (tmp_path / "classes.txt").write_text("bus\ncar\n")
    ds = VocDataset(tmp_path)
    assert ds.class_names == ["bus", "car"] and len(ds) == 2
    s = ds[0]
    assert s.labels.tolist() == [2, 1]
    np.testing.assert_allclose(s.boxes, [[0, 0, 10, 10], [0, 1, 50, 30]])
    assert ds.skipped == {"objects of unknown class 'dgo'": 2, "boxes clipped to the image": 1}
    report = ds.skip_report()
    assert "2 objects of unknown class 'dgo'" in report and "1 boxes clipped" in report
    assert ds[1].file_name == "b.png"


# ---------------------------------------------------------------- TXT lines


@pytest.fixture
def txt_file(tmp_path: Path) -> Path:
    """10 images rendered by the shapes generator, one line each, classes.txt beside."""
    lines = ["# shapes as TXT lines", ""]
    (tmp_path / "imgs").mkdir()
    for i in range(10):
        img, boxes, labels = render(7, i)
        assert cv2.imwrite(str(tmp_path / "imgs" / f"{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        boxes_text = " ".join(",".join(f"{v:.2f}" for v in b) + f",{c - 1}" for b, c in zip(boxes, labels))
        lines.append(f"imgs/{i}.png {boxes_text}")
    lines.append("imgs/0.png")  # the same picture again, without boxes: a background image
    (tmp_path / "classes.txt").write_text("circle\nsquare\ntriangle\n")
    path = tmp_path / "train.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_txt_round_trip(txt_file: Path):
    ds = TxtDataset(txt_file)
    assert ds.class_names == ["circle", "square", "triangle"] and len(ds) == 11
    for i in range(10):
        img, boxes, labels = render(7, i)
        s = ds[i]
        assert s.image_id == i + 1 and s.file_name == f"imgs/{i}.png"
        np.testing.assert_array_equal(s.image, img)
        np.testing.assert_allclose(s.boxes, boxes, atol=0.006)
        assert s.labels.tolist() == labels.tolist()
    assert ds[10].boxes.shape == (0, 4)
    assert ds.image_info(3)["width"] == render(7, 3)[0].shape[1]
    assert evaluate(ds.coco_dict(), perfect_detections(ds))["AP@[.5:.95]"] == pytest.approx(1.0)


def test_txt_held_out_split_is_deterministic(txt_file: Path):
    train, val = build_datasets(str(txt_file))
    assert (len(train), len(val)) == (10, 1)
    ids = {r.image_id for r in train.records}
    assert not ids & {r.image_id for r in val.records}
    assert ids | {r.image_id for r in val.records} == set(range(1, 12))
    again = build_datasets(f"txt:{txt_file}")[1]
    assert [r.image_id for r in again.records] == [r.image_id for r in val.records]
    # a separate validation TXT takes the training classes (no classes.txt needed beside it)
    other = txt_file.parent / "sub"
    other.mkdir()
    (other / "val.txt").write_text("../imgs/1.png 1,1,9,9,2\n")
    train, val = build_datasets(str(txt_file), val=str(other / "val.txt"))
    assert len(train) == 11 and val.class_names == train.class_names and val[0].labels.tolist() == [3]


def test_skips_are_counted_per_subset(tmp_path: Path):
    write_image(tmp_path / "a.png", 20, 20)
    lines = [f"a.png 5,5,5,9,0 -3,2,8,8,0 1,1,9,9,{i % 2}" for i in range(6)]
    (tmp_path / "classes.txt").write_text("x\ny\n")
    (tmp_path / "d.txt").write_text("\n".join(lines))
    ds = TxtDataset(tmp_path / "d.txt")
    assert ds.skipped == {"degenerate boxes dropped": 6, "boxes clipped to the image": 6}
    train, val = hold_out(ds)
    assert len(val) == 1
    assert train.skipped + val.skipped == ds.skipped and val.skipped["degenerate boxes dropped"] == 1
    np.testing.assert_allclose(ds[0].boxes, [[0, 2, 8, 8], [1, 1, 9, 9]])


# ---------------------------------------------------------------- bad input


def test_missing_image(coco_file: Path, txt_file: Path):
    (coco_file.parent / "images" / "b.png").unlink()
    msg = error_of(CocoDataset, coco_file)
    assert "annotations.json" in msg and "image id 205 (b.png)" in msg and "not found" in msg
    (txt_file.parent / "imgs" / "4.png").unlink()
    msg = error_of(TxtDataset, txt_file)
    assert f"{txt_file}:7:" in msg and "imgs/4.png not found" in msg


def test_missing_voc_image(voc_root: Path):
    (voc_root / "JPEGImages" / "img1.jpg").unlink()
    msg = error_of(build_datasets, str(voc_root))
    assert "img1.xml" in msg and "img1.jpg not found" in msg


def test_corrupt_image_fails_at_load_with_one_line(coco_file: Path):
    bad = coco_file.parent / "images" / "a.png"
    bad.write_bytes(b"this is not an image")
    ds = CocoDataset(coco_file)  # sizes are in the JSON: nothing decoded yet
    assert error_of(ds.load, 0) == f"{bad}: cannot decode image"
    # the same one line when a DataLoader worker process raises it
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1, collate_fn=lambda b: b)
    with pytest.raises(DatasetError) as info:
        next(iter(loader))
    assert str(info.value) == f"{bad}: cannot decode image"
    assert "Traceback" in info.value.worker_traceback


def test_corrupt_image_in_txt_fails_at_construction(txt_file: Path):
    (txt_file.parent / "imgs" / "2.png").write_bytes(b"\x00" * 64)
    msg = error_of(TxtDataset, txt_file)
    assert f"{txt_file}:5:" in msg and "2.png" in msg and "not an image" in msg


def test_image_size_differs_from_annotation(coco_file: Path):
    data = json.loads(coco_file.read_text())
    data["images"][0]["width"] = 81
    coco_file.write_text(json.dumps(data))
    msg = error_of(CocoDataset(coco_file).load, 0)
    assert "a.png: image is 80x60 pixels but" in msg and "says 81x60" in msg


def test_degenerate_and_out_of_image_boxes(tmp_path: Path):
    write_image(tmp_path / "a.png", 50, 60)
    images = [dict(id=1, file_name="a.png", width=60, height=50)]
    annotations = [dict(id=1, image_id=1, category_id=3, bbox=[10, 10, 0, 5]),  # zero width
                   dict(id=2, image_id=1, category_id=3, bbox=[70, 10, 5, 5]),  # wholly outside
                   dict(id=3, image_id=1, category_id=7, bbox=[-5, 40, 20, 20]),  # sticks out
                   dict(id=4, image_id=1, category_id=7, bbox=[1, 1, 2, 2])]
    ds = CocoDataset(write_coco(tmp_path, images, annotations))
    np.testing.assert_allclose(ds[0].boxes, [[0, 40, 15, 50], [1, 1, 3, 3]])
    assert ds[0].labels.tolist() == [2, 2]
    assert ds.skipped == {"degenerate boxes dropped": 2, "boxes clipped to the image": 2}
    assert ds.skip_report() == ("annotations.json: skipped 2 boxes clipped to the image, "
                                "2 degenerate boxes dropped")


def test_unknown_class(tmp_path: Path, coco_file: Path, txt_file: Path):
    data = json.loads(coco_file.read_text())
    data["annotations"][1]["category_id"] = 5
    coco_file.write_text(json.dumps(data))
    msg = error_of(CocoDataset, coco_file)
    assert "annotations[1] (id 2)" in msg and "unknown category_id 5" in msg
    with txt_file.open("a") as f:
        f.write("imgs/1.png 1,1,5,5,3\n")
    msg = error_of(TxtDataset, txt_file)
    assert f"{txt_file}:14:" in msg and "class index 3 out of range 0..2" in msg and "classes.txt" in msg
    # VOC: a counted skip naming the class (see test_voc_flat_folder_with_classes_file)


def test_empty_annotation_files(tmp_path: Path):
    (tmp_path / "a.json").write_text("")
    assert error_of(CocoDataset, tmp_path / "a.json") == f"{tmp_path / 'a.json'}: empty file (expected COCO instances JSON)"
    (tmp_path / "classes.txt").write_text("x\n")
    (tmp_path / "a.txt").write_text("\n# nothing\n")
    assert "a.txt: no image lines" in error_of(TxtDataset, tmp_path / "a.txt")
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text("")
    assert error_of(VocDataset, voc) == f"{voc / 'a.xml'}: empty file (expected a VOC <annotation>)"
    (tmp_path / "classes.txt").write_text("\n")
    assert "classes.txt: empty class list" in error_of(TxtDataset, tmp_path / "a.txt")
    (tmp_path / "classes.txt").unlink()
    assert "no classes.txt next to it" in error_of(TxtDataset, tmp_path / "a.txt")
    write_coco(tmp_path, [], [], name="none.json")
    assert "none.json: no images" in error_of(CocoDataset, tmp_path / "none.json")


def test_malformed_txt_line(txt_file: Path):
    lines = txt_file.read_text().splitlines()
    lines[5] = lines[5] + " 1,2,3,4"
    txt_file.write_text("\n".join(lines))
    msg = error_of(TxtDataset, txt_file)
    assert msg == f"{txt_file}:6: bad box '1,2,3,4' (expected x1,y1,x2,y2,class, class an integer)"
    lines[5] = lines[5].replace(" 1,2,3,4", " 1,2,x,4,0")
    txt_file.write_text("\n".join(lines))
    assert f"{txt_file}:6: bad box '1,2,x,4,0'" in error_of(TxtDataset, txt_file)


def test_malformed_xml(voc_root: Path):
    (voc_root / "Annotations" / "img2.xml").write_text("<annotation>\n<object>\n<name>dog</name>\n</annotation>\n")
    msg = error_of(build_datasets, str(voc_root))
    assert msg.startswith(f"{voc_root / 'Annotations' / 'img2.xml'}: line 4: malformed XML (mismatched tag")
    (voc_root / "Annotations" / "img2.xml").write_text(voc_xml("img2.jpg", (64, 48), [("dog", (1, 2, "x", 4), 0)]))
    assert "img2.xml: object 1 (dog): <xmax> is 'x', not a number" in error_of(VocDataset, voc_root)
    (voc_root / "ImageSets" / "Main" / "val.txt").write_text("img1\nimg9\n")
    (voc_root / "Annotations" / "img2.xml").unlink()
    msg = error_of(VocDataset, voc_root, "val")
    assert msg == f"{voc_root / 'ImageSets' / 'Main' / 'val.txt'}:2: no annotation file img9.xml"


def test_malformed_coco_json(coco_file: Path):
    coco_file.write_text('{"images": [\n{"id": 1,}\n]}')
    assert error_of(CocoDataset, coco_file).startswith(f"{coco_file}: line 2: invalid JSON")
    write_coco(coco_file.parent, [dict(id=1, file_name="a.png")],
               [dict(id=9, image_id=1, category_id=3, bbox=[1, 2, 3])])
    assert "annotations[0] (id 9): 'bbox' must be [x, y, width, height]" in error_of(CocoDataset, coco_file)
    coco_file.write_text(json.dumps(dict(images=[])))
    assert "no 'annotations' list" in error_of(CocoDataset, coco_file)


def test_bad_specs(tmp_path: Path, coco_file: Path):
    for spec in ("", "nope/missing.json", "voc:", "shapes:train=x"):
        msg = error_of(build_datasets, spec)
    msg = error_of(build_datasets, "nope/missing.json")
    assert "no such file or folder" in msg and "shapes[:train=N" in msg and "voc:PATH" in msg
    (tmp_path / "notes.csv").write_text("a,b\n")
    assert "not a dataset format" in error_of(build_datasets, str(tmp_path / "notes.csv"))
    # a single image cannot be split into train and val
    write_coco(tmp_path, [dict(id=1, file_name="images/a.png")], [], name="one.json")
    assert "too few to hold out" in error_of(build_datasets, str(tmp_path / "one.json"))
    # a validation set whose classes differ from the training set's
    assert "differ from the training set's" in error_of(build_datasets, str(coco_file), val="shapes")


def test_shapes_spec_and_windows_text(tmp_path: Path):
    train, val = build_datasets("shapes:train=3,val=2,seed=1")
    assert (len(train), len(val)) == (3, 2) and train.class_names == ["circle", "square", "triangle"]
    # Windows editors: a byte-order mark and CRLF line ends
    write_image(tmp_path / "a.png", 10, 10)
    (tmp_path / "classes.txt").write_bytes("\ufeffx\r\ny\r\n".encode())
    (tmp_path / "d.txt").write_bytes("\ufeffa.png 1,1,5,5,1\r\na.png\r\n".encode())
    ds = TxtDataset(tmp_path / "d.txt")
    assert ds.class_names == ["x", "y"] and len(ds) == 2 and ds[0].labels.tolist() == [2]
