"""The runtime interface: one call for every artifact, clear errors on bad input."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import runtimes
from runtimes.image import ImageError, boxes_to_canvas, boxes_to_image, letterbox, to_rgb_uint8


def test_letterbox_roundtrip():
    image = np.full((100, 300, 3), 7, np.uint8)
    canvas, lb = letterbox(image, (256, 256))
    assert canvas.shape == (256, 256, 3)
    assert (canvas[:85, :256] == 7).all() and not canvas[86:].any()  # 100 * 256/300 = 85.3 rows
    boxes = np.array([[10, 20, 110, 90]], np.float32)
    np.testing.assert_allclose(boxes_to_image(boxes_to_canvas(boxes, lb), lb), boxes, atol=1e-4)
    assert boxes_to_image(np.array([[-5, -5, 999, 999]]), lb).tolist() == [[0, 0, 300, 100]]


@pytest.mark.parametrize("image, shape", [
    (np.zeros((20, 30), np.uint8), (20, 30, 3)),  # grayscale
    (np.zeros((20, 30, 1), np.uint8), (20, 30, 3)),
    (np.zeros((20, 30, 4), np.uint8), (20, 30, 3)),  # RGBA
    (np.full((20, 30, 3), 65535, np.uint16), (20, 30, 3)),  # 16-bit
    (np.ones((20, 30, 3), np.float32), (20, 30, 3)),  # float in [0, 1]
])
def test_images_are_converted(image, shape):
    out = to_rgb_uint8(image)
    assert out.shape == shape and out.dtype == np.uint8
    if image.dtype != np.uint8:
        assert out.max() == 255


@pytest.mark.parametrize("image, message", [
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((20, 30, 3), np.int32), "dtype int32"),
    (np.full((20, 30, 3), 3.0, np.float32), "[0, 1]"),
    (np.zeros((20, 30, 5), np.uint8), "shape"),
    ("not an image", "numpy array"),
])
def test_bad_images_are_refused(image, message):
    with pytest.raises(ImageError, match=None) as e:
        to_rgb_uint8(image)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_detector_handles_every_image_kind(tiny_onnx, shapes_images):
    det = runtimes.load(tiny_onnx)
    rgb = shapes_images[0]
    ref = det(rgb)
    assert ref.boxes.shape[1] == 4 and len(ref.names) == len(ref)
    h, w = rgb.shape[:2]
    assert (ref.boxes[:, [0, 2]] <= w).all() and (ref.boxes[:, [1, 3]] <= h).all()
    rgba = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], 2)
    np.testing.assert_allclose(det(rgba).boxes, ref.boxes)
    np.testing.assert_allclose(det(rgb.astype(np.uint16) << 8).boxes, ref.boxes)
    assert len(det(rgb[:, :, 0])) >= 0  # grayscale runs
    assert det([]) == []
    with pytest.raises(ImageError):
        det(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ImageError):
        det(rgb.astype(np.int64))


def test_threshold_filters(tiny_onnx, shapes_images):
    det = runtimes.load(tiny_onnx)
    all_dets = [d for im in shapes_images for d in [det(im)]]
    scores = np.concatenate([d.scores for d in all_dets])
    t = float(np.median(scores))
    high = det(shapes_images, threshold=t)
    kept = np.concatenate([d.scores for d in high])
    assert 0 < len(kept) < len(scores) and (kept >= t).all()


@pytest.mark.parametrize("content, message", [
    (b"", "not a valid ONNX file"),
    (b"\x08\x07garbage" * 10, "not a valid ONNX file"),
])
def test_corrupt_model_file(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(runtimes.ModelLoadError) as e:
        runtimes.load(path)
    assert message in str(e.value) or "no frcnn-deploy metadata" in str(e.value)


def test_truncated_model_file(tiny_onnx, tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes(tiny_onnx.read_bytes()[: tiny_onnx.stat().st_size // 2])
    with pytest.raises(runtimes.ModelLoadError, match="cut.onnx"):
        runtimes.load(path)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(runtimes.ModelLoadError, match="no such file"):
        runtimes.load(tmp_path / "nope.onnx")
    (tmp_path / "x.bin2").write_text("x")
    with pytest.raises(runtimes.ModelLoadError, match="unknown model type"):
        runtimes.load(tmp_path / "x.bin2")


def test_onnxruntime_path_imports_no_torch(tiny_onnx, shapes_images, tmp_path):
    """An edge app runs an ONNX model with torch not importable at all."""
    import cv2

    cv2.imwrite(str(tmp_path / "im.png"), shapes_images[0][:, :, ::-1])
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'torchvision'):
                    raise ImportError('torch is blocked in this test')
        sys.meta_path.insert(0, Block())
        import cv2, runtimes
        det = runtimes.load({str(tiny_onnx)!r})
        dets = det(cv2.imread({str(tmp_path / 'im.png')!r})[:, :, ::-1])
        assert 'torch' not in sys.modules
        print('ok', len(dets))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_torchvision_reference_runtime(tiny_run, shapes_images):
    ref = runtimes.load(tiny_run, runtime="torchvision")
    dep = runtimes.load(tiny_run)
    assert ref.runtime == "torchvision" and dep.runtime == "torch"
    a, b = ref(shapes_images[1]), dep(shapes_images[1])
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    assert a.names == b.names
