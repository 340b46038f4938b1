"""INT8 as explicit Q/DQ ONNX, for ONNX Runtime and TensorRT, from one calibration.

    calibration = calibrate(fp32_onnx, calib, work)                    # once, on the standard graph
    quantize_onnx(calibration, out)                                    # ONNX Runtime: u8 activations
    quantize_onnx(calibration, out_trt, "tensorrt", trt_fp32_onnx)     # TensorRT: s8, zero point 0
    export_int8(model, meta, out, calib, batch, flavor)                # all of it from a checkpoint

The standard fp32 graph goes through onnxruntime's `quant_pre_process` (shape inference, basic
graph optimisation) and is calibrated once with MinMax over the calibration images; the tensor
ranges land in a calibration cache (JSON) that `quantize_static` then turns into Q/DQ: QDQ
format, weights int8 per output channel (symmetric), and only the Conv/Gemm/MatMul nodes of the
networks (exporters.int8.network_nodes). By default quantize_static would also wrap TopK,
Gather, Where and Slice of the post-processing; those stay float here.

The Q/DQ follows the runtime, the ranges are the same:
- "onnxruntime": uint8 asymmetric activations, int8 weights (U8S8). Measured on this
  CPU, int8 activations (S8S8) ran slower than fp32 (tiny 7.4 vs 5.4 ms) and U8S8 faster
  (4.4 ms): MLAS's VNNI kernels multiply u8 by s8. Conv outputs are quantized too, so each
  DQ -> Conv -> Q group fuses into QLinearConv; Gemm outputs stay float (QGemm has a float
  output). The RPN's objectness/box-delta convolutions stay float: their 8-bit outputs would
  feed the RPN's top-k (exporters.int8.output_convolutions). `session.x64quantprecision` is
  never set: it selects slower non-VNNI kernels.
- "tensorrt" (explicit quantization, TensorRT 10 and 11 strongly typed; on the plugin flavour or,
  for TensorRT's builtin plugins, the standard graph): int8 symmetric
  activations (zero point 0); Q/DQ on the inputs of the weighted layers only, TensorRT's own
  placement rule (it fuses bias, BN and ReLU and picks output precisions itself); bias left
  float (TensorRT's DequantizeLinear takes int8, not int32). ONNX Runtime cannot calibrate the
  plugin graph, and needs not: its network part is the standard graph's, node for node and
  tensor name for tensor name, so the standard graph's ranges apply.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import onnx

from runtimes.base import first_line
from plugins import PLUGIN_DOMAIN
from runtimes.meta import META_KEY, read_onnx_meta

from .calibration import CalibrationSet
from .int8 import QUANTIZED_OPS, QuantizationError, network_nodes, output_convolutions, quantizable, record

QDQ = ("onnxruntime", "tensorrt")  # whose Q/DQ rules the graph follows


@contextlib.contextmanager
def _quiet():
    """quantize_static logs a warning per tensor and prints its own notes: keep the console to our lines."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _batch(model) -> int:
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else 1


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a CalibrationSet (with a progress bar)."""

    def __init__(self, calib: CalibrationSet, batch: int):
        self.calib, self.batch = calib, batch
        self._it = None

    def get_next(self):
        if self._it is None:
            self._it = iter(self.calib.batches(self.batch, progress="calibrating (onnxruntime)"))
        canvas = next(self._it, None)
        return None if canvas is None else {"images": canvas}

    def __len__(self):
        return -(-len(self.calib) // self.batch)


def pre_process(fp32_onnx: Path, out: Path) -> Path:
    """onnxruntime's quant_pre_process (symbolic and ONNX shape inference, basic optimisation)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet():
        quant_pre_process(str(fp32_onnx), str(out))
    return out


@dataclass
class Calibration:
    """One calibration of the standard fp32 graph, shared by both flavours."""

    standard: Path  # the fp32 standard graph
    pre: Path  # the same after quant_pre_process: what the ONNX Runtime flavour quantizes
    cache: Path  # calibration cache (JSON): each calibrated tensor's min and max over the images
    images: CalibrationSet


def calibrate(standard: Path, calib: CalibrationSet, work: Path) -> Calibration:
    """Calibrate the standard fp32 graph once (files in `work`)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    pre = pre_process(standard, work / "pre.onnx")
    model = onnx.load(str(standard), load_external_data=False)
    cache = work / "calibration.json"
    with _quiet():
        # the model written here is thrown away: quantize_static is the API that writes the cache
        quantize_static(str(pre), str(work / "calibrated.onnx"), _Reader(calib, _batch(model)),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                        nodes_to_quantize=quantizable(network_nodes(model)), per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache))
    return Calibration(Path(standard), pre, cache, calib)


def quantize_onnx(calibration: Calibration, out: Path, qdq: str = "onnxruntime", source: Path | None = None) -> Path:
    """Write the INT8 Q/DQ graph at `out` from `calibration`'s ranges, in the Q/DQ of `qdq`
    ("onnxruntime" or "tensorrt"). `source`: the fp32 graph to quantize, an export of the same
    model (the TensorRT-flavoured one, for TensorRT's plugins); default the calibrated standard
    graph. The metadata records precision int8, the calibration set and what stayed float."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if qdq not in QDQ:
        raise ValueError(f"unknown Q/DQ {qdq!r}; use {' or '.join(QDQ)}")
    if qdq == "onnxruntime" and source is not None:
        raise ValueError("the ONNX Runtime Q/DQ quantizes the calibrated standard graph")
    fp32, out = Path(source or calibration.standard), Path(out)
    model = onnx.load(str(fp32))
    network = network_nodes(model)
    nodes = quantizable(network)
    if not nodes:
        raise QuantizationError(f"{fp32}: no convolution or fully-connected layer in the networks to quantize")
    kept = []
    if qdq == "onnxruntime":
        source = calibration.pre
        kept = output_convolutions(model, network)
        nodes = [n for n in nodes if n not in kept]
        # QGemm takes a float output, so the box head stays INT8 with float scores and deltas
        options = dict(activation_type=QuantType.QUInt8,
                       extra_options=dict(OpTypesToExcludeOutputQuantization=["Gemm", "MatMul"]))
    else:
        from .ops import _register_plugin_schemas

        _register_plugin_schemas()  # shape inference then knows the plugin nodes
        source = fp32
        options = dict(activation_type=QuantType.QInt8, extra_options=dict(
            ActivationSymmetric=True, WeightSymmetric=True, QuantizeBias=False,
            OpTypesToExcludeOutputQuantization=list(QUANTIZED_OPS)))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet():
            quantize_static(str(source), str(out), None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=nodes, per_channel=True,
                            reduce_range=False, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            calibration_cache_path=str(calibration.cache), **options)
    except ValueError as e:  # a tensor without a calibrated range names itself here
        raise QuantizationError(f"quantizing {fp32.name}: {first_line(e)}") from None
    quantized = onnx.load(str(out))
    meta = read_onnx_meta(model)
    q = record(f"onnxruntime {onnxruntime.__version__} quantize_static (QDQ, MinMax)", calibration.images,
               dict(layers=len(nodes), ops=sorted({network[n] for n in nodes})),
               float_layers=dict(layers=len(kept), why="RPN output convolutions: an 8-bit output costs mAP") if kept
               else None,
               qdq=qdq, weights="int8 symmetric per output channel",
               activations="uint8 asymmetric per tensor" if qdq == "onnxruntime" else "int8 symmetric per tensor, zero point 0",
               placement="inputs and outputs of Conv (Gemm: inputs)" if qdq == "onnxruntime" else "inputs of Conv/Gemm",
               bias="int32" if qdq == "onnxruntime" else "float")
    meta.export = dict(meta.export, precision="int8", quantization=q)
    del quantized.metadata_props[:]
    onnx.helper.set_model_props(quantized, {META_KEY: meta.to_json()})
    from .onnx import MAX_IR_VERSION

    quantized.ir_version = min(quantized.ir_version, MAX_IR_VERSION)
    onnx.save(quantized, str(out))
    plugins = any(n.domain == PLUGIN_DOMAIN for n in quantized.graph.node)
    onnx.checker.check_model(str(out), full_check=not plugins)  # shape inference cannot see through plugin nodes
    return out


def export_int8(model, meta, out: Path, calib: CalibrationSet, batch: int | None = 1, flavor: str = "onnx",
                opset: int = 18, qdq: str | None = None) -> Path:
    """Checkpoint model -> INT8 Q/DQ ONNX at `out` (batch None = dynamic): the standard fp32 graph
    is exported and calibrated in a temporary folder, then the `flavor` graph ("onnx" or "trt")
    is quantized in the Q/DQ of `qdq` (default: "tensorrt" for the trt flavour, else "onnxruntime")."""
    import tempfile

    from .onnx import export_onnx

    qdq = qdq or ("tensorrt" if flavor == "trt" else "onnxruntime")
    with tempfile.TemporaryDirectory(prefix="frcnn-int8-") as tmp:
        tmp = Path(tmp)
        standard = export_onnx(model, meta, tmp / "model.onnx", batch, "onnx", opset)
        calibration = calibrate(standard, calib, tmp)
        source = export_onnx(model, meta, tmp / "model.trt.onnx", batch, "trt", opset) if flavor == "trt" else None
        return quantize_onnx(calibration, out, qdq, source if qdq == "tensorrt" else None)
