"""Shared fixtures: small real models and artifacts, made once per test session."""
from __future__ import annotations

import pytest

SHAPES_CLASSES = ["__background__", "circle", "square", "triangle"]


def make_tiny_checkpoint(run_dir, seed: int = 0, canvas=(256, 256), dataset: str = "shapes:train=8,val=12"):
    """A randomly initialised tiny model saved as a checkpoint (real files, no training)."""
    import torch

    from trainer.checkpoint import save_checkpoint
    from trainer.models import build_model, default_meta

    torch.manual_seed(seed)
    meta = default_meta("tiny", SHAPES_CLASSES, canvas, provenance={"dataset": dataset})
    save_checkpoint(run_dir / "model.safetensors", build_model(meta), meta)
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Run directory holding a random tiny checkpoint (model.safetensors + model.json)."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run):
    """The tiny checkpoint exported to standard-flavour ONNX, batch 1."""
    from exporters.onnx import export_onnx
    from trainer.checkpoint import load_checkpoint

    model, meta = load_checkpoint(tiny_run)
    return export_onnx(model, meta, tiny_run / "model.onnx", batch=1)


@pytest.fixture(scope="session")
def tiny_onnx_dynamic(tiny_run):
    """The tiny checkpoint exported to standard-flavour ONNX with a dynamic batch."""
    from exporters.onnx import export_onnx
    from trainer.checkpoint import load_checkpoint

    model, meta = load_checkpoint(tiny_run)
    return export_onnx(model, meta, tiny_run / "model.dynamic.onnx", batch=None)


@pytest.fixture(scope="session")
def shapes_images():
    """A few synthetic RGB images of different sizes."""
    from trainer.data.shapes import render

    return [render(3, i)[0] for i in range(4)]
