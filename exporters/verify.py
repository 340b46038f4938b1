"""Parity verification shared by every exporter: the artifact as users will run it
(through `runtimes`) against the PyTorch deploy graph, on sample images."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from runtimes.base import Detector, first_line
from runtimes.meta import ModelMeta
from runtimes.parity import ParityReport, Thresholds, compare

from .cli import fail, load_source, thresholds_from


def sample_images(meta: ModelMeta, n: int, download: bool = False, spec: str | None = None):
    """(images, gt, image_ids, source): the checkpoint's validation images (or those of dataset
    `spec`) when the dataset can be read here, else synthetic `shapes` images without ground
    truth for this model's classes. A dataset known by name (coco-val2017) is downloaded only
    when `download`."""
    from trainer.data import validation_set
    from trainer.data.shapes import render

    val_spec = None if spec else meta.provenance.get("val_dataset")
    spec = spec or meta.provenance.get("dataset")
    if spec:
        try:
            val = validation_set(spec, val_spec, download)
            idx = range(min(n, len(val)))
            samples = [val.load(i) for i in idx]
            gt = val.coco_dict()
            return [s.image for s in samples], gt, [s.image_id for s in samples], f"{val.name} ({len(samples)} images)"
        except Exception as e:  # unreadable here: fall back to synthetic images
            print(f"note: dataset {spec!r} not readable here ({first_line(e)}); using synthetic images")
    n = min(n, 32)
    return [render(7, i)[0] for i in range(n)], None, None, f"synthetic shapes ({n} images)"


def run_images(detector: Detector, images: list[np.ndarray], desc: str):
    return [detector(im) for im in tqdm(images, desc=desc, unit="img", leave=False)]


def verify(test: Detector, reference: Detector, meta: ModelMeta, images: int = 16,
           thresholds: Thresholds = Thresholds(), spec: str | None = None) -> ParityReport:
    imgs, gt, ids, source = sample_images(meta, images, spec=spec)
    print(f"parity: {test.runtime} vs {reference.runtime} on {source}")
    ref = run_images(reference, imgs, f"{reference.runtime}")
    tst = run_images(test, imgs, f"{test.runtime}")
    return compare(ref, tst, thresholds, gt=gt, image_ids=ids, category_ids=meta.category_ids)


def pick_reference(model=None, meta: ModelMeta | None = None, onnx=None, reference_checkpoint=None) -> Detector:
    """The parity reference: the PyTorch deploy graph of the checkpoint when there is one (the
    exported model, or --reference-checkpoint), else ONNX Runtime on the source ONNX."""
    import runtimes
    from runtimes.torch import TorchDetector

    if model is None and reference_checkpoint:
        model, meta = load_source(reference_checkpoint)
    if model is not None:
        print("parity reference: the PyTorch deploy graph of the checkpoint")
        return TorchDetector(None, model=model, meta=meta)
    try:
        reference = runtimes.load(onnx, runtime="onnxruntime")
    except runtimes.ModelLoadError as e:
        fail(f"{e}; compare against PyTorch with --reference-checkpoint, or skip with --no-verify")
    print(f"parity reference: ONNX Runtime on {onnx} (--reference-checkpoint compares against PyTorch)")
    return reference


def verify_artifact(test: Detector, name: str, a, model=None, meta: ModelMeta | None = None,
                    fp16: bool = False) -> bool:
    """The exporters' check of a built artifact: `test` against pick_reference, with the
    thresholds of the command's options (add_verify_args); prints the report."""
    reference = pick_reference(model, meta or test.meta, a.onnx, a.reference_checkpoint)
    return print_report(verify(test, reference, test.meta, a.parity_images, thresholds_from(a, fp16)), name)


def print_report(report: ParityReport, name: str) -> bool:
    """One summary line; on failure a readable list of what failed. Returns report.passed."""
    print(f"parity {'OK' if report.passed else 'FAILED'} for {name}: {report.summary()}")
    for f in report.failures():
        print(f"  - {f}")
    if not report.passed:
        print("  (thresholds: " + ", ".join(f"{k}={v}" for k, v in vars(report.thresholds).items()) + ")")
    return report.passed
