"""COCO results JSON and COCOeval: the one way every part of the toolkit scores detections.

Boxes are in original-image pixels; COCO wants xywh and category ids.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np

STAT_NAMES = (
    "AP@[.5:.95]", "AP@.5", "AP@.75", "AP small", "AP medium", "AP large",
    "AR@1", "AR@10", "AR@100", "AR small", "AR medium", "AR large",
)


def to_coco_results(image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    category_ids: list[int] | None = None) -> list[dict]:
    """Detections of one image (xyxy, original pixels) as COCO result records."""
    out = []
    for (x1, y1, x2, y2), s, l in zip(np.asarray(boxes, float).reshape(-1, 4), scores, labels):
        cid = int(category_ids[int(l)]) if category_ids else int(l)
        out.append(dict(image_id=int(image_id), category_id=cid,
                        bbox=[round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                        score=round(float(s), 5)))
    return out


def load_gt(gt):
    """A pycocotools COCO object from a COCO dict, a path to a COCO JSON, or a COCO object."""
    from pycocotools.coco import COCO

    if isinstance(gt, COCO):
        return gt
    if isinstance(gt, (str, Path)):
        gt = json.loads(Path(gt).read_text())
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def restrict(gt, image_ids) -> dict:
    """The ground truth (a COCO dict, path or object) of only the given images, as a COCO dict:
    scored against a whole split, the images not run would count as misses."""
    coco = load_gt(gt)
    keep = set(int(i) for i in image_ids)
    return dict(images=[im for im in coco.dataset["images"] if im["id"] in keep],
                annotations=[a for a in coco.dataset["annotations"] if a["image_id"] in keep],
                categories=coco.dataset["categories"])


def evaluate(gt, results: list[dict] | str | Path, verbose: bool = False) -> dict:
    """COCO bbox evaluation; returns {name: value} for the 12 standard numbers (-1 where undefined)."""
    from pycocotools.cocoeval import COCOeval

    coco_gt = load_gt(gt)
    if isinstance(results, (str, Path)):
        results = json.loads(Path(results).read_text())
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        if not results:  # loadRes refuses an empty list; nothing detected scores 0
            return {name: 0.0 for name in STAT_NAMES}
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = sorted(coco_gt.getImgIds())
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}


def format_stats(stats: dict) -> str:
    return "\n".join(f"{name:>12s}: {stats[name]:.4f}" for name in STAT_NAMES)
