"""The plugin algorithms on the CPU: ctypes bindings of the host reference library
(src/host_reference.cpp, the same functions the CUDA kernels call). Builds the library on
first use if it is missing or older than its sources (g++, a second or two)."""

import ctypes
from functools import lru_cache
from typing import Sequence

import numpy as np

from plugins import build
from plugins.params import NmsParams, RoIAlignParams, check_struct_sizes, nms_params, roi_align_params

_float_p = ctypes.POINTER(ctypes.c_float)
_int_p = ctypes.POINTER(ctypes.c_int)


@lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL:
    library = ctypes.CDLL(str(build.build_host_library()))
    check_struct_sizes(library)
    library.frcnn_roi_levels.argtypes = [_float_p, ctypes.c_int64, ctypes.POINTER(RoIAlignParams), _int_p]
    library.frcnn_multilevel_roi_align.argtypes = [_float_p, ctypes.POINTER(_float_p),
                                                   ctypes.POINTER(RoIAlignParams), _float_p]
    library.frcnn_batched_nms.argtypes = [_float_p, _float_p, _int_p, ctypes.POINTER(NmsParams), _int_p, _int_p]
    return library


def _pointer(array: np.ndarray, c_type):
    return array.ctypes.data_as(ctypes.POINTER(c_type))


def _params(rois: np.ndarray, features: Sequence[np.ndarray], **attributes) -> RoIAlignParams:
    return roi_align_params(rois.shape, [f.shape for f in features], **attributes)


def roi_levels(rois: np.ndarray, features: Sequence[np.ndarray], **attributes) -> np.ndarray:
    """Feature list index each RoI of rois [B, R, 4] is pooled from, as int32 [B, R]."""
    rois = np.ascontiguousarray(rois, dtype=np.float32)
    params = _params(rois, features, **attributes)
    levels = np.zeros(rois.shape[:2], dtype=np.int32)
    if load_library().frcnn_roi_levels(_pointer(rois, ctypes.c_float), levels.size, ctypes.byref(params),
                                       _pointer(levels, ctypes.c_int)) != 0:
        raise ValueError(f"invalid RoIAlign parameters: {attributes}")
    return levels


def multilevel_roi_align(rois: np.ndarray, features: Sequence[np.ndarray], *, pooled_size: int = 7,
                         sampling_ratio: int = 2, aligned: bool = False, spatial_scales: Sequence[float],
                         canonical_scale: float = 224.0, canonical_level: int = 4, first_level: int = 2) -> np.ndarray:
    """FrcnnMultilevelRoIAlign on the CPU: rois [B, R, 4], features [B, C, H_l, W_l] (finest
    first) -> float32 [B, R, C, P, P]. Semantics: plugins/README.md."""
    attributes = dict(pooled_size=pooled_size, sampling_ratio=sampling_ratio, aligned=aligned,
                      spatial_scales=spatial_scales, canonical_scale=canonical_scale,
                      canonical_level=canonical_level, first_level=first_level)
    rois = np.ascontiguousarray(rois, dtype=np.float32)
    features = [np.ascontiguousarray(f, dtype=np.float32) for f in features]
    params = _params(rois, features, **attributes)
    output = np.zeros((params.batch, params.num_rois, params.channels, pooled_size, pooled_size), np.float32)
    feature_pointers = (_float_p * len(features))(*[_pointer(f, ctypes.c_float) for f in features])
    if load_library().frcnn_multilevel_roi_align(_pointer(rois, ctypes.c_float), feature_pointers,
                                                 ctypes.byref(params), _pointer(output, ctypes.c_float)) != 0:
        raise ValueError(f"invalid RoIAlign parameters: {attributes}")
    return output


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, *, iou_threshold: float,
                score_threshold: float, max_output_boxes: int) -> tuple[np.ndarray, np.ndarray]:
    """FrcnnBatchedNMS on the CPU: boxes [B, N, 4], scores [B, N], classes [B, N] ->
    count int32 [B], indices int32 [B, K] (padding 0). Semantics: plugins/README.md."""
    boxes = np.ascontiguousarray(boxes, dtype=np.float32)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    classes = np.ascontiguousarray(classes, dtype=np.int32)
    params = nms_params(boxes.shape, scores.shape, classes.shape, iou_threshold=iou_threshold,
                        score_threshold=score_threshold, max_output_boxes=max_output_boxes)
    count = np.zeros(params.batch, np.int32)
    indices = np.zeros((params.batch, max_output_boxes), np.int32)
    if load_library().frcnn_batched_nms(_pointer(boxes, ctypes.c_float), _pointer(scores, ctypes.c_float),
                                        _pointer(classes, ctypes.c_int), ctypes.byref(params),
                                        _pointer(count, ctypes.c_int), _pointer(indices, ctypes.c_int)) != 0:
        raise ValueError("invalid NMS parameters")
    return count, indices
