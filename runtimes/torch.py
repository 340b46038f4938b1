"""PyTorch adapter: a checkpoint run as the eager deploy graph (the reference every export is
checked against), or with `reference=True` as torchvision's own eager forward.

Threads: the model is only read during inference (eval mode, torch.inference_mode, anchors
made at load), so one detector serves several threads at once with no lock; torch runs their
calls in parallel on its own thread pool.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import OUTPUT_NAMES, Detector, ModelLoadError, first_line


def torch_device(torch, device: str) -> str:
    """`device` as torch and safetensors name it ("cpu:0" -> "cpu"), for cpu or a CUDA GPU that is
    there; ModelLoadError otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ModelLoadError(f"unknown torch device {device!r} ({first_line(e)}); use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"device {device!r}: checkpoints run on cpu, cuda or cuda:N")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise ModelLoadError(f"device {device!r}: no such CUDA GPU visible to torch ({count} here)")
    return "cpu" if dev.type == "cpu" else str(dev)


class TorchDetector(Detector):
    runtime = "torch"

    def __init__(self, path, device: str = "cpu", reference: bool = False, threads: int | None = None,
                 model=None, meta=None, arch: str | None = None):
        try:
            import torch

            from exporters.deploy import DeployFasterRCNN
            from trainer.checkpoint import CheckpointError, load_any
        except ImportError as e:  # an edge install: runtimes without torch
            raise ModelLoadError(f"{path}: checkpoints run on PyTorch, which is not importable here ({first_line(e)}); "
                                 "pip install frcnn-deploy[train], or load an exported .onnx or .xml") from None

        device = torch_device(torch, device)
        if threads:
            torch.set_num_threads(threads)
        self.path = Path(path) if path is not None else None
        self.device = device
        if model is None:
            try:
                model, meta = load_any(path, device=device, arch=arch)
            except CheckpointError as e:
                raise ModelLoadError(str(e)) from None
        self.meta = meta
        self.model = model.to(device).eval()
        self.reference = reference
        if reference:
            self.runtime = "torchvision"
        else:
            self.deploy = DeployFasterRCNN(self.model, meta).eval()

    def infer(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(canvas, np.uint8)).to(self.device)
        try:
            with torch.inference_mode():
                out = self._torchvision(x) if self.reference else self.deploy(x)
        except RuntimeError as e:  # e.g. metadata that builds a model which cannot run
            raise ModelLoadError(f"{self.path}: torch cannot run the model ({first_line(e)})") from None
        if x.is_cuda:
            torch.cuda.synchronize()
        return {k: v.cpu().numpy() for k, v in zip(OUTPUT_NAMES, out)}

    def _torchvision(self, x):
        """torchvision's eager forward, padded to the deployed-model contract."""
        import torch

        from trainer.models import canvas_forward

        k = self.meta.detections_per_img
        b = x.shape[0]
        count = torch.zeros(b, dtype=torch.int32)
        boxes, scores = torch.zeros(b, k, 4), torch.zeros(b, k)
        labels = torch.zeros(b, k, dtype=torch.int32)
        for i, det in enumerate(canvas_forward(self.model, x)):
            n = len(det["scores"])
            count[i] = n
            boxes[i, :n], scores[i, :n], labels[i, :n] = det["boxes"].cpu(), det["scores"].cpu(), det["labels"].cpu()
        return count, boxes, scores, labels
