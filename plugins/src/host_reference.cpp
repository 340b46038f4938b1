// Host (CPU) drivers of the plugin algorithms: the reference the CUDA kernels and the ONNX
// Runtime reference ops are checked against. Plain C++17, no CUDA, no TensorRT; loaded by
// plugins/host.py through ctypes. Functions return 0 on success, 1 on invalid arguments.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "nms.h"
#include "roi_align.h"

using frcnn::NmsParams;
using frcnn::RoIAlignParams;

namespace {

bool valid(RoIAlignParams const& p) {
    if (p.batch < 0 || p.num_rois < 0 || p.channels < 0 || p.num_levels < 1 || p.num_levels > frcnn::kMaxLevels ||
        p.pooled_size < 1 || p.canonical_scale <= 0.f) {
        return false;
    }
    for (int l = 0; l < p.num_levels; ++l) {
        if (p.heights[l] < 1 || p.widths[l] < 1) {
            return false;
        }
    }
    return true;
}

// One image: writes up to K kept indices and returns how many were kept.
int nms_image(float const* boxes, float const* scores, int const* classes, NmsParams const& p, int* kept_indices) {
    std::vector<int> order;
    for (int n = 0; n < p.num_boxes; ++n) {
        if (frcnn::is_candidate(scores[n], p)) {
            order.push_back(n);
        }
    }
    std::sort(order.begin(), order.end(),
              [scores](int a, int b) { return frcnn::comes_before(scores[a], a, scores[b], b); });

    int const num_candidates = static_cast<int>(order.size());
    std::vector<unsigned char> removed(order.size(), 0);
    int kept = 0;
    for (int pos = 0; pos < num_candidates && kept < p.max_output_boxes; ++pos) {
        if (removed[pos]) {
            continue;
        }
        kept_indices[kept++] = order[pos];
        frcnn::suppress_overlaps(pos, order.data(), num_candidates, boxes, classes, p.iou_threshold, removed.data(),
                                 0, 1);
    }
    return kept;
}

}  // namespace

extern "C" {

// Lets the Python side check that its ctypes mirrors have the C layout.
int frcnn_roi_align_params_size() { return static_cast<int>(sizeof(RoIAlignParams)); }
int frcnn_nms_params_size() { return static_cast<int>(sizeof(NmsParams)); }

// levels[i]: feature list index each of the `count` RoIs [x1, y1, x2, y2] is pooled from.
int frcnn_roi_levels(float const* rois, int64_t count, RoIAlignParams const* p, int* levels) {
    if (!valid(*p)) {
        return 1;
    }
    for (int64_t i = 0; i < count; ++i) {
        levels[i] = frcnn::roi_level_index(rois + 4 * i, *p);
    }
    return 0;
}

// rois [B, R, 4]; features[l] [B, C, H_l, W_l]; output [B, R, C, P, P]; all float32.
int frcnn_multilevel_roi_align(float const* rois, float const* const* features, RoIAlignParams const* p,
                               float* output) {
    if (!valid(*p)) {
        return 1;
    }
    int64_t const total =
        static_cast<int64_t>(p->batch) * p->num_rois * p->channels * p->pooled_size * p->pooled_size;
    for (int64_t index = 0; index < total; ++index) {
        output[index] = frcnn::roi_align_element(features, rois, *p, index);
    }
    return 0;
}

// boxes [B, N, 4], scores [B, N], classes [B, N] -> count [B], indices [B, K] (padding 0).
int frcnn_batched_nms(float const* boxes, float const* scores, int const* classes, NmsParams const* p, int* count,
                      int* indices) {
    if (p->batch < 0 || p->num_boxes < 0 || p->max_output_boxes < 0) {
        return 1;
    }
    int const n = p->num_boxes;
    int const k = p->max_output_boxes;
    for (int b = 0; b < p->batch; ++b) {
        int* out = indices + static_cast<int64_t>(b) * k;
        count[b] = nms_image(boxes + static_cast<int64_t>(b) * n * 4, scores + static_cast<int64_t>(b) * n,
                             classes + static_cast<int64_t>(b) * n, *p, out);
        std::fill(out + count[b], out + k, 0);
    }
    return 0;
}

}  // extern "C"
