"""What INT8 means in every runtime: which nodes are quantized, the metadata record, the checks
that the quantized layers really execute in INT8, and the options of the INT8 exporters.

Only the trained networks are quantized (DeployFasterRCNN's backbone + FPN, RPN head, box head
and predictor: their convolutions and fully-connected layers). Everything the deploy graph
adds around them stays float: normalisation, anchors, box decoding and clipping, level
assignment, NMS, TopK, RoIAlign and the selects (DESIGN.md, Quantization). The torch exporter
records each ONNX node's module scope (`pkg.torch.onnx.name_scopes`), so the split is read from
the graph, not guessed from op types (box decoding is Add/Mul/Sub/Div too).

The gate is the shared one of reduced precisions (exporters.gate): an INT8 artifact passes when
its COCO mAP@[.5:.95] is at most `--max-map-drop` below the fp32 deploy graph's on the same
validation images. Matched fraction and box/score deviations are reported but do not gate: INT8
moves boxes by pixels where fp32 moved them by 1e-4.
"""
from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field

from .gate import add_gate_args, check_gate_args, map_gate

NETWORK_MODULES = ("backbone", "rpn_head", "box_head", "box_predictor")  # DeployFasterRCNN's trained modules
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")  # ONNX op types INT8 applies to, inside the networks
KEPT_FLOAT = ("normalisation", "anchors", "box decoding", "clipping", "level assignment", "NMS", "TopK",
              "RoIAlign", "selects")
# activations that make a layer's input negative: asymmetric activation ranges (NNCF's MIXED preset)
NON_RELU = {"HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "LeakyRelu", "PRelu", "Gelu",
            "Softplus", "Mish", "Swish"}
SCOPE_KEY = "pkg.torch.onnx.name_scopes"


class QuantizationError(ValueError):
    """A model or setting INT8 quantization cannot work with; the message is one line."""


def network_nodes(model) -> dict[str, str]:
    """node name -> op type of every node of an ONNX ModelProto exported from the trained networks
    (NETWORK_MODULES), from the module scope the torch exporter writes on each node."""
    found, scoped = {}, False
    for node in model.graph.node:
        scope = next((p.value for p in node.metadata_props if p.key == SCOPE_KEY), None)
        if scope is None:
            continue
        scoped = True
        names = ast.literal_eval(scope)  # e.g. ['', 'backbone', 'backbone.fpn', ...]
        if len(names) > 1 and names[1] in NETWORK_MODULES:
            found[node.name] = node.op_type
    if not scoped:
        raise QuantizationError("the ONNX carries no module scopes (pkg.torch.onnx.name_scopes), so the network "
                                "cannot be told from the post-processing: quantize from --checkpoint, or from an "
                                "ONNX written by python -m exporters.onnx")
    return found


def quantizable(nodes: dict[str, str]) -> list[str]:
    """The network nodes INT8 applies to (Conv, Gemm, MatMul)."""
    return sorted(n for n, op in nodes.items() if op in QUANTIZED_OPS)


def output_convolutions(model, network: dict[str, str]) -> list[str]:
    """The networks' Conv nodes whose outputs only the post-processing reads: the RPN head's
    objectness and box-delta convolutions. ONNX Runtime can run a convolution in INT8 only with
    an 8-bit output (QLinearConv), and 8-bit objectness logits and deltas reorder the RPN's
    top-k. They are 1x1 convolutions with 15 output channels (<0.1% of
    R50-FPN's multiply-adds), so the ONNX Runtime flavour keeps them float. (They cost about
0.006 mAP on the trained tiny model; TensorRT and OpenVINO quantize only layer inputs, their
outputs stay float there.)"""
    users: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node.name)
    return sorted(n.name for n in model.graph.node if network.get(n.name) == "Conv"
                  and all(u not in network for u in users.get(n.output[0], [])))


def non_relu_activations(nodes: dict[str, str]) -> list[str]:
    """The activation op types in the networks that give negative values (MobileNetV3's HardSwish)."""
    return sorted({op for op in nodes.values() if op in NON_RELU})


def record(tool: str, calibration, quantized: dict, **details) -> dict:
    """The `export.quantization` entry of an INT8 artifact's metadata."""
    return dict(tool=tool, calibration=calibration.describe(), quantized=quantized,
                kept_float=list(KEPT_FLOAT), **details)


# ------------------------------------------------------------------ does it execute in INT8?
@dataclass
class ExecutedPrecision:
    """The convolution and fully-connected kernels a runtime compiled, split by precision."""

    runtime: str
    int8: list[str] = field(default_factory=list)  # "kernel name" of each INT8 layer
    other: list[str] = field(default_factory=list)  # those running in another precision

    def executes(self, quantized: int) -> bool:
        """Whether the `quantized` layers the artifact's metadata claims all run INT8 kernels."""
        return quantized > 0 and len(self.int8) >= quantized

    def summary(self, quantized: int | None = None) -> str:
        claim = "" if quantized is None else f" (the artifact quantizes {quantized})"
        tail = f"; not INT8: {', '.join(self.other[:4])}{' ...' if len(self.other) > 4 else ''}" if self.other else ""
        return (f"{self.runtime}: {len(self.int8)} of {len(self.int8) + len(self.other)} convolution/fully-connected "
                f"layers execute in INT8{claim}{tail}")


def quantized_layers(meta) -> int:
    """How many layers an artifact's metadata says are INT8 (0 when it says nothing)."""
    return int(meta.export.get("quantization", {}).get("quantized", {}).get("layers", 0))


# ONNX Runtime's kernels after its graph optimisations (QDQ groups fused into integer kernels)
ORT_INT8_KERNELS = {"QLinearConv", "NhwcQLinearConv", "ConvInteger", "QGemm", "QLinearMatMul", "MatMulInteger",
                    "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
ORT_FLOAT_KERNELS = {"Conv", "FusedConv", "NhwcFusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}


def onnxruntime_executed(path, threads: int | None = None) -> ExecutedPrecision:
    """The kernels ONNX Runtime's CPU session runs for the ONNX at `path`, loaded as the adapter
    loads it (Winograd rewrite included): the optimised graph it writes
    (SessionOptions.optimized_model_filepath) after fusing Q/DQ groups into integer kernels. A
    Conv whose Q/DQ could not be fused stays a float Conv on dequantized tensors and counts as
    not INT8, however the file is annotated."""
    import tempfile
    from pathlib import Path

    import onnx
    import onnxruntime as ort

    from runtimes.onnxruntime import session_options
    from runtimes.winograd import rewrite

    model = onnx.load(str(path))
    rewrite(model)  # as runtimes.onnxruntime does on the CPU: must leave quantized convolutions alone
    with tempfile.TemporaryDirectory(prefix="frcnn-ort-opt-") as tmp:
        so = session_options(threads)
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        optimized = onnx.load(so.optimized_model_filepath)
    result = ExecutedPrecision("onnxruntime")
    for node in optimized.graph.node:
        if node.op_type in ORT_INT8_KERNELS:
            result.int8.append(f"{node.name} ({node.op_type})")
        elif node.op_type in ORT_FLOAT_KERNELS:
            result.other.append(f"{node.name} ({node.domain or 'ai.onnx'}.{node.op_type})")
    return result


OV_LAYERS = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")


def openvino_executed(compiled) -> ExecutedPrecision:
    """The precision OpenVINO's compiled model (ov.CompiledModel) runs each convolution and
    fully-connected layer in, from its runtime graph (`runtimePrecision` of each executed layer):
    u8/i8 is INT8; a FakeQuantize the plugin could not fold leaves the layer in f32."""
    result = ExecutedPrecision("openvino")
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else ""
        if layer not in OV_LAYERS:
            continue
        precision = info["runtimePrecision"].astype(str).lower() if "runtimePrecision" in info else "?"
        (result.int8 if precision in ("u8", "i8") else result.other).append(f"{op.get_friendly_name()} ({precision})")
    return result


def gate_spec(meta, calib_data: str | None) -> str | None:
    """The dataset the gate scores on: the checkpoint's own (None), else the calibration data's validation split."""
    return None if meta.provenance.get("dataset") else calib_data


def check_artifact(path, a, reference, meta, device: str = "cpu") -> int:
    """The INT8 exporters' last step: load the artifact through runtimes, report which layers
    execute in INT8, then gate it against `reference` (the fp32 deploy graph). Exit code."""
    import runtimes

    try:
        test = runtimes.load(path, device=device)
    except runtimes.ModelLoadError as e:
        from .cli import fail

        fail(str(e))
    executed = None
    if test.runtime == "openvino":
        executed = openvino_executed(test.compiled)
    elif getattr(test, "flavor", "onnx") == "onnx":
        executed = onnxruntime_executed(path)
    else:
        print("TensorRT-flavoured Q/DQ: TensorRT picks its INT8 kernels when it builds the engine (exporters.trt "
              "--int8); here the graph runs in ONNX Runtime with the reference plugin ops")
    if executed is not None:
        claimed = quantized_layers(test.meta)
        print(executed.summary(claimed))
        if not executed.executes(claimed):
            print(f"INT8 check FAILED: {len(executed.int8)} of the {claimed} quantized layers execute in INT8 on "
                  f"{executed.runtime}", file=sys.stderr)
            return 1
    if a.no_verify:
        return 0
    return 0 if gate(test, reference, meta, a).passed else 1


def gate(test, reference, meta, a: argparse.Namespace):
    """The shared mAP gate (exporters.gate) of an INT8 artifact, with the command's options."""
    return map_gate(test, reference, meta, "INT8", a.gate_images, a.max_map_drop, gate_spec(meta, a.calib_data))


def add_int8_args(p: argparse.ArgumentParser, accuracy_control: bool = False) -> None:
    """--int8 and its calibration options (--accuracy-control where the exporter has it), and the
    options of the mAP gate (exporters.gate.add_gate_args)."""
    from .calibration import DEFAULT_IMAGES, MIN_IMAGES

    g = p.add_argument_group("INT8 quantization")
    g.add_argument("--int8", action="store_true",
                   help="quantize the network to INT8 (convolutions and fully-connected layers; post-processing "
                        "stays float), gated by its mAP drop against the fp32 deploy graph")
    g.add_argument("--calib-images", type=int, default=DEFAULT_IMAGES, metavar="N",
                   help=f"calibration images (default {DEFAULT_IMAGES}, at least {MIN_IMAGES})")
    g.add_argument("--calib-data", metavar="SPEC",
                   help="calibration dataset spec, any the trainer reads (default: the checkpoint's training data)")
    if accuracy_control:
        g.add_argument("--accuracy-control", action="store_true",
                       help="nncf.quantize_with_accuracy_control: keep layers float, most harmful first, until the "
                            "mAP drop on the gate images is within --max-map-drop")
    add_gate_args(p, "with --int8")


def check_int8_args(a: argparse.Namespace) -> None:
    """One line, before any work, for INT8 options that cannot work."""
    from .calibration import MIN_IMAGES
    from .cli import fail

    check_gate_args(a)
    if not a.int8:
        given = [o for o, v in (("--calib-data", a.calib_data), ("--accuracy-control", getattr(a, "accuracy_control", False))) if v]
        if given:
            fail(f"{' and '.join(given)}: only with --int8")
        return
    if a.calib_images < MIN_IMAGES:
        fail(f"--calib-images {a.calib_images}: at least {MIN_IMAGES} images are needed")
