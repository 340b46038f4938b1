"""ctypes mirrors of the C parameter structs in src/roi_align.h and src/nms.h, built from
tensor shapes and node attributes. Shared by the host library (host.py) and the CUDA test
library (cuda_kernels.py); each checks the sizes against its library's sizeof at load time."""

import ctypes
from typing import Sequence

MAX_LEVELS = 8  # kMaxLevels in src/roi_align.h


class RoIAlignParams(ctypes.Structure):
    _fields_ = [
        ("batch", ctypes.c_int),
        ("num_rois", ctypes.c_int),
        ("channels", ctypes.c_int),
        ("num_levels", ctypes.c_int),
        ("heights", ctypes.c_int * MAX_LEVELS),
        ("widths", ctypes.c_int * MAX_LEVELS),
        ("spatial_scales", ctypes.c_float * MAX_LEVELS),
        ("pooled_size", ctypes.c_int),
        ("sampling_ratio", ctypes.c_int),
        ("aligned", ctypes.c_int),
        ("canonical_scale", ctypes.c_float),
        ("canonical_level", ctypes.c_int),
        ("first_level", ctypes.c_int),
    ]


class NmsParams(ctypes.Structure):
    _fields_ = [
        ("batch", ctypes.c_int),
        ("num_boxes", ctypes.c_int),
        ("iou_threshold", ctypes.c_float),
        ("score_threshold", ctypes.c_float),
        ("max_output_boxes", ctypes.c_int),
    ]


def check_struct_sizes(library: ctypes.CDLL) -> None:
    """Fails loudly if a library was built from a struct layout other than these mirrors."""
    for struct, probe in ((RoIAlignParams, "frcnn_roi_align_params_size"), (NmsParams, "frcnn_nms_params_size")):
        c_size = getattr(library, probe)()
        if c_size != ctypes.sizeof(struct):
            raise RuntimeError(f"{struct.__name__} is {c_size} bytes in {library._name}, "
                               f"{ctypes.sizeof(struct)} in plugins/params.py: rebuild with python -m plugins.build")


def roi_align_params(rois_shape: Sequence[int], feature_shapes: Sequence[Sequence[int]], *, pooled_size: int,
                     sampling_ratio: int, aligned: bool, spatial_scales: Sequence[float], canonical_scale: float,
                     canonical_level: int, first_level: int) -> RoIAlignParams:
    """rois [B, R, 4], features [B, C, H_l, W_l] finest first; attributes as in plugins/README.md."""
    if len(rois_shape) != 3 or rois_shape[2] != 4:
        raise ValueError(f"rois must be [B, R, 4], got {list(rois_shape)}")
    if not 1 <= len(feature_shapes) <= MAX_LEVELS:
        raise ValueError(f"need 1 to {MAX_LEVELS} feature maps, got {len(feature_shapes)}")
    if len(spatial_scales) != len(feature_shapes):
        raise ValueError(f"{len(spatial_scales)} spatial_scales for {len(feature_shapes)} feature maps")
    batch, num_rois = rois_shape[0], rois_shape[1]
    channels = feature_shapes[0][1] if len(feature_shapes[0]) == 4 else -1
    for shape in feature_shapes:
        if len(shape) != 4 or shape[0] != batch or shape[1] != channels or shape[2] < 1 or shape[3] < 1:
            raise ValueError(f"features must all be [B={batch}, C, H, W] with one C, got "
                             f"{[list(s) for s in feature_shapes]}")
    if pooled_size < 1 or sampling_ratio < 1:
        raise ValueError(f"pooled_size and sampling_ratio must be >= 1, got {pooled_size}, {sampling_ratio}")
    p = RoIAlignParams(batch=batch, num_rois=num_rois, channels=channels, num_levels=len(feature_shapes),
                       pooled_size=pooled_size, sampling_ratio=sampling_ratio, aligned=int(aligned),
                       canonical_scale=canonical_scale, canonical_level=canonical_level, first_level=first_level)
    for level, (shape, scale) in enumerate(zip(feature_shapes, spatial_scales)):
        p.heights[level], p.widths[level], p.spatial_scales[level] = shape[2], shape[3], scale
    return p


def nms_params(boxes_shape: Sequence[int], scores_shape: Sequence[int], classes_shape: Sequence[int], *,
               iou_threshold: float, score_threshold: float, max_output_boxes: int) -> NmsParams:
    """boxes [B, N, 4], scores [B, N], classes [B, N]; attributes as in plugins/README.md."""
    if len(boxes_shape) != 3 or boxes_shape[2] != 4:
        raise ValueError(f"boxes must be [B, N, 4], got {list(boxes_shape)}")
    if list(scores_shape) != list(boxes_shape[:2]) or list(classes_shape) != list(boxes_shape[:2]):
        raise ValueError(f"scores and classes must be [B, N] = {list(boxes_shape[:2])}, "
                         f"got {list(scores_shape)} and {list(classes_shape)}")
    if max_output_boxes < 1:
        raise ValueError(f"max_output_boxes must be >= 1, got {max_output_boxes}")
    return NmsParams(batch=boxes_shape[0], num_boxes=boxes_shape[1], iou_threshold=iou_threshold,
                     score_threshold=score_threshold, max_output_boxes=max_output_boxes)
