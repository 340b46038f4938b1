"""ONNX Runtime adapter: CPU, and the CUDA execution provider when present. Imports no torch.

On the CPU, the big 3x3 convolutions of a standard graph are rewritten as Winograd F(4x4, 3x3)
before the session is made (runtimes.winograd: ~1.3x on R50-FPN at 800x1344, outputs within
fp32 parity); `winograd=False` runs the graph as exported.

A TensorRT-flavoured graph (plugin nodes in the frcnn.trt domain) runs here too, through
the reference implementations of the plugin ops in plugins.reference.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from plugins import PLUGIN_DOMAIN

from .base import OUTPUT_NAMES, Detector, ModelLoadError, first_line
from .meta import read_onnx_meta


def _providers(device: str) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ModelLoadError(f"device {device!r}: this onnxruntime has no CUDA execution provider "
                                 "(pip install onnxruntime-gpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise ModelLoadError(f"unknown device {device!r} for onnxruntime (use cpu, cuda or cuda:N)")


def session_options(threads: int | None = None, profile: str | None = None):
    """profile: a file prefix; ONNX Runtime's profiler then records every run (session.end_profiling())."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile)
    return so


class OnnxRuntimeDetector(Detector):
    runtime = "onnxruntime"

    def __init__(self, path, device: str = "cpu", threads: int | None = None, winograd: bool | None = None,
                 profile: str | None = None):
        """winograd: rewrite big 3x3 convolutions (default: on the CPU only; cuDNN picks its own algorithms).
        profile: file prefix for ONNX Runtime's profiler (benchmarks.crosscheck); off by default."""
        import onnx
        import onnxruntime as ort

        self.path = Path(path)
        self.device = device
        if not self.path.is_file():
            raise ModelLoadError(f"{self.path}: no such model file")
        try:
            model = onnx.load(str(self.path))
        except Exception as e:  # protobuf raises several types on garbage
            raise ModelLoadError(f"{self.path}: not a valid ONNX file ({type(e).__name__})") from None
        try:
            self.meta = read_onnx_meta(model)
        except ValueError:
            raise ModelLoadError(f"{self.path}: no frcnn-deploy metadata (export it with python -m exporters.onnx)") from None
        self.flavor = "trt" if any(o.domain == PLUGIN_DOMAIN for o in model.opset_import) else "onnx"
        providers, so = _providers(device), session_options(threads, profile)
        self.winograd_convs = 0  # how many convolutions were rewritten
        if self.flavor == "onnx" and (device == "cpu" if winograd is None else winograd):
            from .winograd import rewrite

            self.winograd_convs = rewrite(model)
        try:
            if self.flavor == "trt":
                from plugins.reference import reference_session

                self.session = reference_session(model, providers=providers, sess_options=so)
            elif self.winograd_convs:
                data = model.SerializeToString()
                del model  # the rewritten graph lives on in `data` and then in the session: one copy at a time
                self.session = ort.InferenceSession(data, so, providers=providers)
            else:
                self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:
            raise ModelLoadError(f"{self.path}: onnxruntime cannot load the model ({first_line(e)})") from None
        shape = self.session.get_inputs()[0].shape
        self.batch = shape[0] if isinstance(shape[0], int) else None

    def infer(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        out = self.session.run(list(OUTPUT_NAMES), {"images": np.ascontiguousarray(canvas, np.uint8)})
        return dict(zip(OUTPUT_NAMES, out))
