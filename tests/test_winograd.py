"""Winograd F(4x4, 3x3) rewrite (runtimes.winograd): same outputs as the direct convolution in
real ONNX Runtime sessions, only the convolutions it can handle, a plain standard graph after."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtimes
from runtimes import winograd
from runtimes.onnxruntime import OnnxRuntimeDetector


def conv_model(c, o, h, w, bias=True, batch=1, **attrs):
    """Conv (+ Relu) on an [batch, c, h, w] input; batch None = dynamic. Output shape left to inference."""
    rng = np.random.default_rng(0)
    k = attrs.pop("k", 3)
    groups = attrs.get("group", 1)
    inits = [numpy_helper.from_array((rng.standard_normal((o, c // groups, k, k)) * 0.1).astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(o).astype(np.float32), "b"))
        inputs.append("b")
    attrs.setdefault("pads", [k // 2] * 4)
    nodes = [helper.make_node("Conv", inputs, ["z"], name="conv", **attrs), helper.make_node("Relu", ["z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch or "n", c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("c,o,h,w,bias,batch", [
    (8, 16, 16, 16, True, 1),     # H, W multiples of 4
    (16, 8, 13, 21, True, 1),     # cropped at the bottom and right
    (12, 12, 9, 6, False, None),  # no bias, dynamic batch
])
def test_rewritten_conv_equals_direct(c, o, h, w, bias, batch):
    model = conv_model(c, o, h, w, bias, batch)
    x = np.random.default_rng(1).standard_normal((batch or 3, c, h, w)).astype(np.float32)
    want = run(model, x)
    assert winograd.rewrite(model, min_channels=1, min_tiles=1) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "MatMul" in ops and "DepthToSpace" in ops and ops.count("Conv") == 1  # the depthwise tile transform
    assert {n.domain for n in model.graph.node} <= {""}
    assert "w" not in {i.name for i in model.graph.initializer}  # the 3x3 weights are gone, U replaces them
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(inferred)
    out = [d.dim_value or d.dim_param for d in inferred.graph.output[0].type.tensor_type.shape.dim]
    assert out == [batch or "n", o, h, w]
    got = run(model, x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("attrs", [
    dict(strides=[2, 2]), dict(group=4), dict(dilations=[2, 2], pads=[2, 2, 2, 2]), dict(k=1), dict(k=5),
    dict(pads=[0, 0, 0, 0]),
])
def test_other_convolutions_are_left_alone(attrs):
    model = conv_model(8, 8, 16, 16, **attrs)
    before = model.SerializeToString()
    assert winograd.rewrite(model, min_channels=1, min_tiles=1) == 0
    assert model.SerializeToString() == before


def test_thresholds_pick_only_big_convolutions():
    small_channels, few_tiles = conv_model(128, 128, 64, 64), conv_model(256, 256, 12, 12)
    assert winograd.candidates(small_channels) == [] and winograd.candidates(few_tiles) == []
    assert len(winograd.candidates(conv_model(256, 256, 32, 32))) == 1  # 64 tiles


@pytest.fixture(scope="module")
def rewritten_everywhere(tiny_onnx_dynamic):
    """The tiny model with every 3x3 stride-1 convolution rewritten (the default thresholds pick
    none of its small ones)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(winograd, "MIN_CHANNELS", 1)
        mp.setattr(winograd, "MIN_TILES", 1)
        return OnnxRuntimeDetector(tiny_onnx_dynamic)


def test_default_thresholds_leave_the_tiny_model_as_exported(tiny_onnx_dynamic):
    assert runtimes.load(tiny_onnx_dynamic).winograd_convs == 0


def test_detector_on_rewritten_model_equals_direct(rewritten_everywhere, tiny_onnx_dynamic, shapes_images):
    direct = OnnxRuntimeDetector(tiny_onnx_dynamic, winograd=False)
    assert direct.winograd_convs == 0 and rewritten_everywhere.winograd_convs >= 10
    canvas, _ = direct.prepare(shapes_images[:3])
    got, want = rewritten_everywhere.infer(canvas), direct.infer(canvas)
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    np.testing.assert_array_equal(got["labels"], want["labels"])
    np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-2)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4)
