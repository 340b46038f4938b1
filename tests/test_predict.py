"""`python -m runtimes.predict` on real image files and videos: the drawn boxes sit where the
COCO JSON says, the JSON holds what the detector finds, bad inputs are skipped and counted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import runtimes
from runtimes.draw import class_colour, label_box, line_width_for
from trainer.data.shapes import SPLIT_SEEDS, render

REPO = Path(__file__).resolve().parents[1]
# width, height. Square: the random model's best boxes hug the letterbox padding of a
# non-square image and come out a few pixels high; on a square one they are boxes to look at.
VIDEO_SIZE = (240, 240)
VIDEO_FPS = 5.0


def predict(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "runtimes.predict", *map(str, args)], cwd=cwd or REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def write_video(path: Path, seed: int, frames: int = 10, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), VIDEO_FPS, VIDEO_SIZE)
    assert writer.isOpened()
    for i in range(frames):
        rgb = render(seed, i)[0]
        writer.write(cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), VIDEO_SIZE))
    writer.release()
    return path


def break_mjpeg_frame(path: Path, index: int) -> None:
    """Zero the JPEG data of one frame of an MJPG .avi: the demuxer still finds the frame,
    the decoder cannot decode it, and VideoCapture.read returns False in mid-stream."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]  # JPEG start markers
    begin, end = starts[index], starts[index + 1]
    data[begin:end - 8] = bytes(end - 8 - begin)
    path.write_bytes(bytes(data))


def decoded_frames(path: Path) -> dict[int, np.ndarray]:
    """Every decodable frame by index, read the way OpenCV reads it (the same pixels predict saw)."""
    capture, frames, index = cv2.VideoCapture(str(path)), {}, 0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    while index < total:
        ok, frame = capture.read()
        if ok:
            frames[index] = frame
        index += 1
    return frames


def outline(box, shape) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels on a box's four edges, at the rounded JSON coordinates."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    h, w = shape[:2]
    xs, ys = np.arange(x1, x2 + 1), np.arange(y1, y2 + 1)
    rows = np.concatenate([np.full_like(xs, y1), np.full_like(xs, y2), ys, ys])
    cols = np.concatenate([xs, xs, np.full_like(ys, x1), np.full_like(ys, x2)])
    keep = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return rows[keep], cols[keep]


def visible(box, shape, least: int = 4) -> bool:
    """Whether a box is big enough and inside the image enough to check its outline pixel by pixel."""
    x1, y1, x2, y2 = np.clip(np.round(box), 0, [shape[1] - 1, shape[0] - 1] * 2)
    return x2 - x1 >= least and y2 - y1 >= least


def records_by_image(save_dir: Path) -> tuple[dict, dict[int, list]]:
    table = json.loads((save_dir / "images.json").read_text())
    records: dict[int, list] = {im["id"]: [] for im in table["images"]}
    for r in json.loads((save_dir / "detections.json").read_text()):
        records[r["image_id"]].append(r)
    return table, records


def as_xyxy(records) -> np.ndarray:
    return np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in records)], np.float32).reshape(-1, 4)


def assert_same_detections(records, expected, meta) -> None:
    """The JSON records of one image are the detector's own output for that image."""
    assert len(records) == len(expected)
    order = np.argsort(-expected.scores, kind="stable")
    got = sorted(records, key=lambda r: -r["score"])
    np.testing.assert_allclose(as_xyxy(got), expected.boxes[order], atol=0.01)
    np.testing.assert_allclose([r["score"] for r in got], expected.scores[order], atol=1e-4)
    assert [r["category_id"] for r in got] == [meta.category_id(l) for l in expected.labels[order]]


def label_of(category_id: int, meta) -> int:
    """The model label whose colour and name a COCO category id was drawn with."""
    return meta.category_ids.index(category_id) if meta.category_ids else category_id


@pytest.fixture(scope="module")
def detector(tiny_onnx_dynamic):
    return runtimes.load(tiny_onnx_dynamic)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    for i, side in enumerate((184, 224, 280)):  # smaller and larger than the 256x256 canvas
        # square crops, for the reason given at VIDEO_SIZE; PNG: lossless, so the test
        # compares exactly the pixels predict read and wrote
        rgb = render(SPLIT_SEEDS["val"], i, size_range=((side, side + 1), (side, side + 1)))[0]
        assert cv2.imwrite(str(d / f"shape{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "notes.txt").write_text("not an image, ignored")
    return d


def few_boxes_threshold(detector, images_bgr, per_image: int = 4) -> float:
    """A threshold that keeps at most `per_image` boxes of the random model per image (and some boxes),
    so the boxes are few enough to check every drawn pixel."""
    dets = detector([cv2.cvtColor(im, cv2.COLOR_BGR2RGB) for im in images_bgr])
    kth = [np.sort(d.scores)[::-1][min(per_image, len(d)) - 1] for d in dets if len(d)]
    return float(max(kth)) + 1e-4


def test_images_are_drawn_where_the_json_says(detector, image_dir, tmp_path):
    originals = {p.name: cv2.imread(str(p)) for p in sorted(image_dir.glob("*.png"))}
    threshold = few_boxes_threshold(detector, list(originals.values()))
    save = tmp_path / "out"
    r = predict("--model", detector.path, "--source", image_dir, "--threshold", threshold, "--save-dir", save,
                "--batch", 2, "--show")
    assert r.returncode == 0, r.stderr
    assert "--show: cannot show results" in r.stdout + r.stderr  # headless OpenCV here: one line, then on
    assert "broken.jpg: cannot read the image" in r.stdout + r.stderr
    assert "4 images, 1 skipped" in r.stdout
    table, records = records_by_image(save)
    assert [s["source"] for s in table["skipped"]] == [str(image_dir / "broken.jpg")]
    assert sorted(im["file_name"] for im in table["images"]) == sorted(originals)
    assert {c["name"] for c in table["categories"]} == {"circle", "square", "triangle"}
    names = {c["id"]: c["name"] for c in table["categories"]}
    checked = 0
    for im in table["images"]:
        original, annotated = originals[im["file_name"]], cv2.imread(str(save / im["file_name"]))
        assert annotated.shape == original.shape == (im["height"], im["width"], 3)
        recs = records[im["id"]]
        assert_same_detections(recs, detector(cv2.cvtColor(original, cv2.COLOR_BGR2RGB), threshold=threshold),
                               detector.meta)
        assert len(recs) <= 4
        lw = line_width_for(original)
        # where each box and its label may have drawn; the best box is drawn last, so a box is
        # checked only where no label and no better-scoring box drew over it
        allowed = np.zeros(original.shape[:2], np.uint8)
        for rec in sorted(recs, key=lambda r: -r["score"]):
            box = as_xyxy([rec])[0]
            x1, y1, x2, y2 = rounded = [int(round(v)) for v in box]
            (x, y, w, h), *_ = label_box(f"{names[rec['category_id']]} {rec['score']:.2f}", rounded, original.shape, lw)
            label = np.zeros_like(allowed)
            label[max(0, y - 2): y + h + 2, max(0, x - 2): x + w + 2] = 1
            rows, cols = outline(box, original.shape)
            free = (allowed[rows, cols] == 0) & (label[rows, cols] == 0)
            if visible(box, original.shape) and free.sum() >= 8:  # else hidden under labels and better boxes
                colour = class_colour(label_of(rec["category_id"], detector.meta))
                assert (annotated[rows, cols][free] == colour).all(1).mean() > 0.95
                assert (original[rows, cols][free] == colour).all(1).mean() < 0.05
                checked += 1
            cv2.rectangle(allowed, (x1, y1), (x2, y2), 1, lw + 2)
            allowed |= label
        # nothing changed anywhere else: no stray boxes, nothing in the wrong place
        changed = (annotated != original).any(2)
        assert not (changed & (allowed == 0)).any()
        assert changed.any() == bool(recs)
    assert checked > 0


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    write_video(d / "clip.mp4", seed=7)
    write_video(d / "broken.avi", seed=8, fourcc="MJPG")
    break_mjpeg_frame(d / "broken.avi", 4)
    return d


def test_videos_are_drawn_frame_by_frame_and_broken_frames_skipped(detector, video_dir, tmp_path):
    threshold = few_boxes_threshold(detector, list(decoded_frames(video_dir / "clip.mp4").values()))
    save = tmp_path / "out"
    r = predict("--model", detector.path, "--source", video_dir, "--threshold", threshold, "--save-dir", save,
                "--batch", 3)
    assert r.returncode == 0, r.stderr
    assert "broken.avi frame 4: cannot decode the frame" in r.stdout + r.stderr
    assert "2 video(s), 0 unreadable: 19 frames, 1 broken frames skipped" in r.stdout
    table, records = records_by_image(save)
    assert table["skipped"] == [dict(kind="frame", source=str(video_dir / "broken.avi"), frame=4,
                                     reason="cannot decode the frame")]
    for name, frame_ids in [("clip", list(range(10))), ("broken", [0, 1, 2, 3, 5, 6, 7, 8, 9])]:
        source = next(video_dir.glob(f"{name}.*"))
        entries = [im for im in table["images"] if im["source"] == str(source)]
        assert [im["frame"] for im in entries] == frame_ids
        assert {im["file_name"] for im in entries} == {f"{name}.mp4"}
        inputs = decoded_frames(source)
        assert sorted(inputs) == frame_ids  # the test reads the same frames as predict did
        for im in entries:
            frame = inputs[im["frame"]]
            expected = detector(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), threshold=threshold)
            assert_same_detections(records[im["id"]], expected, detector.meta)

        out = cv2.VideoCapture(str(save / f"{name}.mp4"))
        assert out.get(cv2.CAP_PROP_FPS) == VIDEO_FPS
        assert (out.get(cv2.CAP_PROP_FRAME_WIDTH), out.get(cv2.CAP_PROP_FRAME_HEIGHT)) == VIDEO_SIZE
        assert out.get(cv2.CAP_PROP_FRAME_COUNT) == len(frame_ids)
        # mp4v is lossy: along the best box the drawn colour is close, and far closer than the input was
        k, top = max(((k, r) for k, im in enumerate(entries) for r in records[im["id"]]
                      if visible(as_xyxy([r])[0], (im["height"], im["width"]), least=8)),
                     key=lambda kr: kr[1]["score"])
        for _ in range(k + 1):  # output frames are the decoded input frames, in order
            ok, drawn = out.read()
        rows, cols = outline(as_xyxy([top])[0], drawn.shape)
        colour = np.float32(class_colour(label_of(top["category_id"], detector.meta)))
        drawn_err = np.abs(drawn[rows, cols].astype(np.float32) - colour).mean()
        input_err = np.abs(inputs[entries[k]["frame"]][rows, cols].astype(np.float32) - colour).mean()
        assert ok and drawn_err < 40 and input_err > 2 * drawn_err, (drawn_err, input_err)


def test_bad_model_and_empty_source_are_one_line(tmp_path, detector, image_dir):
    r = predict("--model", tmp_path / "missing.onnx", "--source", image_dir)
    assert r.returncode != 0 and r.stderr.strip() == f"error: {tmp_path / 'missing.onnx'}: no such file or directory"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    r = predict("--model", detector.path, "--source", tmp_path / "empty")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "no images or videos found" in r.stderr
    r = predict("--model", detector.path, "--source", str(tmp_path / "*.jpg"))
    assert r.returncode != 0 and "no images or videos found" in r.stderr
    r = predict("--model", detector.path, "--source", tmp_path / "nothing.png")
    assert r.returncode != 0 and r.stderr.strip().endswith("no such file or directory")
    assert not (tmp_path / "runs").exists()


def test_glob_source_and_default_save_dir_that_never_overwrites(detector, image_dir, tmp_path):
    for run in ("predict", "predict-2"):
        r = predict("--model", detector.path, "--source", str(image_dir / "shape[01].png"), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        save = tmp_path / "runs" / "predict" / run
        assert f"results in {save.relative_to(tmp_path)}" in r.stdout
        assert sorted(p.name for p in save.iterdir()) == ["detections.json", "images.json", "shape0.png", "shape1.png"]


TRAINED = os.environ.get("FRCNN_TRAINED_MODEL")


@pytest.mark.skipif(not TRAINED, reason="no trained shapes model: set FRCNN_TRAINED_MODEL to a run dir or "
                                        "exported artifact trained with `python -m trainer` on shapes")
def test_trained_model_finds_the_rendered_shapes(tmp_path):
    from runtimes.parity import iou_matrix

    src = tmp_path / "val"
    src.mkdir()
    truth = {}
    for i in range(8):
        rgb, boxes, labels = render(SPLIT_SEEDS["val"], i)
        cv2.imwrite(str(src / f"{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        truth[f"{i}.png"] = (boxes, labels)
    r = predict("--model", TRAINED, "--source", src, "--threshold", 0.5, "--save-dir", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    table, records = records_by_image(tmp_path / "out")
    hits = detections = found = shapes = 0
    for im in table["images"]:
        boxes, labels = truth[im["file_name"]]
        recs = records[im["id"]]
        iou = iou_matrix(as_xyxy(recs), boxes) if recs else np.zeros((0, len(boxes)))
        same = np.array([[r["category_id"] == l for l in labels] for r in recs], bool).reshape(iou.shape)
        match = (iou >= 0.5) & same
        hits, detections = hits + match.any(1).sum(), detections + len(recs)
        found, shapes = found + match.any(0).sum(), shapes + len(labels)
    assert detections and hits / detections >= 0.7, f"{hits}/{detections} detections lie on a shape"
    assert found / shapes >= 0.5, f"{found}/{shapes} shapes found"
