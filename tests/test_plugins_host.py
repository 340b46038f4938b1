"""The plugin algorithms (plugins/src/*.h, run by the host reference library) against
torchvision: MultiScaleRoIAlign / roi_align and batched_nms / nms."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from torchvision.ops.poolers import initLevelMapper

from plugins import build, host

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


@pytest.fixture(scope="session", autouse=True)
def host_library():
    return host.load_library()  # builds plugins/build/libfrcnn_host.so if missing or stale


# ---------------------------------------------------------------- RoIAlign


def _pyramid(rng, batch=2, channels=8, canvas=(128, 192)):
    height, width = canvas
    return [rng.standard_normal((batch, channels, height // s, width // s)).astype(np.float32) for s in (4, 8, 16, 32)]


def _torchvision_pooled(rois, features, canvas, sampling_ratio=2):
    pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio)
    named = OrderedDict((str(i), torch.from_numpy(f)) for i, f in enumerate(features))
    pooled = pooler(named, [torch.from_numpy(r) for r in rois], [canvas] * len(rois))
    return pooled.numpy().reshape(rois.shape[0], rois.shape[1], *pooled.shape[1:])


def _random_rois(rng, batch, count, canvas, max_side=400.0):
    xy = rng.uniform(-20, [canvas[1], canvas[0]], (batch, count, 2))
    wh = rng.uniform(0.5, max_side, (batch, count, 2))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roi_align_matches_torchvision_on_random_rois(seed):
    rng = np.random.default_rng(seed)
    canvas = (256, 320)
    features = _pyramid(rng, batch=3, canvas=canvas)
    rois = _random_rois(rng, 3, 60, canvas)
    ours = host.multilevel_roi_align(rois, features, spatial_scales=SCALES)
    assert ours.shape == (3, 60, 8, 7, 7)
    assert np.abs(ours - _torchvision_pooled(rois, features, canvas)).max() <= 1e-5


def test_roi_align_edge_rois_match_torchvision():
    rng = np.random.default_rng(3)
    canvas = (128, 192)
    features = _pyramid(rng, batch=1, canvas=canvas)
    rois = np.array([[
        [10.0, 10.0, 10.0, 10.0],      # zero area (a point)
        [5.0, 7.0, 5.0, 60.0],         # zero width
        [30.0, 40.0, 30.5, 40.25],     # tiny
        [-50.0, -40.0, 20.0, 30.0],    # partly above-left of the map
        [150.0, 100.0, 260.0, 190.0],  # partly below-right
        [300.0, 300.0, 400.0, 380.0],  # fully outside
        [-90.0, -90.0, -10.0, -10.0],  # fully outside, negative
        [0.0, 0.0, 192.0, 128.0],      # the whole canvas
        [0.0, 0.0, 1000.0, 1000.0],    # larger than the canvas: last level
    ]], np.float32)
    ours = host.multilevel_roi_align(rois, features, spatial_scales=SCALES)
    assert np.abs(ours - _torchvision_pooled(rois, features, canvas)).max() <= 1e-5
    assert np.all(ours[0, 5] == 0) and np.all(ours[0, 6] == 0)  # nothing to sample outside the map


def _square_with_area(side):
    return [100.0, 100.0, 100.0 + side, 100.0 + side]


def test_level_assignment_matches_torchvision_level_mapper_on_boundaries():
    # sqrt(area) exactly on the level boundaries 56/112/224/448/896, just below and above them,
    # and non-square boxes with the same areas.
    sides = []
    for boundary in (56.0, 112.0, 224.0, 448.0, 896.0):
        sides += [boundary, np.nextafter(np.float32(boundary), np.float32(0)), boundary - 0.01, boundary + 0.01]
    boxes = [_square_with_area(float(s)) for s in sides]
    boxes += [[0.0, 0.0, 112.0, 448.0], [0.0, 0.0, 448.0, 112.0], [0.0, 0.0, 56.0, 224.0], [0.0, 0.0, 896.0, 224.0],
              [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0],
              # log2(sqrt(area) / 224) in (-1e-6, 0): only the 1e-6 lifts these to the next level
              [0.0, 0.0, 224.0, 223.9998], [0.0, 0.0, 448.0, 447.9996], [0.0, 0.0, 112.0, 111.9999]]
    rois = np.array([boxes], np.float32)
    features = _pyramid(np.random.default_rng(0), batch=1, canvas=(64, 64))
    ours = host.roi_levels(rois, features, pooled_size=7, sampling_ratio=2, aligned=False, spatial_scales=SCALES,
                           canonical_scale=224.0, canonical_level=4, first_level=2)
    mapper = initLevelMapper(2, 5, canonical_scale=224, canonical_level=4, eps=1e-6)
    expected = mapper([torch.from_numpy(rois[0])]).numpy()
    np.testing.assert_array_equal(ours[0], expected)
    assert list(ours[0, :4]) == [0, 0, 0, 0]  # sqrt(area) 56 and just around it: clamped to level 2
    # 224 exactly is level 4 (index 2); so is one float step below (the 1e-6 in the formula);
    # 223.99 is level 3
    assert ours[0, 8] == 2 and ours[0, 9] == 2 and ours[0, 10] == 1
    assert list(ours[0, -3:]) == [2, 3, 1]


def test_negative_area_roi_goes_to_the_first_level():
    # The contract (plugins/README.md); torchvision gives NaN there and pools nothing.
    features = _pyramid(np.random.default_rng(0), batch=1, canvas=(64, 64))
    rois = np.array([[[50.0, 50.0, 10.0, 60.0], [50.0, 50.0, 60.0, 10.0]]], np.float32)
    levels = host.roi_levels(rois, features, pooled_size=7, sampling_ratio=2, aligned=False, spatial_scales=SCALES,
                             canonical_scale=224.0, canonical_level=4, first_level=2)
    assert levels.tolist() == [[0, 0]]


def test_roi_align_with_no_rois_and_batch_two():
    rng = np.random.default_rng(4)
    features = _pyramid(rng, batch=2)
    out = host.multilevel_roi_align(np.zeros((2, 0, 4), np.float32), features, spatial_scales=SCALES)
    assert out.shape == (2, 0, 8, 7, 7)


def test_each_image_pools_from_its_own_features():
    rng = np.random.default_rng(5)
    canvas = (128, 192)
    features = _pyramid(rng, batch=2, canvas=canvas)
    roi = _random_rois(rng, 1, 10, canvas)
    rois = np.concatenate([roi, roi])
    ours = host.multilevel_roi_align(rois, features, spatial_scales=SCALES)
    alone = host.multilevel_roi_align(roi, [f[1:] for f in features], spatial_scales=SCALES)
    np.testing.assert_array_equal(ours[1], alone[0])
    assert not np.allclose(ours[0], ours[1])


@pytest.mark.parametrize("sampling_ratio,aligned", [(1, False), (3, False), (2, True)])
def test_single_level_matches_torchvision_roi_align(sampling_ratio, aligned):
    rng = np.random.default_rng(6)
    feature = rng.standard_normal((2, 4, 40, 50)).astype(np.float32)
    rois = _random_rois(rng, 2, 30, (160, 200), max_side=120)
    ours = host.multilevel_roi_align(rois, [feature], pooled_size=5, sampling_ratio=sampling_ratio, aligned=aligned,
                                     spatial_scales=[0.25])
    boxes = [torch.from_numpy(r) for r in rois]
    expected = torchvision.ops.roi_align(torch.from_numpy(feature), boxes, 5, spatial_scale=0.25,
                                         sampling_ratio=sampling_ratio, aligned=aligned).numpy()
    assert np.abs(ours.reshape(expected.shape) - expected).max() <= 1e-5


def test_roi_align_rejects_bad_shapes_in_one_line():
    features = _pyramid(np.random.default_rng(0), batch=1)
    with pytest.raises(ValueError, match="rois must be"):
        host.multilevel_roi_align(np.zeros((1, 3, 5), np.float32), features, spatial_scales=SCALES)
    with pytest.raises(ValueError, match="spatial_scales"):
        host.multilevel_roi_align(np.zeros((1, 3, 4), np.float32), features, spatial_scales=SCALES[:3])
    with pytest.raises(ValueError, match="B=2"):
        host.multilevel_roi_align(np.zeros((2, 3, 4), np.float32), features, spatial_scales=SCALES)


# ---------------------------------------------------------------- NMS


def _random_detections(rng, batch, count, classes, canvas=200.0):
    xy = rng.uniform(0, canvas, (batch, count, 2))
    wh = rng.uniform(5, 60, (batch, count, 2))
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    scores = rng.permutation(batch * count).reshape(batch, count).astype(np.float32) / (batch * count)  # no ties
    labels = rng.integers(0, classes, (batch, count)).astype(np.int32)
    return boxes, scores, labels


def _torchvision_keep(boxes, scores, labels, iou, score_threshold, k):
    candidates = torch.nonzero(torch.from_numpy(scores) > score_threshold).flatten()
    keep = torchvision.ops.batched_nms(torch.from_numpy(boxes)[candidates], torch.from_numpy(scores)[candidates],
                                       torch.from_numpy(labels)[candidates], iou)
    return candidates[keep][:k].tolist()


def _per_class_keep(boxes, scores, labels, iou, score_threshold, k):
    """batched_nms spelled out: plain nms per class, merged by descending score."""
    kept = []
    for label in np.unique(labels):
        members = np.flatnonzero((labels == label) & (scores > score_threshold))
        keep = torchvision.ops.nms(torch.from_numpy(boxes[members]), torch.from_numpy(scores[members]), iou)
        kept += members[keep.numpy()].tolist()
    return sorted(kept, key=lambda i: -scores[i])[:k]


def _ours(boxes, scores, labels, iou, score_threshold, k):
    count, indices = host.batched_nms(boxes, scores, labels, iou_threshold=iou, score_threshold=score_threshold,
                                      max_output_boxes=k)
    assert np.all(indices[np.arange(k)[None, :] >= count[:, None]] == 0)  # padding is 0
    return [indices[b, :count[b]].tolist() for b in range(len(count))]


@pytest.mark.parametrize("seed,count,classes,iou,score_threshold,k", [
    (0, 300, 5, 0.5, 0.05, 100),
    (1, 1000, 1, 0.7, 0.0, 1000),    # RPN-like: one class, large K
    (2, 500, 20, 0.3, 0.2, 50),
    (3, 200, 3, 0.6, float("-inf"), 300),
])
def test_nms_matches_torchvision_batched_nms(seed, count, classes, iou, score_threshold, k):
    rng = np.random.default_rng(seed)
    boxes, scores, labels = _random_detections(rng, 3, count, classes)
    ours = _ours(boxes, scores, labels, iou, score_threshold, k)
    for b in range(3):
        assert ours[b] == _torchvision_keep(boxes[b], scores[b], labels[b], iou, score_threshold, k)
        assert ours[b] == _per_class_keep(boxes[b], scores[b], labels[b], iou, score_threshold, k)


def test_nms_more_survivors_than_k_keeps_the_top_k():
    rng = np.random.default_rng(7)
    boxes, scores, labels = _random_detections(rng, 1, 400, 4)
    full = _ours(boxes, scores, labels, 0.5, 0.0, 400)[0]
    assert len(full) > 20
    assert _ours(boxes, scores, labels, 0.5, 0.0, 20)[0] == full[:20]


def test_nms_everything_suppressed_by_the_best_box():
    boxes = np.tile(np.array([10, 10, 50, 50], np.float32), (1, 6, 1))
    boxes[0, :, 2] += np.arange(6, dtype=np.float32)  # IoU with the first box > 0.8
    scores = np.array([[0.3, 0.9, 0.5, 0.6, 0.2, 0.4]], np.float32)
    assert _ours(boxes, scores, np.zeros((1, 6), np.int32), 0.5, 0.0, 10) == [[1]]


def test_nms_classes_never_suppress_each_other():
    boxes = np.tile(np.array([10, 10, 50, 50], np.float32), (1, 3, 1))
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    assert _ours(boxes, scores, np.array([[0, 1, 2]], np.int32), 0.5, 0.0, 5) == [[0, 1, 2]]


def test_nms_thresholds_are_strict():
    # IoU of these two boxes is exactly 0.5: not > 0.5, so both stay (as in torchvision).
    boxes = np.array([[[0, 0, 4, 1], [0, 0, 2, 1]]], np.float32)
    scores = np.array([[0.9, 0.8]], np.float32)
    labels = np.zeros((1, 2), np.int32)
    assert _ours(boxes, scores, labels, 0.5, 0.0, 5) == [[0, 1]]
    assert torchvision.ops.nms(torch.from_numpy(boxes[0]), torch.from_numpy(scores[0]), 0.5).tolist() == [0, 1]
    assert _ours(boxes, scores, labels, 0.49, 0.0, 5) == [[0]]
    assert _ours(boxes, scores, labels, 0.5, 0.8, 5) == [[0]]  # score == threshold does not take part


def test_nms_zero_area_boxes_suppress_nothing():
    boxes = np.array([[[5, 5, 5, 5], [5, 5, 5, 5], [5, 5, 5, 9]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    ours = _ours(boxes, scores, np.zeros((1, 3), np.int32), 0.5, 0.0, 5)
    assert ours == [[0, 1, 2]]
    assert ours[0] == torchvision.ops.nms(torch.from_numpy(boxes[0]), torch.from_numpy(scores[0]), 0.5).tolist()


def test_nms_ties_keep_torch_stable_descending_order():
    rng = np.random.default_rng(8)
    boxes, _, labels = _random_detections(rng, 1, 60, 2)
    scores = rng.choice(np.array([0.2, 0.5, 0.9], np.float32), (1, 60))  # many ties
    order = torch.sort(torch.from_numpy(scores[0]), descending=True, stable=True).indices.tolist()
    # Nothing overlaps: the kept list is the stable descending order itself.
    far = (np.arange(60)[:, None] * 100.0 + np.array([0, 0, 10, 10])).astype(np.float32)
    assert _ours(far[None], scores, labels, 0.5, 0.0, 60) == [order]
    # With overlaps: greedy over the stable order (ties -> lower index first) decides who survives.
    expected = []
    for i in order:
        if all(labels[0, i] != labels[0, j] or torchvision.ops.box_iou(torch.from_numpy(boxes[0, i:i + 1]),
                                                                      torch.from_numpy(boxes[0, j:j + 1])) <= 0.5
               for j in expected):
            expected.append(i)
    assert _ours(boxes, scores, labels, 0.5, 0.0, 60) == [expected]


def test_nms_empty_input_and_all_below_threshold():
    count, indices = host.batched_nms(np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), np.float32),
                                      np.zeros((2, 0), np.int32), iou_threshold=0.5, score_threshold=0.0,
                                      max_output_boxes=4)
    assert count.tolist() == [0, 0] and indices.tolist() == [[0] * 4] * 2
    rng = np.random.default_rng(9)
    boxes, scores, labels = _random_detections(rng, 2, 50, 3)
    assert _ours(boxes, scores, labels, 0.5, 1.0, 4) == [[], []]


def test_nms_rejects_bad_shapes_in_one_line():
    with pytest.raises(ValueError, match="scores and classes"):
        host.batched_nms(np.zeros((1, 3, 4), np.float32), np.zeros((1, 2), np.float32), np.zeros((1, 3), np.int32),
                         iou_threshold=0.5, score_threshold=0.0, max_output_boxes=4)


# ---------------------------------------------------------------- the CUDA kernels compile


def _nvcc_missing() -> str | None:
    try:
        build.find_nvcc()
    except build.BuildError as error:
        return str(error)
    return None


@pytest.mark.skipif(_nvcc_missing() is not None, reason=str(_nvcc_missing()))
def test_cuda_kernels_compile_without_tensorrt(tmp_path):
    obj = build.compile_kernels_object(tmp_path / "kernels.o", archs="80")
    assert obj.stat().st_size > 0
