// CUDA launchers of the two plugin ops. No TensorRT types here, so kernels.cu compiles and is
// tested without TensorRT; the plugin classes and the test launcher (cuda_launcher.cu) call these.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "nms.h"
#include "roi_align.h"

namespace frcnn {

enum class FeatureType { kFloat32, kFloat16 };

// rois [B, R, 4] float32; features[l] [B, C, H_l, W_l] (host array of device pointers, one
// dtype); output [B, R, C, P, P] of that dtype.
cudaError_t launch_multilevel_roi_align(RoIAlignParams const& p, float const* rois, void const* const* features,
                                        FeatureType type, void* output, cudaStream_t stream);

// Device scratch memory launch_batched_nms needs for `batch` images of `num_boxes` boxes.
// Grows with both arguments, so the size for the largest shapes covers every smaller one.
size_t batched_nms_workspace_size(int batch, int num_boxes);

// boxes [B, N, 4], scores [B, N] float32, classes [B, N] int32 -> count [B], indices [B, K] int32.
cudaError_t launch_batched_nms(NmsParams const& p, float const* boxes, float const* scores, int const* classes,
                               int* count, int* indices, void* workspace, cudaStream_t stream);

}  // namespace frcnn
