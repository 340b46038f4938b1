"""Reference implementations of the plugin ops for ONNX Runtime, so a TensorRT-flavoured
ONNX model (plugin nodes in domain frcnn.trt) runs on any machine and can be checked against
the standard graph. The ops call the host reference library (plugins/host.py): the same
algorithm code the CUDA kernels run. float32 only: the reference run needs no fp16.

onnxruntime-extensions Python ops have three limits this module works around on a copy of
the model, before the session is created:
  * they load only in the domain ai.onnx.contrib, so plugin nodes move there;
  * an op has a fixed number of inputs, so FrcnnMultilevelRoIAlign with L feature maps
    becomes FrcnnMultilevelRoIAlign_L (one registered op per L);
  * attributes can only be int, float or string scalars, so spatial_scales (floats) travels
    as a comma-separated string.
"""

from pathlib import Path
from typing import Sequence

import onnx
import onnxruntime as ort
import onnxruntime_extensions
from onnxruntime_extensions import PyCustomOpDef, onnx_op

from plugins import PLUGIN_DOMAIN, host
from plugins import NMS_PLUGIN as BATCHED_NMS
from plugins import ROI_ALIGN_PLUGIN as ROI_ALIGN
from plugins.params import MAX_LEVELS

REFERENCE_DOMAIN = "ai.onnx.contrib"

_ROI_ALIGN_ATTRIBUTES = {
    "pooled_size": PyCustomOpDef.dt_int64,
    "sampling_ratio": PyCustomOpDef.dt_int64,
    "aligned": PyCustomOpDef.dt_int64,
    "spatial_scales": PyCustomOpDef.dt_string,
    "canonical_scale": PyCustomOpDef.dt_float,
    "canonical_level": PyCustomOpDef.dt_int64,
    "first_level": PyCustomOpDef.dt_int64,
}
_NMS_ATTRIBUTES = {
    "iou_threshold": PyCustomOpDef.dt_float,
    "score_threshold": PyCustomOpDef.dt_float,
    "max_output_boxes": PyCustomOpDef.dt_int64,
}


def _roi_align(rois, *features, pooled_size, sampling_ratio, aligned, spatial_scales, canonical_scale,
               canonical_level, first_level):
    return host.multilevel_roi_align(
        rois, features, pooled_size=pooled_size, sampling_ratio=sampling_ratio, aligned=bool(aligned),
        spatial_scales=[float(s) for s in spatial_scales.split(",")], canonical_scale=canonical_scale,
        canonical_level=canonical_level, first_level=first_level)


def _batched_nms(boxes, scores, classes, *, iou_threshold, score_threshold, max_output_boxes):
    return host.batched_nms(boxes, scores, classes, iou_threshold=iou_threshold, score_threshold=score_threshold,
                            max_output_boxes=max_output_boxes)


def _register_ops() -> None:
    """onnxruntime-extensions keeps Python ops in a process-wide table: register once, at import."""
    for levels in range(1, MAX_LEVELS + 1):
        onnx_op(op_type=f"{ROI_ALIGN}_{levels}", inputs=[PyCustomOpDef.dt_float] * (1 + levels),
                outputs=[PyCustomOpDef.dt_float], attrs=_ROI_ALIGN_ATTRIBUTES)(_roi_align)
    onnx_op(op_type=BATCHED_NMS, inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32],
            outputs=[PyCustomOpDef.dt_int32, PyCustomOpDef.dt_int32], attrs=_NMS_ATTRIBUTES)(_batched_nms)


_register_ops()


def _graphs(graph: onnx.GraphProto):
    """The graph and every subgraph (If/Loop bodies) inside it."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _graphs(subgraph)


def to_reference_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose plugin nodes run on the reference ops (see the module docstring)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.domain != PLUGIN_DOMAIN:
                continue
            node.domain = REFERENCE_DOMAIN
            if node.op_type == ROI_ALIGN:
                levels = len(node.input) - 1
                if not 1 <= levels <= MAX_LEVELS:
                    raise ValueError(f"{ROI_ALIGN} node {node.name!r} has {levels} feature maps, "
                                     f"the reference supports 1 to {MAX_LEVELS}")
                node.op_type = f"{ROI_ALIGN}_{levels}"
                for attribute in node.attribute:
                    if attribute.name == "spatial_scales":
                        # float32 values print exactly with repr() of their float64 widening
                        text = ",".join(repr(float(s)) for s in attribute.floats)
                        attribute.CopyFrom(onnx.helper.make_attribute("spatial_scales", text))
            elif node.op_type != BATCHED_NMS:
                raise ValueError(f"unknown op {PLUGIN_DOMAIN}::{node.op_type} in node {node.name!r}; "
                                 f"the plugins are {ROI_ALIGN} and {BATCHED_NMS}")
    imports = [opset for opset in model.opset_import if opset.domain not in (PLUGIN_DOMAIN, REFERENCE_DOMAIN)]
    del model.opset_import[:]
    model.opset_import.extend(imports + [onnx.helper.make_opsetid(REFERENCE_DOMAIN, 1)])
    return model


def reference_session(model: str | Path | onnx.ModelProto, providers: Sequence[str] = ("CPUExecutionProvider",),
                      sess_options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session for a model with frcnn.trt plugin nodes, running them on the
    host reference ops. `model` is a path or a loaded ModelProto; `sess_options`, if given,
    gets the onnxruntime-extensions library registered on it."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    sess_options = sess_options or ort.SessionOptions()
    sess_options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    return ort.InferenceSession(to_reference_model(model).SerializeToString(), sess_options,
                                providers=list(providers))
