"""The two ops that need a TensorRT plugin, as torch custom ops with one meaning each.

`frcnn::batched_nms` and `frcnn::multilevel_roi_align` run eagerly on torchvision's ops;
the ONNX exporter translates them either into standard ONNX ops (for ONNX Runtime and
OpenVINO) or into plugin nodes in the `frcnn.trt` domain (for TensorRT). The semantics
every implementation keeps are written down in plugins/README.md.
"""
from __future__ import annotations

import math

import torch
import torchvision
from torch import Tensor

from plugins import NMS_PLUGIN, PLUGIN_DOMAIN, PLUGIN_FIELDS, ROI_ALIGN_PLUGIN


@torch.library.custom_op("frcnn::batched_nms", mutates_args=())
def batched_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float,
                score_threshold: float, max_output: int) -> tuple[Tensor, Tensor]:
    """Class-aware NMS per image with a fixed-size result.

    boxes [B, N, 4] xyxy, scores [B, N], classes [B, N] int64. Candidates take part when
    score > score_threshold. Returns count int32 [B] and indices int64 [B, max_output]:
    kept indices in descending score order, 0 past count.
    """
    count = torch.zeros(boxes.shape[0], dtype=torch.int32)
    indices = torch.zeros(boxes.shape[0], max_output, dtype=torch.int64)
    for b in range(boxes.shape[0]):
        cand = torch.nonzero(scores[b] > score_threshold).squeeze(1)
        keep = cand[torchvision.ops.batched_nms(boxes[b, cand], scores[b, cand], classes[b, cand], iou_threshold)]
        keep = keep[:max_output]
        count[b] = keep.numel()
        indices[b, : keep.numel()] = keep
    return count.to(boxes.device), indices.to(boxes.device)


@batched_nms.register_fake
def _(boxes, scores, classes, iou_threshold, score_threshold, max_output):
    b = boxes.shape[0]
    return boxes.new_empty((b,), dtype=torch.int32), boxes.new_empty((b, max_output), dtype=torch.int64)


def roi_levels(rois: Tensor, canonical_scale: float, canonical_level: int, first_level: int,
               num_levels: int) -> Tensor:
    """FPN level index (0-based from first_level) of each RoI: torchvision's LevelMapper."""
    area = (rois[..., 2] - rois[..., 0]) * (rois[..., 3] - rois[..., 1])
    k = torch.floor(canonical_level + torch.log2(torch.sqrt(area) / canonical_scale) + 1e-6)
    k = torch.nan_to_num(k, nan=float(first_level))  # negative area: first level (plugins/README.md)
    return (k.clamp(first_level, first_level + num_levels - 1) - first_level).to(torch.int64)


@torch.library.custom_op("frcnn::multilevel_roi_align", mutates_args=())
def multilevel_roi_align(rois: Tensor, features: list[Tensor], pooled_size: int, sampling_ratio: int,
                         spatial_scales: list[float], canonical_scale: float, canonical_level: int,
                         first_level: int, aligned: bool) -> Tensor:
    """torchvision MultiScaleRoIAlign on a batch: rois [B, R, 4] -> [B, R, C, P, P]."""
    b, r = rois.shape[:2]
    c = features[0].shape[1]
    flat = rois.reshape(-1, 4)
    batch_idx = torch.arange(b, device=rois.device, dtype=rois.dtype).repeat_interleave(r)
    levels = roi_levels(flat, canonical_scale, canonical_level, first_level, len(features))
    out = features[0].new_zeros((b * r, c, pooled_size, pooled_size))
    for level, (feat, scale) in enumerate(zip(features, spatial_scales)):
        idx = torch.nonzero(levels == level).squeeze(1)
        if idx.numel():
            boxes = torch.cat([batch_idx[idx, None], flat[idx]], 1).to(feat.dtype)
            out[idx] = torchvision.ops.roi_align(feat, boxes, pooled_size, scale, sampling_ratio, aligned)
    return out.reshape(b, r, c, pooled_size, pooled_size)


@multilevel_roi_align.register_fake
def _(rois, features, pooled_size, sampling_ratio, spatial_scales, canonical_scale, canonical_level,
      first_level, aligned):
    return features[0].new_empty((rois.shape[0], rois.shape[1], features[0].shape[1], pooled_size, pooled_size))


# ---------------------------------------------------------------- ONNX translations
# onnxscript functions used through torch.onnx.export(custom_translation_table=...).

def _onnx_opset():
    from onnxscript import opset18

    return opset18


def onnx_batched_nms(boxes, scores, classes, iou_threshold: float, score_threshold: float, max_output: int):
    """Standard ONNX: coordinate-offset trick + NonMaxSuppression, then a mask and TopK to K."""
    op = _onnx_opset()
    # Shift each class onto its own region so one NonMaxSuppression never mixes classes
    # (torchvision's batched_nms does the same on the CPU).
    offset = op.Add(op.ReduceMax(boxes, keepdims=0), op.Constant(value_float=1.0))
    shifted = op.Add(boxes, op.Unsqueeze(op.Mul(op.Cast(classes, to=1), offset), op.Constant(value_ints=[-1])))
    selected = op.NonMaxSuppression(
        shifted, op.Unsqueeze(scores, op.Constant(value_ints=[1])),
        op.Constant(value_ints=[max_output]), op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[score_threshold]), center_point_box=0)
    where = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # (batch, box) pairs
    ones = op.Expand(op.Constant(value_float=1.0), op.Shape(selected, end=1))
    kept = op.ScatterND(op.ConstantOfShape(op.Shape(scores)), where, ones)  # 0/1 mask; scores may hold -inf
    ranked = op.Where(op.Greater(kept, op.Constant(value_float=0.5)), scores,
                      op.Constant(value_float=-math.inf))
    _, order = op.TopK(ranked, op.Constant(value_ints=[max_output]), axis=1, largest=1, sorted=1)
    count = op.Cast(op.ReduceSum(kept, op.Constant(value_ints=[1]), keepdims=0), to=6)
    valid = op.Less(op.Range(op.Constant(value_int=0), op.Constant(value_int=max_output), op.Constant(value_int=1)),
                    op.Unsqueeze(op.Cast(count, to=7), op.Constant(value_ints=[1])))
    return count, op.Where(valid, order, op.Constant(value_int=0))


def onnx_multilevel_roi_align(rois, features, pooled_size: int, sampling_ratio: int, spatial_scales: list[float],
                              canonical_scale: float, canonical_level: int, first_level: int, aligned: bool):
    """Standard ONNX: level per RoI, then per level NonZero -> Gather -> RoiAlign -> ScatterND."""
    op = _onnx_opset()
    flat = op.Reshape(rois, op.Constant(value_ints=[-1, 4]))
    shape = op.Shape(rois)
    batch, per_image = op.Gather(shape, op.Constant(value_int=0)), op.Gather(shape, op.Constant(value_int=1))
    batch_idx = op.Reshape(
        op.Expand(op.Unsqueeze(op.Range(op.Constant(value_int=0), batch, op.Constant(value_int=1)),
                               op.Constant(value_ints=[1])),
                  op.Concat(op.Unsqueeze(batch, op.Constant(value_ints=[0])),
                            op.Unsqueeze(per_image, op.Constant(value_ints=[0])), axis=0)),
        op.Constant(value_ints=[-1]))
    x1 = op.Gather(flat, op.Constant(value_int=0), axis=1)
    y1 = op.Gather(flat, op.Constant(value_int=1), axis=1)
    x2 = op.Gather(flat, op.Constant(value_int=2), axis=1)
    y2 = op.Gather(flat, op.Constant(value_int=3), axis=1)
    area = op.Mul(op.Sub(x2, x1), op.Sub(y2, y1))
    log2 = op.Div(op.Log(op.Div(op.Sqrt(area), op.Constant(value_float=canonical_scale))),
                  op.Constant(value_float=math.log(2.0)))
    k = op.Floor(op.Add(op.Add(log2, op.Constant(value_float=float(canonical_level))), op.Constant(value_float=1e-6)))
    k = op.Where(op.IsNaN(k), op.Constant(value_float=float(first_level)), k)
    k = op.Clip(k, op.Constant(value_float=float(first_level)),
                op.Constant(value_float=float(first_level + len(features) - 1)))
    channels = op.Shape(features[0], start=1, end=2)
    out_shape = op.Concat(op.Shape(flat, end=1), channels, op.Constant(value_ints=[pooled_size, pooled_size]), axis=0)
    result = op.Expand(op.CastLike(op.Constant(value_float=0.0), features[0]), out_shape)
    for level, (feat, scale) in enumerate(zip(features, spatial_scales)):
        # NonZero of a float mask: TensorRT's support matrix lists NonZero for FP32/FP16 inputs only
        at_level = op.Cast(op.Equal(k, op.Constant(value_float=float(first_level + level))), to=1)
        idx = op.Reshape(op.NonZero(at_level), op.Constant(value_ints=[-1]))
        # RoiAlign wants one type for features and RoIs: pool in fp32 (a no-op cast for fp32
        # features) so that fp16 graphs keep RoI coordinates exact, then cast back
        pooled = op.RoiAlign(
            op.Cast(feat, to=1), op.Gather(flat, idx, axis=0), op.Gather(batch_idx, idx),
            coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
            mode="avg", output_height=pooled_size, output_width=pooled_size,
            sampling_ratio=sampling_ratio, spatial_scale=scale)
        result = op.ScatterND(result, op.Unsqueeze(idx, op.Constant(value_ints=[1])), op.CastLike(pooled, result))
    out = op.Concat(op.Unsqueeze(batch, op.Constant(value_ints=[0])), op.Unsqueeze(per_image, op.Constant(value_ints=[0])),
                    channels, op.Constant(value_ints=[pooled_size, pooled_size]), axis=0)
    return op.Reshape(result, out)


def _register_plugin_schemas() -> None:
    """ONNX schemas for the plugin nodes (plugins/README.md), so onnxscript can emit them and
    onnx.checker can check their inputs, outputs and attributes."""
    from onnx import defs

    if defs.has(NMS_PLUGIN, PLUGIN_DOMAIN):
        return
    P, A = defs.OpSchema.FormalParameter, defs.OpSchema.Attribute

    def attributes(plugin: str):  # the fields the plugin's creator declares, with their ONNX types
        return [A(name, getattr(defs.OpSchema.AttrType, kind)) for name, kind in PLUGIN_FIELDS[plugin].items()]

    variadic = defs.OpSchema.FormalParameterOption.Variadic
    defs.register_schema(defs.OpSchema(
        NMS_PLUGIN, PLUGIN_DOMAIN, 1, "Class-aware batched NMS with fixed-size output.",
        inputs=[P("boxes", "tensor(float)"), P("scores", "tensor(float)"), P("classes", "tensor(int32)")],
        outputs=[P("count", "tensor(int32)"), P("indices", "tensor(int32)")],
        attributes=attributes(NMS_PLUGIN)))
    defs.register_schema(defs.OpSchema(
        ROI_ALIGN_PLUGIN, PLUGIN_DOMAIN, 1, "torchvision MultiScaleRoIAlign over FPN levels.",
        # one variadic input (rois, *features): torch's exporter hands a variadic parameter
        # every positional argument, so a separate leading `rois` input would be duplicated
        inputs=[P("rois_and_features", "T", param_option=variadic, is_homogeneous=False)],
        outputs=[P("pooled", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "feature type")],
        attributes=attributes(ROI_ALIGN_PLUGIN)))


def _plugin_opset():
    from onnxscript import values

    _register_plugin_schemas()
    return values.Opset(PLUGIN_DOMAIN, 1)


def trt_batched_nms(boxes, scores, classes, iou_threshold: float, score_threshold: float, max_output: int):
    """TensorRT flavour: one FrcnnBatchedNMS plugin node (int32 I/O as the plugin declares)."""
    op, plugin = _onnx_opset(), _plugin_opset()
    count, indices = plugin.FrcnnBatchedNMS(
        boxes, scores, op.Cast(classes, to=6), iou_threshold=iou_threshold, score_threshold=score_threshold,
        max_output_boxes=max_output)
    return count, op.Cast(indices, to=7)


def trt_multilevel_roi_align(rois, features, pooled_size: int, sampling_ratio: int, spatial_scales: list[float],
                             canonical_scale: float, canonical_level: int, first_level: int, aligned: bool):
    """TensorRT flavour: one FrcnnMultilevelRoIAlign plugin node."""
    return _plugin_opset().FrcnnMultilevelRoIAlign(
        rois, *features, pooled_size=pooled_size, sampling_ratio=sampling_ratio, aligned=int(aligned),
        spatial_scales=[float(s) for s in spatial_scales], canonical_scale=float(canonical_scale),
        canonical_level=canonical_level, first_level=first_level)


def translation_table(flavor: str) -> dict:
    """custom_translation_table for torch.onnx.export: flavor 'onnx' (standard ops) or 'trt' (plugin nodes)."""
    if flavor == "onnx":
        return {torch.ops.frcnn.batched_nms.default: onnx_batched_nms,
                torch.ops.frcnn.multilevel_roi_align.default: onnx_multilevel_roi_align}
    if flavor == "trt":
        return {torch.ops.frcnn.batched_nms.default: trt_batched_nms,
                torch.ops.frcnn.multilevel_roi_align.default: trt_multilevel_roi_align}
    raise ValueError(f"unknown flavor {flavor!r}; use 'onnx' or 'trt'")
