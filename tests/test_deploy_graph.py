"""The deploy graph and its custom ops keep torchvision's semantics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torchvision.ops import MultiScaleRoIAlign

from exporters import ops
from exporters.deploy import DeployFasterRCNN
from runtimes.image import letterbox
from trainer.checkpoint import load_checkpoint


def _boxes(rng, n, size=200.0):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(1, size / 2, (n, 2))
    return torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32)


def test_batched_nms_matches_torchvision():
    rng = np.random.default_rng(0)
    boxes = torch.stack([_boxes(rng, 300), _boxes(rng, 300)])
    scores = torch.tensor(rng.uniform(0, 1, (2, 300)), dtype=torch.float32)
    classes = torch.tensor(rng.integers(0, 4, (2, 300)))
    count, idx = ops.batched_nms(boxes, scores, classes, 0.5, 0.2, 50)
    assert count.dtype == torch.int32 and idx.shape == (2, 50)
    for b in range(2):
        cand = torch.nonzero(scores[b] > 0.2).squeeze(1)
        ref = cand[torchvision.ops.batched_nms(boxes[b, cand], scores[b, cand], classes[b, cand], 0.5)][:50]
        assert int(count[b]) == len(ref)
        assert torch.equal(idx[b, : len(ref)], ref)
        assert not idx[b, len(ref):].any()


def test_batched_nms_everything_filtered():
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11]]], dtype=torch.float32)
    count, idx = ops.batched_nms(boxes, torch.full((1, 2), -float("inf")), torch.zeros(1, 2, dtype=torch.int64),
                                 0.5, -float("inf"), 2)
    assert int(count[0]) == 0 and not idx.any()


def test_multilevel_roi_align_matches_torchvision():
    torch.manual_seed(0)
    canvas = (128, 192)
    names = ["0", "1", "2", "3"]
    feats = {n: torch.randn(2, 8, canvas[0] // s, canvas[1] // s) for n, s in zip(names, (4, 8, 16, 32))}
    rng = np.random.default_rng(1)
    rois = torch.stack([_boxes(rng, 40, 120), _boxes(rng, 40, 120)])
    rois[0, 0] = torch.tensor([10.0, 10.0, 10.0, 30.0])  # zero area
    pooler = MultiScaleRoIAlign(names, 7, 2)
    ref = pooler(feats, list(rois), [canvas, canvas])
    out = ops.multilevel_roi_align(rois, list(feats.values()), 7, 2, [1 / 4, 1 / 8, 1 / 16, 1 / 32], 224.0, 4, 2, False)
    assert out.shape == (2, 40, 8, 7, 7)
    torch.testing.assert_close(out.flatten(0, 1), ref, atol=1e-5, rtol=0)


def test_roi_levels_boundaries():
    # sqrt(area) = 112, 224, 448 sit exactly on level boundaries 3, 4, 5
    rois = torch.tensor([[0, 0, s, s] for s in (10.0, 111.9, 112.0, 224.0, 448.0, 2000.0)])
    levels = ops.roi_levels(rois, 224.0, 4, 2, 4) + 2
    assert levels.tolist() == [2, 2, 3, 4, 5, 5]


@pytest.fixture(scope="module")
def tiny(tiny_run):
    model, meta = load_checkpoint(tiny_run)
    return model, meta, DeployFasterRCNN(model, meta).eval()


def test_deploy_graph_matches_torchvision_eager(tiny, shapes_images):
    """Same weights, same letterboxed canvas: same detections as torchvision's own forward."""
    from trainer.models import canvas_forward

    model, meta, deploy = tiny
    canvas = torch.from_numpy(np.stack([letterbox(im, meta.canvas)[0] for im in shapes_images]))
    with torch.no_grad():
        count, boxes, scores, labels = deploy(canvas)
        ref = canvas_forward(model, canvas)
    assert boxes.shape == (len(shapes_images), meta.detections_per_img, 4)
    for i, r in enumerate(ref):
        n = int(count[i])
        assert n == len(r["scores"]) > 0
        torch.testing.assert_close(boxes[i, :n], r["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(scores[i, :n], r["scores"], atol=1e-5, rtol=0)
        assert torch.equal(labels[i, :n].long(), r["labels"])
        assert not boxes[i, n:].any() and not scores[i, n:].any() and not labels[i, n:].any()


def test_deploy_graph_blank_image(tiny):
    _, meta, deploy = tiny
    with torch.no_grad():
        count, boxes, scores, labels = deploy(torch.zeros(1, *meta.canvas, 3, dtype=torch.uint8))
    assert count.dtype == torch.int32 and labels.dtype == torch.int32
    assert torch.isfinite(boxes).all() and torch.isfinite(scores).all()
    assert int(count[0]) <= meta.detections_per_img
