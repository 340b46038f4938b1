"""TensorRT-flavoured ONNX (plugin nodes in domain frcnn.trt) run in ONNX Runtime through
plugins.reference, on hand-built graphs, against torchvision."""

from collections import OrderedDict

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto, helper

from plugins.reference import PLUGIN_DOMAIN, reference_session, to_reference_model

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


def _model(nodes, inputs, outputs):
    graph = helper.make_graph(nodes, "plugin_test", inputs, outputs)
    # onnx 1.23 would write IR version 14, which onnxruntime 1.31 refuses
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17),
                                                                 helper.make_opsetid(PLUGIN_DOMAIN, 1)])


def _roi_align_model(levels):
    node = helper.make_node(
        "FrcnnMultilevelRoIAlign", ["rois"] + [f"p{i}" for i in range(levels)], ["pooled"], domain=PLUGIN_DOMAIN,
        pooled_size=7, sampling_ratio=2, aligned=0, spatial_scales=SCALES[:levels], canonical_scale=224.0,
        canonical_level=4, first_level=2)
    inputs = [helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["B", "R", 4])]
    inputs += [helper.make_tensor_value_info(f"p{i}", TensorProto.FLOAT, ["B", "C", None, None])
               for i in range(levels)]
    return _model([node], inputs, [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None)])


def _inputs(rng, batch, canvas=(128, 160), rois_per_image=40):
    height, width = canvas
    features = [rng.standard_normal((batch, 6, height // s, width // s)).astype(np.float32) for s in (4, 8, 16, 32)]
    xy = rng.uniform(0, [width, height], (batch, rois_per_image, 2))
    rois = np.concatenate([xy, xy + rng.uniform(1, 300, (batch, rois_per_image, 2))], -1).astype(np.float32)
    return rois, features


def test_roi_align_node_matches_torchvision_with_dynamic_batch():
    session = reference_session(_roi_align_model(4))
    rng = np.random.default_rng(0)
    for batch in (1, 3):  # one session, two batch sizes
        rois, features = _inputs(rng, batch)
        (pooled,) = session.run(None, {"rois": rois, **{f"p{i}": f for i, f in enumerate(features)}})
        pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
        expected = pooler(OrderedDict((str(i), torch.from_numpy(f)) for i, f in enumerate(features)),
                          [torch.from_numpy(r) for r in rois], [(128, 160)] * batch).numpy()
        assert pooled.shape == (batch, 40, 6, 7, 7)
        assert np.abs(pooled.reshape(expected.shape) - expected).max() <= 1e-5


@pytest.mark.parametrize("levels", [1, 3])
def test_roi_align_node_with_other_level_counts(levels):
    rng = np.random.default_rng(levels)
    rois, features = _inputs(rng, 2)
    (pooled,) = reference_session(_roi_align_model(levels)).run(
        None, {"rois": rois, **{f"p{i}": f for i, f in enumerate(features[:levels])}})
    pooler = torchvision.ops.MultiScaleRoIAlign([str(i) for i in range(levels)], 7, 2)
    expected = pooler(OrderedDict((str(i), torch.from_numpy(f)) for i, f in enumerate(features[:levels])),
                      [torch.from_numpy(r) for r in rois], [(128, 160)] * 2).numpy()
    assert np.abs(pooled.reshape(expected.shape) - expected).max() <= 1e-5


def _nms_model(iou, score_threshold, k):
    # A standard op feeds the plugin, as in the exported graphs: logits -> Sigmoid -> NMS.
    nodes = [helper.make_node("Sigmoid", ["logits"], ["scores"]),
             helper.make_node("FrcnnBatchedNMS", ["boxes", "scores", "classes"], ["count", "indices"],
                              domain=PLUGIN_DOMAIN, iou_threshold=iou, score_threshold=score_threshold,
                              max_output_boxes=k)]
    inputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["B", "N", 4]),
              helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "N"]),
              helper.make_tensor_value_info("classes", TensorProto.INT32, ["B", "N"])]
    outputs = [helper.make_tensor_value_info("count", TensorProto.INT32, ["B"]),
               helper.make_tensor_value_info("indices", TensorProto.INT32, ["B", k])]
    return _model(nodes, inputs, outputs)


def test_nms_node_matches_torchvision_batched_nms():
    rng = np.random.default_rng(1)
    batch, n, k, iou, score_threshold = 2, 400, 50, 0.5, 0.3
    xy = rng.uniform(0, 300, (batch, n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (batch, n, 2))], -1).astype(np.float32)
    logits = rng.standard_normal((batch, n)).astype(np.float32)
    classes = rng.integers(0, 4, (batch, n)).astype(np.int32)
    count, indices = reference_session(_nms_model(iou, score_threshold, k)).run(
        None, {"boxes": boxes, "logits": logits, "classes": classes})
    assert count.dtype == np.int32 and indices.shape == (batch, k)
    for b in range(batch):
        scores = torch.sigmoid(torch.from_numpy(logits[b]))
        candidates = torch.nonzero(scores > score_threshold).flatten()
        keep = torchvision.ops.batched_nms(torch.from_numpy(boxes[b])[candidates], scores[candidates],
                                           torch.from_numpy(classes[b])[candidates], iou)
        expected = candidates[keep][:k].tolist()
        assert count[b] == len(expected) > 0
        assert indices[b, :count[b]].tolist() == expected
        assert np.all(indices[b, count[b]:] == 0)


def test_nms_node_with_no_boxes():
    count, indices = reference_session(_nms_model(0.5, 0.0, 8)).run(
        None, {"boxes": np.zeros((2, 0, 4), np.float32), "logits": np.zeros((2, 0), np.float32),
               "classes": np.zeros((2, 0), np.int32)})
    assert count.tolist() == [0, 0] and indices.shape == (2, 8) and not indices.any()


def test_rewrite_leaves_the_given_model_untouched():
    model = _roi_align_model(4)
    before = model.SerializeToString()
    rewritten = to_reference_model(model)
    assert model.SerializeToString() == before
    node = rewritten.graph.node[0]
    assert (node.domain, node.op_type) == ("ai.onnx.contrib", "FrcnnMultilevelRoIAlign_4")
    scales = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "spatial_scales")
    assert [float(s) for s in scales.decode().split(",")] == SCALES
    assert {o.domain for o in rewritten.opset_import} == {"", "ai.onnx.contrib"}


def test_unknown_plugin_op_is_a_clear_error(tmp_path):
    node = helper.make_node("FrcnnSomethingElse", ["x"], ["y"], domain=PLUGIN_DOMAIN)
    model = _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "model.trt.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="unknown op frcnn.trt::FrcnnSomethingElse"):
        reference_session(path)
