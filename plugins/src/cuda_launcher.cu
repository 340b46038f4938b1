// extern "C" entry points to the CUDA kernels, for tests/test_plugins_cuda.py and
// plugins/bench_kernels.py (ctypes, device pointers from torch.cuda). Not part of the plugin.
#include <cstdint>

#include "kernels.h"

#define FRCNN_EXPORT __attribute__((visibility("default")))  // the build hides everything else

extern "C" {

FRCNN_EXPORT int frcnn_roi_align_params_size() { return static_cast<int>(sizeof(frcnn::RoIAlignParams)); }
FRCNN_EXPORT int frcnn_nms_params_size() { return static_cast<int>(sizeof(frcnn::NmsParams)); }

// half_features: 0 for float32 features and output, 1 for float16. Returns a cudaError_t.
FRCNN_EXPORT int frcnn_cuda_multilevel_roi_align(float const* rois, void const* const* features,
                                                 int half_features, frcnn::RoIAlignParams const* p, void* output,
                                                 void* stream) {
    frcnn::FeatureType const type = half_features ? frcnn::FeatureType::kFloat16 : frcnn::FeatureType::kFloat32;
    return frcnn::launch_multilevel_roi_align(*p, rois, features, type, output, static_cast<cudaStream_t>(stream));
}

FRCNN_EXPORT int64_t frcnn_cuda_batched_nms_workspace_size(int batch, int num_boxes) {
    return static_cast<int64_t>(frcnn::batched_nms_workspace_size(batch, num_boxes));
}

FRCNN_EXPORT int frcnn_cuda_batched_nms(float const* boxes, float const* scores, int const* classes,
                                        frcnn::NmsParams const* p, int* count, int* indices, void* workspace,
                                        void* stream) {
    return frcnn::launch_batched_nms(*p, boxes, scores, classes, count, indices, workspace,
                                     static_cast<cudaStream_t>(stream));
}

}  // extern "C"
