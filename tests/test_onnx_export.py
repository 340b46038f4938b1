"""ONNX export: a static graph with metadata, equal to the PyTorch deploy graph in ONNX Runtime."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

import runtimes
from runtimes.meta import META_KEY, ModelMeta

OUTPUTS = ["num_detections", "boxes", "scores", "labels"]


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _all_nodes(attr.g)


def test_standard_flavour_is_static_and_plain(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    ops = {(n.domain, n.op_type) for n in _all_nodes(model.graph)}
    assert not {op for d, op in ops if op in ("Loop", "If", "Scan")}
    assert {d for d, _ in ops} <= {"", "ai.onnx"}
    assert [o.name for o in model.graph.output] == OUTPUTS
    dims = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert dims == {"num_detections": [1], "boxes": [1, 100, 4], "scores": [1, 100], "labels": [1, 100]}
    inp = model.graph.input[0]
    assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 256, 256, 3]
    meta = ModelMeta.from_json({p.key: p.value for p in model.metadata_props}[META_KEY])
    assert meta.class_names[1:] == ["circle", "square", "triangle"] and meta.export["batch"] == 1
    onnx.checker.check_model(model, full_check=True)


def test_dynamic_batch_shapes(tiny_onnx_dynamic):
    model = onnx.load(str(tiny_onnx_dynamic))
    first = [o.type.tensor_type.shape.dim[0] for o in model.graph.output]
    assert all(d.dim_param and not d.dim_value for d in first)
    rest = [[d.dim_value for d in o.type.tensor_type.shape.dim[1:]] for o in model.graph.output]
    assert rest == [[], [100, 4], [100], [100]]


@pytest.fixture(scope="module")
def reference(tiny_run):
    return runtimes.load(tiny_run)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_equals_deploy_graph(reference, tiny_onnx_dynamic, shapes_images, batch):
    ort = runtimes.load(tiny_onnx_dynamic)
    assert ort.batch is None
    canvas, _ = ort.prepare(shapes_images[:batch])
    got, want = ort.infer(canvas), reference.infer(canvas)
    assert {k: v.dtype for k, v in got.items()} == {"num_detections": np.int32, "boxes": np.float32,
                                                    "scores": np.float32, "labels": np.int32}
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    np.testing.assert_array_equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-3)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-5)


def test_fixed_batch_runs_any_number_of_images(tiny_run, tmp_path, shapes_images):
    from exporters.onnx import export_onnx
    from trainer.checkpoint import load_checkpoint

    model, meta = load_checkpoint(tiny_run)
    path = export_onnx(model, meta, tmp_path / "b2.onnx", batch=2)
    det = runtimes.load(path)
    assert det.batch == 2
    dets = det(shapes_images[:3])  # chunks of 2, the last padded
    singles = [runtimes.load(tiny_run)(im) for im in shapes_images[:3]]
    for a, b in zip(dets, singles):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
        assert a.names == b.names


def test_cli_exports_and_verifies(tiny_run, tmp_path):
    out = tmp_path / "cli.onnx"
    r = subprocess.run([sys.executable, "-m", "exporters.onnx", "--checkpoint", str(tiny_run), "--out", str(out),
                        "--parity-images", "3"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "parity OK" in r.stdout and "mAP" in r.stdout and out.exists()


def test_cli_parity_failure_exits_nonzero(tiny_run, tmp_path):
    r = subprocess.run([sys.executable, "-m", "exporters.onnx", "--checkpoint", str(tiny_run), "--out",
                        str(tmp_path / "f.onnx"), "--parity-images", "2", "--max-score-diff", "-1"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "parity FAILED" in r.stdout and "score deviation" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "/nonexistent/run"], "no checkpoint found"),
    (["--checkpoint", "RUN", "--canvas", "250x250"], "multiples of 32"),
    (["--checkpoint", "RUN", "--opset", "12"], "opset 12"),
])
def test_cli_bad_input_is_one_line(tiny_run, args, message):
    args = [str(tiny_run) if a == "RUN" else a for a in args]
    r = subprocess.run([sys.executable, "-m", "exporters.onnx", *args], capture_output=True, text=True)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_trt_flavour_has_plugin_nodes(tiny_run, tmp_path):
    from exporters.onnx import export_onnx
    from exporters.ops import NMS_PLUGIN, PLUGIN_DOMAIN, ROI_ALIGN_PLUGIN
    from trainer.checkpoint import load_checkpoint

    model, meta = load_checkpoint(tiny_run)
    path = export_onnx(model, meta, tmp_path / "m.trt.onnx", batch=None, flavor="trt")
    graph = onnx.load(str(path)).graph
    plugin = [n for n in graph.node if n.domain == PLUGIN_DOMAIN]
    assert sorted(n.op_type for n in plugin) == sorted([NMS_PLUGIN, NMS_PLUGIN, ROI_ALIGN_PLUGIN])
    assert not [n for n in graph.node if n.op_type in ("NonMaxSuppression", "RoiAlign")]
    roi = next(n for n in plugin if n.op_type == ROI_ALIGN_PLUGIN)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in roi.attribute}
    assert attrs["pooled_size"] == 7 and attrs["sampling_ratio"] == model.roi_heads.box_roi_pool.sampling_ratio and attrs["first_level"] == 2
    assert np.allclose(attrs["spatial_scales"], [1 / 4, 1 / 8, 1 / 16, 1 / 32]) and len(roi.input) == 5
    nms = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in plugin if n.op_type == NMS_PLUGIN]
    assert sorted(a["max_output_boxes"] for a in nms) == [100, 100]
