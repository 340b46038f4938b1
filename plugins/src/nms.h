// Class-aware greedy NMS with torchvision batched_nms semantics: the pieces shared by the
// CUDA kernels (kernels.cu) and the host reference (host_reference.cpp).
//
// Both sides run the same algorithm on each image:
//   1. candidates are the boxes with score > score_threshold;
//   2. they are ordered by comes_before (descending score, ties: lower index first);
//   3. walking that order, a candidate not yet removed is kept, and suppress_overlaps removes
//      the later candidates of its class whose IoU with it is > iou_threshold;
//   4. the walk stops after max_output_boxes kept boxes (the rest could only come later in
//      the kept list, so this equals running NMS to the end and taking the first K).
#pragma once

#include "hostdevice.h"

namespace frcnn {

// Plain data, passed by value to kernels and mirrored by ctypes in plugins/host.py.
struct NmsParams {
    int batch;
    int num_boxes;  // per image
    float iou_threshold;
    float score_threshold;
    int max_output_boxes;
};

FRCNN_HD inline bool is_candidate(float score, NmsParams const& p) {
    return score > p.score_threshold;  // strict; NaN scores never take part
}

// Processing order: a strict total order, so host and device sorts agree exactly.
FRCNN_HD inline bool comes_before(float score_a, int index_a, float score_b, int index_b) {
    return score_a > score_b || (score_a == score_b && index_a < index_b);
}

// IoU as torchvision computes it; a zero denominator gives NaN, which suppresses nothing.
FRCNN_HD inline float box_iou(float const* a, float const* b) {
    float const area_a = (a[2] - a[0]) * (a[3] - a[1]);
    float const area_b = (b[2] - b[0]) * (b[3] - b[1]);
    float const left = a[0] > b[0] ? a[0] : b[0];
    float const top = a[1] > b[1] ? a[1] : b[1];
    float const right = a[2] < b[2] ? a[2] : b[2];
    float const bottom = a[3] < b[3] ? a[3] : b[3];
    float const w = right - left > 0.f ? right - left : 0.f;
    float const h = bottom - top > 0.f ? bottom - top : 0.f;
    float const inter = w * h;
    return inter / (area_a + area_b - inter);
}

// Step 3 for the candidate at sorted position `kept`: marks removed[j] for the later positions
// j = kept + 1 + first, then every `stride`, whose box has the same class and IoU > threshold.
// order maps sorted positions to box indices; boxes [N, 4] and classes [N] are one image's.
// The host calls it with (first, stride) = (0, 1); a CUDA block with (threadIdx.x, blockDim.x).
FRCNN_HD inline void suppress_overlaps(int kept, int const* order, int num_candidates, float const* boxes,
                                       int const* classes, float iou_threshold, unsigned char* removed, int first,
                                       int stride) {
    int const i = order[kept];
    float const* box_i = boxes + 4 * i;
    int const class_i = classes[i];
    for (int pos = kept + 1 + first; pos < num_candidates; pos += stride) {
        int const j = order[pos];
        if (!removed[pos] && classes[j] == class_i && box_iou(box_i, boxes + 4 * j) > iou_threshold) {
            removed[pos] = 1;
        }
    }
}

}  // namespace frcnn
