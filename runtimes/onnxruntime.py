"""ONNX Runtime adapter: CPU, and the CUDA execution provider when present. Imports no torch,
and needs only onnxruntime, numpy and OpenCV: the metadata is read through onnxruntime's own
API (the model's custom metadata map).

On the CPU, the big 3x3 convolutions of a standard graph are rewritten as Winograd F(4x4, 3x3)
before the session is made (runtimes.winograd: ~1.3x on R50-FPN at 800x1344, outputs within
fp32 parity); `winograd=False` runs the graph as exported. The rewrite needs the `onnx`
package; without it (an edge install) the graph runs as exported, and a log line says so once.

A TensorRT-flavoured graph (plugin nodes in the frcnn.trt domain) runs here too, through
the reference implementations of the plugin ops in plugins.reference (which need onnx and
onnxruntime-extensions).

Threads: an onnxruntime InferenceSession may be run from several threads at once (`run` is
thread-safe), so one detector serves any number of threads with no lock of its own.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from plugins import PLUGIN_DOMAIN

from .base import OUTPUT_NAMES, Detector, ModelLoadError, first_line, is_file
from .meta import META_KEY, ModelMeta

log = logging.getLogger(__name__)
NO_ONNX_NOTE = ("the onnx package is not installed: ONNX graphs run as exported, without the Winograd rewrite "
                "of big 3x3 convolutions (pip install onnx to have it)")
_said_no_onnx = False
# the deployed-model contract, in onnxruntime's type names
CONTRACT = {"images": "tensor(uint8)", "num_detections": "tensor(int32)", "boxes": "tensor(float)",
            "scores": "tensor(float)", "labels": "tensor(int32)"}


def import_onnx():
    """The onnx module, or None where it is not installed (it is optional at run time)."""
    try:
        import onnx
    except ImportError:
        return None
    return onnx


def say_no_onnx_once() -> None:
    global _said_no_onnx
    if not _said_no_onnx:
        _said_no_onnx = True
        log.warning(NO_ONNX_NOTE)


def _providers(device: str) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ModelLoadError(f"device {device!r}: this onnxruntime has no CUDA execution provider "
                                 "(pip install onnxruntime-gpu)")
        index = device.partition(":")[2] or "0"
        if not (index.isascii() and index.isdigit()):
            raise ModelLoadError(f"unknown device {device!r} for onnxruntime (use cpu, cuda or cuda:N)")
        index = int(index)
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
        import onnxruntime as ort

        self.path = Path(path)
        self.device = device
        if not is_file(self.path):
            raise ModelLoadError(f"{self.path}: no such model file")
        providers, so = _providers(device), session_options(threads, profile)
        onnx = import_onnx()
        model = None  # the ModelProto, read where onnx is installed: plugin nodes and the rewrite need it
        if onnx is not None:
            try:
                model = onnx.load(str(self.path))
            except Exception as e:  # protobuf raises several types on garbage
                raise ModelLoadError(f"{self.path}: not a valid ONNX file ({type(e).__name__})") from None
        plugin_nodes = model is not None and any(o.domain == PLUGIN_DOMAIN for o in model.opset_import)
        self.flavor = "trt" if plugin_nodes else "onnx"
        self.winograd_convs = 0  # how many convolutions were rewritten
        if self.flavor == "onnx" and (device == "cpu" if winograd is None else winograd):
            if model is None:
                say_no_onnx_once()
            else:
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
                del model
                self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:
            raise ModelLoadError(f"{self.path}: {load_failure(e)}") from None
        self.meta = self._read_meta()
        self.batch = self._check_contract()

    def _read_meta(self) -> ModelMeta:
        try:
            props = self.session.get_modelmeta().custom_metadata_map
        except UnicodeDecodeError:  # protobuf does not check an ONNX file's strings are UTF-8
            raise ModelLoadError(f"{self.path}: its metadata is not UTF-8 text (a damaged file?)") from None
        if META_KEY not in props:
            raise ModelLoadError(f"{self.path}: no frcnn-deploy metadata (export it with python -m exporters.onnx)")
        try:
            return ModelMeta.from_json(props[META_KEY])
        except ValueError as e:
            raise ModelLoadError(f"{self.path}: unreadable frcnn-deploy metadata ({first_line(e)})") from None

    def _check_contract(self) -> int | None:
        """The graph's fixed batch (None when dynamic), once its inputs and outputs are found to be
        the deployed-model contract at the metadata's canvas."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        types = {a.name: a.type for a in (*inputs, *outputs)}
        shape = inputs[0].shape if len(inputs) == 1 else []
        if ([i.name for i in inputs] != ["images"] or any(types.get(k) != t for k, t in CONTRACT.items())
                or len(shape) != 4 or shape[3] != 3):
            raise ModelLoadError(f"{self.path}: inputs/outputs are not the deployed-model contract "
                                 f"(images uint8 [B, H, W, 3] -> {', '.join(OUTPUT_NAMES)})")
        if tuple(shape[1:3]) != self.meta.canvas:
            raise ModelLoadError(f"{self.path}: the graph's input is {shape[1]}x{shape[2]}, its metadata says "
                                 f"canvas {self.meta.canvas[0]}x{self.meta.canvas[1]}")
        return shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None

    def infer(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        canvas = np.ascontiguousarray(canvas, np.uint8)
        try:
            out = self.session.run(list(OUTPUT_NAMES), {"images": canvas})
        except Exception as e:  # onnxruntime's own types; a damaged graph can load and still fail here
            raise ModelLoadError(f"{self.path}: onnxruntime cannot run the model on a {list(canvas.shape)} batch "
                                 f"({first_line(e)})") from None
        return dict(zip(OUTPUT_NAMES, out))


def load_failure(error: Exception) -> str:
    """Why onnxruntime refused a model, in one line."""
    message = first_line(error)
    if "INVALID_PROTOBUF" in message:
        return "not a valid ONNX file (protobuf parsing failed)"
    if "No graph was found" in message:  # an empty file parses as an empty ModelProto
        return "not a valid ONNX file (no graph in it)"
    if PLUGIN_DOMAIN in str(error):
        return (f"a TensorRT-flavoured graph ({PLUGIN_DOMAIN} plugin nodes) runs in onnxruntime only on the reference "
                "plugin ops, which need onnx and onnxruntime-extensions (pip install onnx onnxruntime-extensions); "
                f"for TensorRT build an engine with python -m exporters.trt ({message})")
    return f"onnxruntime cannot load the model ({message})"
