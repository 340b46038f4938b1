"""COCO evaluation of a detector on a dataset, and `python -m trainer.eval`.

Images are letterboxed onto the model's canvas exactly as in training and in every
runtime; detections go back to original-image pixels with runtimes.image.boxes_to_image
and are scored by runtimes.coco (pycocotools) against dataset.coco_dict().

    python -m trainer.eval --checkpoint runs/tiny-shapes --data shapes --out results.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from runtimes import coco
from runtimes.image import boxes_to_image
from runtimes.meta import ModelMeta

from .data import DatasetError, DetectionDataset, build_datasets
from .distributed import DeviceError, parse_device
from .loader import EpochBatchSampler, canvas_to_float, make_loader


# torchvision's COCO class list fills the category ids COCO left unused with this name
UNUSED_CLASS = "N/A"


def category_ids_for(meta: ModelMeta, dataset: DetectionDataset) -> list[int]:
    """COCO category id (of `dataset`) for each model label, matched by class name; -1 (no
    category: COCOeval ignores such detections) for torchvision's unused "N/A" labels."""
    ids = dataset.label_category_ids()
    by_name = {name: ids[i + 1] for i, name in enumerate(dataset.class_names)}
    missing = [n for n in meta.class_names[1:] if n not in by_name and n != UNUSED_CLASS]
    if missing:
        raise DatasetError(f"{dataset.name}: has no class {missing[0]!r} of the model "
                           f"(model classes: {', '.join(meta.class_names[1:])})")
    return [0, *(by_name.get(n, -1) for n in meta.class_names[1:])]


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: DetectionDataset, meta: ModelMeta, device="cpu",
            batch_size: int = 8, workers: int = 0, progress: bool = True) -> list[dict]:
    """COCO result records (original-image pixels, the dataset's category ids) for every image."""
    category_ids = category_ids_for(meta, dataset)
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=False, flip=False)
    loader = make_loader(dataset, meta.canvas, sampler, train=False, workers=workers)
    was_training = model.training
    model.eval()
    results = []
    try:
        for batch in tqdm(loader, desc=f"eval {dataset.name}", unit="batch", disable=not progress,
                          leave=False):
            dataset.skipped.update(batch["skipped"])
            outputs = model(canvas_to_float(batch["images"], device))
            for out, lb, image_id in zip(outputs, batch["letterboxes"], batch["image_ids"]):
                boxes = boxes_to_image(out["boxes"].float().cpu().numpy(), lb)
                results += coco.to_coco_results(image_id, boxes, out["scores"].float().cpu().numpy(),
                                                out["labels"].cpu().numpy(), category_ids)
    finally:
        model.train(was_training)
    return results


def evaluate_model(model, dataset: DetectionDataset, meta: ModelMeta, device="cpu", batch_size: int = 8,
                   workers: int = 0, progress: bool = True, gt: dict | None = None) -> tuple[dict, list[dict]]:
    """(the 12 COCO numbers, the result records) of `model` on `dataset`."""
    results = predict(model, dataset, meta, device, batch_size, workers, progress)
    return coco.evaluate(gt if gt is not None else dataset.coco_dict(), results), results


def main(argv=None) -> int:
    from .checkpoint import CheckpointError, load_any

    from .train import Parser

    p = Parser(
        prog="python -m trainer.eval",
        description="COCO mAP of a checkpoint on a dataset's validation split; prints the 12 COCO "
                    "numbers and optionally writes the detections as a COCO results JSON.")
    p.add_argument("--checkpoint", required=True,
                   help="run directory, .safetensors/.json checkpoint, torchvision .pth, or named weights "
                        "(torchvision:resnet50_fpn ...: see python -m trainer --help)")
    p.add_argument("--data", help="dataset spec as for `python -m trainer` "
                                  "(default: the dataset the checkpoint was trained on)")
    p.add_argument("--val-data", help="separate validation set spec (as for `python -m trainer`)")
    p.add_argument("--split", choices=("val", "train"), default="val", help="which split to score (default val)")
    p.add_argument("--out", type=Path, help="write the detections here (COCO results JSON)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    p.add_argument("--workers", type=int, default=0, help="data loading processes (default 0)")
    a = p.parse_args(argv)
    if a.batch_size <= 0:
        p.error("--batch-size must be positive")
    try:
        device = parse_device(a.device)
        model, meta = load_any(a.checkpoint, device=str(device))
        data = a.data or meta.provenance.get("dataset")
        if not data:
            raise DatasetError("the checkpoint does not name its dataset; pass --data")
        train, val = build_datasets(data, a.val_data)
        dataset = val if a.split == "val" else train
        stats, results = evaluate_model(model, dataset, meta, device, a.batch_size, a.workers)
    except (CheckpointError, DatasetError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if dataset.skip_report():
        print(dataset.skip_report(), file=sys.stderr)
    print(f"{dataset.name}: {len(dataset)} images, {len(results)} detections")
    print(coco.format_stats(stats))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results))
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
