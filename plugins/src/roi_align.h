// Multi-level RoIAlign with torchvision MultiScaleRoIAlign semantics: the per-element math
// shared by the CUDA kernel (kernels.cu) and the host reference (host_reference.cpp).
#pragma once

#include <math.h>
#include <stdint.h>

#include "hostdevice.h"

namespace frcnn {

constexpr int kMaxLevels = 8;

// Plain data, passed by value to kernels and mirrored by ctypes in plugins/host.py.
struct RoIAlignParams {
    int batch;
    int num_rois;  // per image
    int channels;
    int num_levels;
    int heights[kMaxLevels];
    int widths[kMaxLevels];
    float spatial_scales[kMaxLevels];
    int pooled_size;
    int sampling_ratio;
    int aligned;
    float canonical_scale;
    int canonical_level;
    int first_level;
};

// Feature list index (0 = finest) of the level a RoI [x1, y1, x2, y2] is pooled from.
// Same float32 operations, in the same order, as torchvision's LevelMapper:
// floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6), clamped.
FRCNN_HD inline int roi_level_index(float const* roi, RoIAlignParams const& p) {
    float const area = (roi[2] - roi[0]) * (roi[3] - roi[1]);
    if (!(area > 0.f)) {
        return 0;  // zero, negative or NaN area: first level (the contract in plugins/README.md)
    }
    float const level =
        floorf((static_cast<float>(p.canonical_level) + log2f(sqrtf(area) / p.canonical_scale)) + 1e-6f);
    int const index = static_cast<int>(level) - p.first_level;
    return index < 0 ? 0 : (index >= p.num_levels ? p.num_levels - 1 : index);
}

// torchvision's bilinear_interpolate: zero outside [-1, size], edge-clamped inside.
template <typename T>
FRCNN_HD inline float bilinear(T const* plane, int height, int width, float y, float x) {
    if (y < -1.f || y > height || x < -1.f || x > width) {
        return 0.f;
    }
    y = y <= 0.f ? 0.f : y;
    x = x <= 0.f ? 0.f : x;
    int y_low = static_cast<int>(y);
    int x_low = static_cast<int>(x);
    int y_high = y_low + 1;
    int x_high = x_low + 1;
    if (y_low >= height - 1) {
        y_high = y_low = height - 1;
        y = static_cast<float>(y_low);
    }
    if (x_low >= width - 1) {
        x_high = x_low = width - 1;
        x = static_cast<float>(x_low);
    }
    float const ly = y - y_low;
    float const lx = x - x_low;
    float const hy = 1.f - ly;
    float const hx = 1.f - lx;
    float const v1 = static_cast<float>(plane[y_low * width + x_low]);
    float const v2 = static_cast<float>(plane[y_low * width + x_high]);
    float const v3 = static_cast<float>(plane[y_high * width + x_low]);
    float const v4 = static_cast<float>(plane[y_high * width + x_high]);
    return hy * hx * v1 + hy * lx * v2 + ly * hx * v3 + ly * lx * v4;
}

// One output element of [B, R, C, P, P] (flat index), accumulated in float32 whatever T is.
// rois: [B, R, 4]; features[l]: [B, C, heights[l], widths[l]].
template <typename T>
FRCNN_HD inline float roi_align_element(T const* const* features, float const* rois, RoIAlignParams const& p,
                                        int64_t index) {
    int const pooled = p.pooled_size;
    int const pw = static_cast<int>(index % pooled);
    int const ph = static_cast<int>((index / pooled) % pooled);
    int const c = static_cast<int>((index / (pooled * pooled)) % p.channels);
    int64_t const roi_index = index / (static_cast<int64_t>(pooled) * pooled * p.channels);  // b * R + r
    int64_t const b = roi_index / p.num_rois;

    float const* roi = rois + roi_index * 4;
    int const level = roi_level_index(roi, p);
    int const height = p.heights[level];
    int const width = p.widths[level];
    float const scale = p.spatial_scales[level];
    T const* plane = features[level] + (b * p.channels + c) * height * width;

    float const offset = p.aligned ? 0.5f : 0.f;
    float const start_w = roi[0] * scale - offset;
    float const start_h = roi[1] * scale - offset;
    float roi_w = roi[2] * scale - offset - start_w;
    float roi_h = roi[3] * scale - offset - start_h;
    if (!p.aligned) {  // torchvision aligned=False forces a RoI to at least 1x1
        roi_w = roi_w > 1.f ? roi_w : 1.f;
        roi_h = roi_h > 1.f ? roi_h : 1.f;
    }
    float const bin_w = roi_w / pooled;
    float const bin_h = roi_h / pooled;
    int const grid_h = p.sampling_ratio > 0 ? p.sampling_ratio : static_cast<int>(ceilf(roi_h / pooled));
    int const grid_w = p.sampling_ratio > 0 ? p.sampling_ratio : static_cast<int>(ceilf(roi_w / pooled));
    int const count = grid_h * grid_w > 1 ? grid_h * grid_w : 1;

    float sum = 0.f;
    for (int iy = 0; iy < grid_h; ++iy) {
        float const y = start_h + ph * bin_h + static_cast<float>(iy + .5f) * bin_h / static_cast<float>(grid_h);
        for (int ix = 0; ix < grid_w; ++ix) {
            float const x = start_w + pw * bin_w + static_cast<float>(ix + .5f) * bin_w / static_cast<float>(grid_w);
            sum += bilinear(plane, height, width, y, x);
        }
    }
    return sum / count;
}

}  // namespace frcnn
