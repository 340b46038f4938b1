// CUDA kernels of the plugin ops; the per-element math is in roi_align.h and nms.h, shared
// with the host reference.
#include <cstdint>

#include <cub/device/device_segmented_radix_sort.cuh>
#include <cuda_fp16.h>

#include "kernels.h"

namespace frcnn {
namespace {

constexpr int kThreads = 256;
constexpr int kNmsThreads = 512;  // one block per image walks the sorted candidates

struct LevelPointers {
    void const* data[kMaxLevels];
};

template <typename T>
__global__ void multilevel_roi_align_kernel(RoIAlignParams p, float const* rois, LevelPointers levels, T* output,
                                            int64_t total) {
    T const* features[kMaxLevels];
    for (int l = 0; l < kMaxLevels; ++l) {
        features[l] = static_cast<T const*>(levels.data[l]);
    }
    for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; index < total;
         index += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        output[index] = static_cast<T>(roi_align_element(features, rois, p, index));
    }
}

int grid_for(int64_t total) {
    int64_t const blocks = (total + kThreads - 1) / kThreads;
    return static_cast<int>(blocks < 65535 ? blocks : 65535);  // grid-stride loops cover the rest
}

// NMS scratch layout, the same for workspace_size and launch.
struct NmsWorkspace {
    float* keys_in;
    float* keys_out;
    int* order_in;
    int* order_out;
    int* offsets;      // [B + 1] segment bounds for the segmented sort
    int* num_valid;    // [B] candidates per image
    unsigned char* removed;
    void* sort_temp;
    size_t sort_temp_bytes;
    size_t total_bytes;
};

size_t align_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

size_t sort_temp_bytes(int batch, int num_boxes) {
    size_t bytes = 0;
    cub::DeviceSegmentedRadixSort::SortPairsDescending(nullptr, bytes, static_cast<float const*>(nullptr),
                                                       static_cast<float*>(nullptr), static_cast<int const*>(nullptr),
                                                       static_cast<int*>(nullptr), batch * num_boxes, batch,
                                                       static_cast<int*>(nullptr), static_cast<int*>(nullptr));
    return bytes;
}

NmsWorkspace nms_workspace(void* base, int batch, int num_boxes) {
    size_t const items = static_cast<size_t>(batch) * num_boxes;
    NmsWorkspace w{};
    char* cursor = static_cast<char*>(base);
    size_t offset = 0;
    auto take = [&](size_t bytes) {
        void* at = cursor == nullptr ? nullptr : cursor + offset;
        offset += align_up(bytes);
        return at;
    };
    w.keys_in = static_cast<float*>(take(items * sizeof(float)));
    w.keys_out = static_cast<float*>(take(items * sizeof(float)));
    w.order_in = static_cast<int*>(take(items * sizeof(int)));
    w.order_out = static_cast<int*>(take(items * sizeof(int)));
    w.offsets = static_cast<int*>(take((batch + 1) * sizeof(int)));
    w.num_valid = static_cast<int*>(take(batch * sizeof(int)));
    w.removed = static_cast<unsigned char*>(take(items));
    w.sort_temp_bytes = sort_temp_bytes(batch, num_boxes);
    w.sort_temp = take(w.sort_temp_bytes);
    w.total_bytes = offset;
    return w;
}

// Sort keys: the score for candidates, -inf for the rest, so candidates come first. The radix
// sort is stable, so equal scores keep ascending index order: exactly comes_before().
__global__ void nms_prepare_kernel(NmsParams p, float const* scores, NmsWorkspace w) {
    int64_t const items = static_cast<int64_t>(p.batch) * p.num_boxes;
    int64_t const index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (index <= p.batch) {
        w.offsets[index] = static_cast<int>(index * p.num_boxes);
    }
    if (index < items) {
        bool const candidate = is_candidate(scores[index], p);
        w.keys_in[index] = candidate ? scores[index] : -INFINITY;
        w.order_in[index] = static_cast<int>(index % p.num_boxes);
        w.removed[index] = 0;
        if (candidate) {
            atomicAdd(&w.num_valid[index / p.num_boxes], 1);
        }
    }
}

// One block per image. All threads walk the sorted candidates together; removed[pos] is read
// after the barrier that ended the pass which could have set it, so every thread takes the
// same branch. Each kept box costs one parallel suppression pass.
__global__ void nms_greedy_kernel(NmsParams p, float const* boxes, int const* classes, NmsWorkspace w, int* count,
                                  int* indices) {
    int const b = blockIdx.x;
    int64_t const first = static_cast<int64_t>(b) * p.num_boxes;
    int const* order = w.order_out + first;
    unsigned char* removed = w.removed + first;
    float const* image_boxes = boxes + first * 4;
    int const* image_classes = classes + first;
    int* out = indices + static_cast<int64_t>(b) * p.max_output_boxes;
    int const num_candidates = w.num_valid[b];

    int kept = 0;
    for (int pos = 0; pos < num_candidates && kept < p.max_output_boxes; ++pos) {
        if (removed[pos]) {
            continue;
        }
        if (threadIdx.x == 0) {
            out[kept] = order[pos];
        }
        ++kept;
        suppress_overlaps(pos, order, num_candidates, image_boxes, image_classes, p.iou_threshold, removed,
                          threadIdx.x, blockDim.x);
        __syncthreads();
    }
    for (int k = kept + threadIdx.x; k < p.max_output_boxes; k += blockDim.x) {
        out[k] = 0;
    }
    if (threadIdx.x == 0) {
        count[b] = kept;
    }
}

}  // namespace

cudaError_t launch_multilevel_roi_align(RoIAlignParams const& p, float const* rois, void const* const* features,
                                        FeatureType type, void* output, cudaStream_t stream) {
    if (p.num_levels < 1 || p.num_levels > kMaxLevels) {
        return cudaErrorInvalidValue;
    }
    int64_t const total = static_cast<int64_t>(p.batch) * p.num_rois * p.channels * p.pooled_size * p.pooled_size;
    if (total == 0) {
        return cudaSuccess;
    }
    LevelPointers levels{};
    for (int l = 0; l < p.num_levels; ++l) {
        levels.data[l] = features[l];
    }
    if (type == FeatureType::kFloat16) {
        multilevel_roi_align_kernel<__half>
            <<<grid_for(total), kThreads, 0, stream>>>(p, rois, levels, static_cast<__half*>(output), total);
    } else {
        multilevel_roi_align_kernel<float>
            <<<grid_for(total), kThreads, 0, stream>>>(p, rois, levels, static_cast<float*>(output), total);
    }
    return cudaGetLastError();
}

size_t batched_nms_workspace_size(int batch, int num_boxes) {
    return nms_workspace(nullptr, batch, num_boxes).total_bytes;
}

cudaError_t launch_batched_nms(NmsParams const& p, float const* boxes, float const* scores, int const* classes,
                               int* count, int* indices, void* workspace, cudaStream_t stream) {
    if (p.batch == 0) {
        return cudaSuccess;
    }
    NmsWorkspace w = nms_workspace(workspace, p.batch, p.num_boxes);
    cudaError_t status = cudaMemsetAsync(w.num_valid, 0, p.batch * sizeof(int), stream);
    if (status != cudaSuccess) {
        return status;
    }
    int64_t const items = static_cast<int64_t>(p.batch) * p.num_boxes;
    int64_t const prepare_threads = items > p.batch ? items : p.batch + 1;
    nms_prepare_kernel<<<static_cast<int>((prepare_threads + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
        p, scores, w);
    if (items > 0) {
        status = cub::DeviceSegmentedRadixSort::SortPairsDescending(
            w.sort_temp, w.sort_temp_bytes, w.keys_in, w.keys_out, w.order_in, w.order_out, static_cast<int>(items),
            p.batch, w.offsets, w.offsets + 1, 0, static_cast<int>(sizeof(float) * 8), stream);
        if (status != cudaSuccess) {
            return status;
        }
    }
    nms_greedy_kernel<<<p.batch, kNmsThreads, 0, stream>>>(p, boxes, classes, w, count, indices);
    return cudaGetLastError();
}

}  // namespace frcnn
