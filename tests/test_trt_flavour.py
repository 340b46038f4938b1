"""The TensorRT-flavoured ONNX (plugin nodes) run in ONNX Runtime through the reference ops
(plugins.reference, built on the plugins' host code) gives the standard graph's detections."""
from __future__ import annotations

import numpy as np
import pytest

import runtimes
from exporters.verify import sample_images
from runtimes.parity import compare


@pytest.fixture(scope="module")
def trt_onnx(tiny_run, tmp_path_factory):
    from exporters.onnx import export_onnx
    from trainer.checkpoint import load_checkpoint

    model, meta = load_checkpoint(tiny_run)
    return export_onnx(model, meta, tmp_path_factory.mktemp("trt") / "model.trt.onnx", batch=None, flavor="trt")


def test_trt_flavour_matches_standard_graph(trt_onnx, tiny_onnx_dynamic):
    plugin, standard = runtimes.load(trt_onnx), runtimes.load(tiny_onnx_dynamic)
    assert plugin.flavor == "trt" and standard.flavor == "onnx"
    images, gt, ids, _ = sample_images(standard.meta, 12)
    canvas, _ = standard.prepare(images)
    a, b = plugin.infer(canvas), standard.infer(canvas)  # batch of 12 through dynamic batch
    np.testing.assert_array_equal(a["num_detections"], b["num_detections"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    report = compare([standard(im) for im in images], [plugin(im) for im in images], gt=gt, image_ids=ids,
                     category_ids=standard.meta.category_ids)
    assert report.matched_fraction >= 0.99 and report.map_diff <= 0.001, report.summary()
