"""Uniform runtime adapters: every artifact behind one interface.

    import runtimes
    detector = runtimes.load("model.onnx")      # or a run dir, .xml, .engine, triton://host:8000/name
    dets = detector(rgb_image)                  # boxes in original-image pixels, with class names

`load` picks the adapter from the file; only the torch adapter imports torch.
"""
from __future__ import annotations

from pathlib import Path

from .base import Detections, Detector, ModelLoadError, first_line, is_dir, is_file
from .image import ImageError
from .meta import ModelMeta
from .triton import is_triton_url

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")  # TensorRT engine files, as runtimes.load tells them apart
RUNTIMES = ("torch", "torchvision", "onnxruntime", "openvino", "tensorrt", "triton")
_NEEDS = {  # runtime -> (modules it imports, how to install them)
    "torch": (("torch", "torchvision"), "pip install frcnn-deploy"),
    "torchvision": (("torch", "torchvision"), "pip install frcnn-deploy"),
    "onnxruntime": (("onnxruntime",), "pip install onnxruntime"),
    "openvino": (("openvino",), "pip install openvino"),
    "tensorrt": (("tensorrt", "pycuda.driver"), "pip install tensorrt pycuda, on a machine with an NVIDIA GPU"),
    "triton": (("tritonclient.http", "tritonclient.grpc"), "pip install 'tritonclient[http,grpc]'"),
}


def unavailable(runtime: str, device: str = "cpu") -> str | None:
    """Why `runtime` cannot run on `device` on this machine (one line), or None when it can."""
    import importlib

    if runtime not in _NEEDS:
        return f"unknown runtime {runtime!r}"
    modules, install = _NEEDS[runtime]
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # a broken install raises more than ImportError
            return f"{name.split('.')[0]} not importable ({first_line(e)}); {install}"
    gpu = device.startswith("cuda")
    if runtime in ("torch", "torchvision") and gpu:
        import torch

        return None if torch.cuda.is_available() else "no CUDA GPU visible to torch"
    if runtime == "onnxruntime" and gpu:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "onnxruntime has no CUDA execution provider (pip install onnxruntime-gpu)"
    if runtime == "tensorrt":
        from .tensorrt import device_index, find_gpu, import_cuda

        try:
            find_gpu(import_cuda(), device_index(device))
        except ModelLoadError as e:
            return str(e)
    return None


def runtime_for(path) -> str:
    """The runtime that runs an artifact, from its name."""
    if is_triton_url(path):
        return "triton"
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix == ".xml" or (is_dir(p) and any(p.glob("*.xml")) and not is_file(p / "model.safetensors")):
        return "openvino"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    if is_dir(p) or suffix in (".safetensors", ".json", ".pth", ".pt"):
        return "torch"
    raise ModelLoadError(f"{path}: unknown model type (expected a run dir, .safetensors, .pth, .onnx, .xml, .engine "
                         "or a triton:// URL)")


def load(path, device: str = "cpu", runtime: str | None = None, **options) -> Detector:
    """Load any artifact as a Detector. `runtime` overrides the choice made from the file name
    ("torchvision" runs a checkpoint through torchvision's own eager forward). A triton:// or
    triton+grpc:// URL is a model on a Triton server (runtimes.triton)."""
    if runtime == "triton" or (runtime is None and is_triton_url(path)):
        from .triton import TritonDetector

        return TritonDetector(path, device=device, **options)
    if not (is_file(path) or is_dir(path)):
        raise ModelLoadError(f"{path}: no such file or directory")
    runtime = runtime or runtime_for(path)
    if runtime in ("torch", "torchvision"):
        from .torch import TorchDetector

        return TorchDetector(path, device=device, reference=runtime == "torchvision", **options)
    if runtime == "onnxruntime":
        from .onnxruntime import OnnxRuntimeDetector

        return OnnxRuntimeDetector(path, device=device, **options)
    if runtime == "openvino":
        from .openvino import OpenVINODetector

        return OpenVINODetector(path, device=device, **options)
    if runtime == "tensorrt":
        from .tensorrt import TensorRTDetector

        return TensorRTDetector(path, device=device, **options)
    raise ModelLoadError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")


__all__ = ["Detections", "Detector", "ImageError", "ModelLoadError", "ModelMeta", "RUNTIMES", "load", "runtime_for",
           "unavailable"]
