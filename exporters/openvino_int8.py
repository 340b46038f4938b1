"""INT8 OpenVINO IR through NNCF: the fp32 IR -> nncf.quantize (or quantize_with_accuracy_control).

    xml = quantize_ir(fp32_xml, out_xml, calib, onnx_model)
    xml = quantize_ir(fp32_xml, out_xml, calib, onnx_model, accuracy=AccuracyControl(images, gt, ids, 0.01))

NNCF places FakeQuantize by its CPU rules, which would also quantize the Add/Mul/Sub/Div/Concat
of box decoding (a first attempt that ignored the post-processing by op type collapsed the tiny
model's mAP to 0.03). So the IgnoredScope is every operation that does not come from the
trained networks: OpenVINO names each operation after its ONNX node (node_Conv_12, or
node_linear/WithoutBiases for the MatMul of a Gemm), and the ONNX nodes carry their module
scope (exporters.int8.network_nodes); an operation of unknown origin is ignored too. Inside the
networks NNCF quantizes what its CPU configuration quantizes: the convolutions, the box head's
fully-connected layers and the element-wise adds between them.

Preset: MIXED (asymmetric activations) when the networks have non-ReLU activations that go
negative (MobileNetV3's HardSwish), else PERFORMANCE (symmetric). Target device: CPU.

The fp32 IR is read from disk as written uncompressed (fp32 weights, no fp16 decompression
Converts), and the INT8 IR is saved uncompressed too: save_model's default fp16 compression
would round the float post-processing's constants (anchors up to 1344 px lose whole pixels).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtimes.base import OUTPUT_NAMES
from runtimes.meta import META_KEY

from .calibration import CalibrationSet, shared_pipeline
from .int8 import QuantizationError, network_nodes, non_relu_activations, record

SKIP_TYPES = ("Constant", "Parameter", "Result")
WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")
# how NNCF stores a quantized weight: int8 constant -> Convert -> (Subtract zero point) -> Multiply scale
DECOMPRESSION = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose")
INT_TYPES = ("i8", "u8", "i4", "u4")


@dataclass
class AccuracyControl:
    """What nncf.quantize_with_accuracy_control needs from us: validation images with ground
    truth (exporters.verify.sample_images) and the budget of mAP drop (absolute)."""

    images: list[np.ndarray]
    gt: dict
    image_ids: list[int]
    max_drop: float


def network_operations(model, onnx_model) -> tuple[list[str], list[str]]:
    """(network, ignored): friendly names of the IR's operations from the trained networks, and
    of all the others (the IgnoredScope)."""
    network = network_nodes(onnx_model)
    inside, ignored = [], []
    for op in model.get_ordered_ops():
        if op.get_type_name() in SKIP_TYPES:
            continue
        name = op.get_friendly_name()
        (inside if name.split("/")[0] in network else ignored).append(name)
    if not inside:
        raise QuantizationError("no operation of the IR comes from the networks' ONNX nodes (was it converted "
                                "from this ONNX?)")
    return inside, ignored


def quantized_operations(model, network: list[str]) -> list[str]:
    """The network's convolutions and MatMuls whose weights NNCF quantized: an int8 constant
    behind the weight's decompression (Convert, Subtract, Multiply), or a FakeQuantize on it."""
    inside, found = set(network), []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in WEIGHTED or op.get_friendly_name() not in inside:
            continue
        source = op.input(1).get_source_output().get_node()
        while source.get_type_name() in DECOMPRESSION:
            source = source.input(0).get_source_output().get_node()
        if source.get_type_name() == "FakeQuantize" or (
                source.get_type_name() == "Constant" and source.get_output_element_type(0).get_type_name() in INT_TYPES):
            found.append(op.get_friendly_name())
    return found


def import_nncf():
    """nncf, imported without the "No CUDA runtime is found" line torch's cpp_extension logs when
    nncf probes the installed frameworks."""
    probe = logging.getLogger("torch.utils.cpp_extension")
    level = probe.level
    probe.setLevel(logging.ERROR)
    try:
        import nncf
    finally:
        probe.setLevel(level)
    return nncf


@contextlib.contextmanager
def _nncf_quiet():
    """NNCF logs every operation it does not quantize (hundreds of lines): warnings and errors only."""
    nncf = import_nncf()
    logger = logging.getLogger("nncf")
    level = logger.level
    nncf.set_log_level(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Canvases:
    """A re-iterable view of the calibration set as [batch, H, W, 3] canvases (nncf.Dataset may iterate it twice)."""

    def __init__(self, calib: CalibrationSet, batch: int):
        self.calib, self.batch = calib, batch

    def __iter__(self):
        return iter(self.calib.batches(self.batch))

    def __len__(self):
        return -(-len(self.calib) // self.batch)


def map_metric(meta, accuracy: AccuracyControl):
    """validation_fn for NNCF: (COCO mAP@[.5:.95] of a compiled model on the items, None)."""
    from runtimes.coco import evaluate, restrict, to_coco_results

    pipeline = shared_pipeline(meta)

    def validate(compiled, items) -> tuple[float, None]:
        results, ids = [], []
        for canvas, box, image_id in items:
            out = compiled(canvas)
            out = {name: out[compiled.output(name)] for name in OUTPUT_NAMES}
            det = pipeline.postprocess(out, [box], None)[0]
            results += to_coco_results(image_id, det.boxes, det.scores, det.labels, meta.category_ids)
            ids.append(image_id)
        return evaluate(restrict(accuracy.gt, ids), results)["AP@[.5:.95]"], None

    return validate


def quantize_ir(fp32_xml: Path, out_xml: Path, calib: CalibrationSet, onnx_model,
                accuracy: AccuracyControl | None = None) -> Path:
    """The INT8 IR of the fp32 IR at `fp32_xml` (converted from `onnx_model`, an onnx.ModelProto,
    whose node scopes tell the networks from the post-processing), written to `out_xml`."""
    import openvino as ov

    from runtimes.openvino import read_meta

    nncf = import_nncf()
    model = ov.Core().read_model(str(fp32_xml))
    meta = read_meta(model, fp32_xml)
    inside, ignored = network_operations(model, onnx_model)
    activations = non_relu_activations(network_nodes(onnx_model))
    preset = nncf.QuantizationPreset.MIXED if activations else nncf.QuantizationPreset.PERFORMANCE
    dim = model.input(0).get_partial_shape()[0]
    calibration = nncf.Dataset(_Canvases(calib, dim.get_length() if dim.is_static else 1))
    common = dict(preset=preset, target_device=nncf.TargetDevice.CPU, subset_size=len(calib),
                  ignored_scope=nncf.IgnoredScope(names=ignored))
    print(f"NNCF: {len(inside)} network operations, {len(ignored)} post-processing operations kept float; "
          f"preset {preset.value}{' (' + ', '.join(activations) + ')' if activations else ''}; "
          f"{len(calib)} calibration images", flush=True)
    with _nncf_quiet():
        if accuracy is None:
            quantized = nncf.quantize(model, calibration, **common)
        else:
            pipeline = shared_pipeline(meta)
            items = []
            for image, image_id in zip(accuracy.images, accuracy.image_ids):
                canvas, boxes = pipeline.prepare([image])
                items.append((canvas, boxes[0], image_id))
            validation = nncf.Dataset(items, lambda item: item[0])
            quantized = nncf.quantize_with_accuracy_control(
                model, calibration, validation, map_metric(meta, accuracy), max_drop=accuracy.max_drop,
                drop_type=nncf.DropType.ABSOLUTE, **common)
    layers = quantized_operations(quantized, inside)
    weighted = [op for op in quantized.get_ordered_ops() if op.get_type_name() in WEIGHTED and
                op.get_friendly_name() in set(inside)]
    details = dict(preset=preset.value, target_device="CPU", ignored_operations=len(ignored),
                   float_layers=dict(layers=len(weighted) - len(layers), why="kept float by accuracy control")
                   if len(layers) < len(weighted) else None,
                   accuracy_control=None if accuracy is None else dict(max_drop=accuracy.max_drop,
                                                                      images=len(accuracy.images)))
    ops = sorted({op.get_type_name() for op in weighted if op.get_friendly_name() in set(layers)})
    meta.export = dict(meta.export, precision="int8", quantization=record(
        f"nncf {nncf.__version__}", calib, dict(layers=len(layers), ops=ops), **details))
    quantized.set_rt_info(meta.to_json(), META_KEY)
    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return out_xml
