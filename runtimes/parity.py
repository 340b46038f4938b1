"""Parity: do two runtimes give the same detections on the same images?

Detections are matched per image and class, greedily by the reference's score, to the
unmatched test detection of highest IoU (at least `match_iou`). The report gives the
matched fraction, the largest box deviation (pixels) and score deviation over matched
pairs, the unmatched counts on each side and, when ground truth is given, the COCO mAP of
each side and their difference. Thresholds are explicit and `check` fails loudly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .base import Detections


@dataclass(frozen=True)
class Thresholds:
    min_matched: float = 0.99  # matched / max(reference count, test count)
    max_box_px: float = 0.5  # largest |coordinate difference| of a matched pair, original pixels
    max_score: float = 0.01  # largest |score difference| of a matched pair
    max_map_diff: float = 0.001  # |mAP@[.5:.95] difference|
    match_iou: float = 0.5  # a pair must overlap at least this much to match


# Parity of fp16 artifacts (fp16 weights or fp16 compute): rounding moves scores a little, and
# where two overlapping boxes nearly tie, NMS may keep the other one, so a matched pair can
# differ by several pixels (11 px seen on a trained shapes model whose mAP moved by 0.0001).
# Per-detection deviations are therefore reported, not checked; matched fraction and mAP are.
FP16 = Thresholds(min_matched=0.95, max_box_px=math.inf, max_score=math.inf, max_map_diff=0.005)


@dataclass
class ParityReport:
    images: int
    reference: int  # detections on the reference side
    test: int
    matched: int
    max_box_px: float
    max_score: float
    map_reference: float | None = None
    map_test: float | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def matched_fraction(self) -> float:
        return self.matched / max(self.reference, self.test) if max(self.reference, self.test) else 1.0

    @property
    def map_diff(self) -> float | None:
        if self.map_reference is None or self.map_test is None:
            return None
        return abs(self.map_test - self.map_reference)

    def failures(self) -> list[str]:
        t, out = self.thresholds, []
        if self.matched_fraction < t.min_matched:
            out.append(f"matched {self.matched_fraction:.2%} < {t.min_matched:.0%}")
        if self.max_box_px > t.max_box_px:
            out.append(f"box deviation {self.max_box_px:.3f} px > {t.max_box_px} px")
        if self.max_score > t.max_score:
            out.append(f"score deviation {self.max_score:.4f} > {t.max_score}")
        if self.map_diff is not None and self.map_diff > t.max_map_diff:
            out.append(f"mAP difference {self.map_diff:.4f} > {t.max_map_diff}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def summary(self) -> str:
        m = "" if self.map_diff is None else \
            f", mAP {self.map_test:.4f} vs {self.map_reference:.4f} (diff {self.map_diff:.4f})"
        return (f"{self.matched}/{max(self.reference, self.test)} matched ({self.matched_fraction:.2%}), "
                f"max box dev {self.max_box_px:.4f} px, max score dev {self.max_score:.5f}, "
                f"unmatched {self.reference - self.matched} ref / {self.test - self.matched} test{m}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(matched_fraction=self.matched_fraction, map_diff=self.map_diff, passed=self.passed,
                 failures=self.failures())
        return d


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    union = area_a[:, None] + area_b[None] - inter
    iou = inter / np.where(union > 0, union, 1)
    # two empty boxes overlap fully when they sit at the same place
    same = np.abs(a[:, None] - b[None]).max(axis=2) < 1e-3
    return np.where(union > 0, iou, same.astype(float))


def match(ref: Detections, test: Detections, min_iou: float) -> list[tuple[int, int]]:
    """Pairs (ref index, test index) of the same class, greedily by reference score."""
    pairs = []
    for label in np.unique(ref.labels):
        ri = np.flatnonzero(ref.labels == label)
        ti = np.flatnonzero(test.labels == label)
        if not len(ti):
            continue
        iou = iou_matrix(ref.boxes[ri], test.boxes[ti])
        taken = np.zeros(len(ti), bool)
        for r in np.argsort(-ref.scores[ri], kind="stable"):
            cand = np.where(taken, -1.0, iou[r])
            t = int(np.argmax(cand))
            if cand[t] >= min_iou:
                taken[t] = True
                pairs.append((int(ri[r]), int(ti[t])))
    return pairs


def compare(reference: list[Detections], test: list[Detections], thresholds: Thresholds = Thresholds(),
            gt=None, image_ids: list[int] | None = None, category_ids: list[int] | None = None) -> ParityReport:
    """Compare two runtimes' detections on the same images (original-image pixels).

    With `gt` (a COCO dict/path/object) and the images' `image_ids`, the report includes
    the COCO mAP of both sides.
    """
    if len(reference) != len(test):
        raise ValueError(f"{len(reference)} reference images but {len(test)} test images")
    matched, box_dev, score_dev = 0, 0.0, 0.0
    for ref, tst in zip(reference, test):
        pairs = match(ref, tst, thresholds.match_iou)
        matched += len(pairs)
        if pairs:
            r, t = np.array(pairs).T
            box_dev = max(box_dev, float(np.abs(ref.boxes[r] - tst.boxes[t]).max()))
            score_dev = max(score_dev, float(np.abs(ref.scores[r] - tst.scores[t]).max()))
    report = ParityReport(images=len(reference), reference=sum(map(len, reference)), test=sum(map(len, test)),
                          matched=matched, max_box_px=box_dev, max_score=score_dev, thresholds=thresholds)
    if gt is not None:
        from .coco import evaluate, restrict, to_coco_results

        ids = image_ids if image_ids is not None else list(range(1, len(reference) + 1))

        def score(dets):
            results = [r for i, d in zip(ids, dets) for r in to_coco_results(i, d.boxes, d.scores, d.labels, category_ids)]
            return evaluate(restrict(gt, ids), results)["AP@[.5:.95]"]

        report.map_reference, report.map_test = score(reference), score(test)
    return report
