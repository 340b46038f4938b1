"""A torchvision-format .pth state dict imports, exports to ONNX and runs in ONNX Runtime,
matching torchvision's own eager forward on the same images."""
from __future__ import annotations

import pytest
import torch
import torchvision

import runtimes
from runtimes.parity import compare
from trainer.checkpoint import CheckpointError, import_pth, load_pth

CANVAS = (320, 320)  # R50-FPN at a small canvas keeps the test fast; the graph is the same


@pytest.fixture(scope="module")
def r50_pth(tmp_path_factory):
    from trainer.models import freeze_batchnorm

    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    freeze_batchnorm(model.backbone.body)  # the layout of torchvision's pretrained COCO weights
    with torch.no_grad():  # random weights score every class ~1/91: lift one class above the threshold
        model.roi_heads.box_predictor.cls_score.bias[18] = 4.0
    path = tmp_path_factory.mktemp("pth") / "fasterrcnn_resnet50_fpn.pth"
    torch.save(model.state_dict(), path)
    return path


def test_import_reads_architecture_and_coco_names(r50_pth):
    model, meta = import_pth(r50_pth)
    assert meta.arch == "resnet50_fpn" and meta.canvas == (800, 1344) and meta.arch_kwargs == {"frozen_bn": True}
    assert meta.num_classes == 91 and meta.class_names[18] == "dog" and meta.category_id(18) == 18
    state = load_pth(r50_pth)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_pth_exports_and_matches_torchvision(r50_pth, tmp_path, shapes_images):
    from exporters.onnx import export_onnx
    from trainer.models import set_canvas

    model, meta = import_pth(r50_pth)
    set_canvas(model, meta, CANVAS)
    ort = runtimes.load(export_onnx(model, meta, tmp_path / "r50.onnx"))
    from runtimes.torch import TorchDetector

    reference = TorchDetector(None, model=model, meta=meta, reference=True)  # torchvision's eager forward
    images = shapes_images[:2]
    a, b = [reference(im) for im in images], [ort(im) for im in images]
    assert sum(map(len, a)) > 20 and len({n for d in a for n in d.names}) > 2
    report = compare(a, b)
    assert report.passed, report.summary()


def test_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pth"
    torch.save({"weight": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_pth(path)
    assert not marker.exists()
