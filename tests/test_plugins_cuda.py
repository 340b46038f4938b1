"""The plugin CUDA kernels (plugins/src/kernels.cu, called through a small C launcher) against
torchvision on the GPU and against the host reference. Needs a CUDA GPU and nvcc."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision

from plugins import build, host

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


@pytest.fixture(scope="module")
def kernels():
    try:
        build.find_nvcc()
    except build.BuildError as error:
        pytest.skip(str(error))
    from plugins import cuda_kernels
    cuda_kernels.load_library()  # nvcc -arch=native for this GPU
    return cuda_kernels


def _pyramid(generator, batch, channels=16, canvas=(256, 320), dtype=torch.float32):
    height, width = canvas
    return [torch.randn(batch, channels, height // s, width // s, generator=generator).to("cuda", dtype)
            for s in (4, 8, 16, 32)]


def _rois(generator, batch, count, canvas=(256, 320)):
    xy = torch.rand(batch, count, 2, generator=generator) * torch.tensor([canvas[1] + 40.0, canvas[0] + 40.0]) - 20
    wh = torch.rand(batch, count, 2, generator=generator) * 400
    rois = torch.cat([xy, xy + wh], -1)
    rois[0, :3] = torch.tensor([[10.0, 10.0, 10.0, 10.0], [0.0, 0.0, 224.0, 224.0], [400.0, 400.0, 500.0, 500.0]])
    return rois.cuda()


def _torchvision_pooled(rois, features, canvas=(256, 320)):
    pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    named = OrderedDict((str(i), f.float()) for i, f in enumerate(features))
    pooled = pooler(named, list(rois.unbind(0)), [canvas] * rois.shape[0])
    return pooled.reshape(rois.shape[0], rois.shape[1], *pooled.shape[1:])


def test_roi_align_fp32_matches_torchvision_and_host(kernels):
    g = torch.Generator().manual_seed(0)
    features, rois = _pyramid(g, 3), _rois(g, 3, 500)
    ours = kernels.multilevel_roi_align(rois, features, spatial_scales=SCALES)
    torch.cuda.synchronize()
    assert ours.dtype == torch.float32 and ours.shape == (3, 500, 16, 7, 7)
    assert (ours - _torchvision_pooled(rois, features)).abs().max().item() <= 1e-5
    on_host = host.multilevel_roi_align(rois.cpu().numpy(), [f.cpu().numpy() for f in features],
                                        spatial_scales=SCALES)
    assert np.abs(ours.cpu().numpy() - on_host).max() <= 1e-5


def test_roi_align_fp16_features_give_fp16_output(kernels):
    g = torch.Generator().manual_seed(1)
    features, rois = _pyramid(g, 2, dtype=torch.float16), _rois(g, 2, 300)
    ours = kernels.multilevel_roi_align(rois, features, spatial_scales=SCALES)
    assert ours.dtype == torch.float16
    # Same fp16 inputs, float32 accumulation on both sides; the output rounding to fp16 remains.
    expected = _torchvision_pooled(rois, features)
    assert (ours.float() - expected).abs().max().item() <= 2e-3


def test_roi_align_without_rois(kernels):
    g = torch.Generator().manual_seed(2)
    out = kernels.multilevel_roi_align(torch.zeros(2, 0, 4, device="cuda"), _pyramid(g, 2), spatial_scales=SCALES)
    assert out.shape == (2, 0, 16, 7, 7)


def _detections(generator, batch, count, classes, ties=False):
    xy = torch.rand(batch, count, 2, generator=generator) * 600
    boxes = torch.cat([xy, xy + torch.rand(batch, count, 2, generator=generator) * 100 + 5], -1)
    if ties:
        scores = torch.randint(0, 5, (batch, count), generator=generator).float() / 5
    else:
        scores = torch.randperm(batch * count, generator=generator).reshape(batch, count).float() / (batch * count)
    labels = torch.randint(0, classes, (batch, count), generator=generator, dtype=torch.int32)
    return boxes.cuda(), scores.cuda(), labels.cuda()


@pytest.mark.parametrize("count,classes,iou,score_threshold,k", [
    (5000, 1, 0.7, 0.0, 1000),   # RPN-like: more boxes than threads in a block, large K
    (3000, 80, 0.5, 0.05, 100),  # final detections
    (100, 3, 0.5, float("-inf"), 300),
])
def test_nms_matches_torchvision_and_host(kernels, count, classes, iou, score_threshold, k):
    g = torch.Generator().manual_seed(count)
    boxes, scores, labels = _detections(g, 3, count, classes)
    counts, indices = kernels.batched_nms(boxes, scores, labels, iou_threshold=iou, score_threshold=score_threshold,
                                          max_output_boxes=k)
    host_counts, host_indices = host.batched_nms(boxes.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy(),
                                                 iou_threshold=iou, score_threshold=score_threshold,
                                                 max_output_boxes=k)
    np.testing.assert_array_equal(counts.cpu().numpy(), host_counts)
    np.testing.assert_array_equal(indices.cpu().numpy(), host_indices)
    for b in range(3):
        candidates = torch.nonzero(scores[b] > score_threshold).flatten()
        keep = torchvision.ops.batched_nms(boxes[b][candidates], scores[b][candidates], labels[b][candidates], iou)
        assert indices[b, :counts[b]].tolist() == candidates[keep][:k].tolist()


def test_nms_ties_match_the_host_reference(kernels):
    g = torch.Generator().manual_seed(3)
    boxes, scores, labels = _detections(g, 2, 2000, 4, ties=True)
    counts, indices = kernels.batched_nms(boxes, scores, labels, iou_threshold=0.5, score_threshold=0.1,
                                          max_output_boxes=200)
    host_counts, host_indices = host.batched_nms(boxes.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy(),
                                                 iou_threshold=0.5, score_threshold=0.1, max_output_boxes=200)
    np.testing.assert_array_equal(counts.cpu().numpy(), host_counts)
    np.testing.assert_array_equal(indices.cpu().numpy(), host_indices)


def test_nms_without_boxes(kernels):
    counts, indices = kernels.batched_nms(torch.zeros(2, 0, 4, device="cuda"), torch.zeros(2, 0, device="cuda"),
                                          torch.zeros(2, 0, dtype=torch.int32, device="cuda"), iou_threshold=0.5,
                                          score_threshold=0.0, max_output_boxes=5)
    assert counts.tolist() == [0, 0] and indices.tolist() == [[0] * 5] * 2
