"""The parity module: matching, deviations, mAP difference, explicit thresholds."""
from __future__ import annotations

import numpy as np

from runtimes.base import Detections
from runtimes.parity import Thresholds, compare


def _dets(boxes, scores, labels):
    labels = np.asarray(labels, np.int64)
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), labels,
                      [str(l) for l in labels])


A = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 70]], [0.9, 0.8, 0.3], [1, 2, 1])


def test_identical_detections_pass():
    r = compare([A], [A])
    assert r.passed and r.matched == 3 and r.max_box_px == 0 and r.max_score == 0


def test_shift_is_measured_and_fails_threshold():
    moved = _dets(A.boxes + [0.75, 0, 0.75, 0], A.scores + 0.002, A.labels)
    r = compare([A], [moved])
    assert r.matched == 3 and abs(r.max_box_px - 0.75) < 1e-6 and abs(r.max_score - 0.002) < 1e-6
    assert not r.passed and any("box deviation" in f for f in r.failures())
    assert compare([A], [moved], Thresholds(max_box_px=1.0)).passed


def test_unmatched_and_wrong_class():
    other = _dets(A.boxes[:2], A.scores[:2], [1, 3])  # second box changes class, third missing
    r = compare([A], [other])
    assert r.matched == 1 and r.reference - r.matched == 2 and r.test - r.matched == 1
    assert r.matched_fraction == 1 / 3 and not r.passed


def test_map_difference_uses_ground_truth():
    gt = dict(images=[dict(id=1, width=100, height=100, file_name="a.png")],
              annotations=[dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 10, 10], area=100, iscrowd=0)],
              categories=[dict(id=1, name="a"), dict(id=2, name="b")])
    good = _dets([[0, 0, 10, 10]], [0.9], [1])
    bad = _dets([[30, 30, 40, 40]], [0.9], [1])
    r = compare([good], [bad], gt=gt, image_ids=[1])
    assert r.map_reference > 0.999 and r.map_test == 0.0 and r.map_diff > 0.999
    assert any("mAP difference" in f for f in r.failures())
