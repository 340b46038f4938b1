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


def _openvino_ir(onnx_path, folder):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install -e .[openvino])")
    from exporters.openvino import convert

    return convert(onnx_path, folder)


@pytest.fixture(scope="session")
def tiny_ir(tiny_onnx, tmp_path_factory):
    """tiny_onnx converted to an OpenVINO IR (read only: tests that change an IR make their own)."""
    return _openvino_ir(tiny_onnx, tmp_path_factory.mktemp("tiny_ir"))


@pytest.fixture(scope="session")
def openvino_ir(tiny_onnx_dynamic, tmp_path_factory):
    """tiny_onnx_dynamic converted to an OpenVINO IR (read only)."""
    return _openvino_ir(tiny_onnx_dynamic, tmp_path_factory.mktemp("tiny_ir_dynamic"))


@pytest.fixture(scope="session")
def shapes_images():
    """A few synthetic RGB images of different sizes."""
    from trainer.data.shapes import render

    return [render(3, i)[0] for i in range(4)]
