"""The plugin CUDA kernels called directly, without TensorRT: ctypes bindings of
src/kernels.cu through the C launcher src/cuda_launcher.cu, on torch.cuda tensors, for
tests/test_plugins_cuda.py and plugins/bench_kernels.py. Needs nvcc and a CUDA GPU."""

import ctypes
from functools import lru_cache
from typing import Sequence

import torch

from plugins import build
from plugins.params import NmsParams, RoIAlignParams, check_struct_sizes, nms_params, roi_align_params


@lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL:
    """Builds the kernels for the GPU at hand (nvcc -arch=native), once per process."""
    library = ctypes.CDLL(str(build.build_kernel_library("native", force=False)))
    check_struct_sizes(library)
    p = ctypes.c_void_p
    library.frcnn_cuda_multilevel_roi_align.argtypes = [p, ctypes.POINTER(p), ctypes.c_int,
                                                        ctypes.POINTER(RoIAlignParams), p, p]
    library.frcnn_cuda_batched_nms_workspace_size.argtypes = [ctypes.c_int, ctypes.c_int]
    library.frcnn_cuda_batched_nms_workspace_size.restype = ctypes.c_int64
    library.frcnn_cuda_batched_nms.argtypes = [p, p, p, ctypes.POINTER(NmsParams), p, p, p, p]
    return library


def _check(status: int, op: str) -> None:
    if status != 0:
        raise RuntimeError(f"{op} CUDA launch failed with cudaError_t {status}")


def _stream() -> ctypes.c_void_p:
    return ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)


def multilevel_roi_align(rois: torch.Tensor, features: Sequence[torch.Tensor], *, pooled_size: int = 7,
                         sampling_ratio: int = 2, aligned: bool = False, spatial_scales: Sequence[float],
                         canonical_scale: float = 224.0, canonical_level: int = 4,
                         first_level: int = 2) -> torch.Tensor:
    """rois float32 [B, R, 4] and features [B, C, H_l, W_l] (all float32 or all float16) on the
    GPU -> [B, R, C, P, P] in the features' dtype."""
    rois = rois.float().contiguous()
    features = [f.contiguous() for f in features]
    if {f.dtype for f in features} not in ({torch.float32}, {torch.float16}):
        raise ValueError("features must be all float32 or all float16")
    params = roi_align_params(rois.shape, [f.shape for f in features], pooled_size=pooled_size,
                              sampling_ratio=sampling_ratio, aligned=aligned, spatial_scales=spatial_scales,
                              canonical_scale=canonical_scale, canonical_level=canonical_level,
                              first_level=first_level)
    output = torch.empty((params.batch, params.num_rois, params.channels, pooled_size, pooled_size),
                         dtype=features[0].dtype, device=rois.device)
    pointers = (ctypes.c_void_p * len(features))(*[f.data_ptr() for f in features])
    _check(load_library().frcnn_cuda_multilevel_roi_align(
        rois.data_ptr(), pointers, int(features[0].dtype == torch.float16), ctypes.byref(params),
        output.data_ptr(), _stream()), "FrcnnMultilevelRoIAlign")
    return output


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, *, iou_threshold: float,
                score_threshold: float, max_output_boxes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """boxes [B, N, 4], scores [B, N] float32, classes [B, N] int32 on the GPU ->
    count int32 [B], indices int32 [B, K]."""
    boxes, scores = boxes.float().contiguous(), scores.float().contiguous()
    classes = classes.to(torch.int32).contiguous()
    params = nms_params(boxes.shape, scores.shape, classes.shape, iou_threshold=iou_threshold,
                        score_threshold=score_threshold, max_output_boxes=max_output_boxes)
    library = load_library()
    workspace = torch.empty(library.frcnn_cuda_batched_nms_workspace_size(params.batch, params.num_boxes),
                            dtype=torch.uint8, device=boxes.device)
    count = torch.empty(params.batch, dtype=torch.int32, device=boxes.device)
    indices = torch.empty((params.batch, max_output_boxes), dtype=torch.int32, device=boxes.device)
    _check(library.frcnn_cuda_batched_nms(
        boxes.data_ptr(), scores.data_ptr(), classes.data_ptr(), ctypes.byref(params), count.data_ptr(),
        indices.data_ptr(), workspace.data_ptr(), _stream()), "FrcnnBatchedNMS")
    return count, indices
