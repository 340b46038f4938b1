"""ONNX export: checkpoint -> deploy graph -> model.onnx, checked and verified against PyTorch.

    python -m exporters.onnx --checkpoint runs/shapes-tiny --out model.onnx
    python -m exporters.onnx --checkpoint fasterrcnn_resnet50_fpn.pth --dynamic-batch --flavor trt
    python -m exporters.onnx --checkpoint torchvision:resnet50_fpn   # torchvision's COCO weights, downloaded once

`--flavor onnx` (default) uses standard ONNX ops only (ONNX Runtime, OpenVINO);
`--flavor trt` emits our plugin nodes for NMS and RoIAlign (input of exporters.trt).

`--int8` writes model.int8.onnx (model.trt.int8.onnx with --flavor trt): explicit Q/DQ on the
networks' convolutions and fully-connected layers, calibrated on --calib-images of the
checkpoint's training data (exporters.qdq), post-processing float; then it reports which layers
ONNX Runtime runs in INT8 and gates the mAP drop against the PyTorch deploy graph (exit 1 when
it exceeds --max-map-drop).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import onnx

from runtimes.base import first_line
from runtimes.meta import META_KEY, ModelMeta

from trainer.models import parse_canvas

from .cli import CHECKPOINT_HELP, add_verify_args, fail, load_source, thresholds_from
from .int8 import add_int8_args, check_int8_args

MAX_IR_VERSION = 10  # onnxruntime >= 1.20 and OpenVINO read it; onnx 1.23 would write 14 by default


def export_onnx(model, meta: ModelMeta, out: Path, batch: int | None = 1, flavor: str = "onnx",
                opset: int = 18, half: bool = False) -> Path:
    """Write the deploy graph of `model` as ONNX with `meta` inside (`meta` itself is left as it is);
    batch None = dynamic.

    half: mixed precision, the networks in fp16 and box math in fp32 (for TensorRT fp16).
    """
    import torch

    from .deploy import DeployFasterRCNN
    from .ops import translation_table

    deploy = DeployFasterRCNN(model, meta, half=half).eval()
    h, w = meta.canvas
    # torch.export specialises a dimension of size 1, so a dynamic batch is traced with 2
    example = torch.zeros(2 if batch is None else batch, h, w, 3, dtype=torch.uint8)
    dynamic = {"images": {0: torch.export.Dim("batch", min=1, max=1024)}} if batch is None else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            deploy, (example,), dynamo=True, custom_translation_table=translation_table(flavor),
            input_names=["images"], output_names=["num_detections", "boxes", "scores", "labels"],
            opset_version=opset, dynamic_shapes=dynamic, verbose=False)
    proto = program.model_proto
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    read_shapes_after_cast(proto.graph)
    meta = replace(meta, export=dict(meta.export, format="onnx", flavor=flavor, batch=batch, opset=opset,
                                     precision="mixed-fp16" if half else "fp32"))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {META_KEY: meta.to_json()})
    onnx.save(proto, str(out))
    if flavor == "trt":
        from .ops import _register_plugin_schemas

        _register_plugin_schemas()  # lets the checker check the plugin nodes' inputs and attributes
    # full_check adds shape inference, which cannot see through plugin nodes
    onnx.checker.check_model(str(out), full_check=flavor == "onnx")
    return out


def read_shapes_after_cast(graph) -> None:
    """TensorRT's parser lets the uint8 `images` input feed only a Cast, but torch's exporter reads a
    dynamic batch size with Shape(images). A Cast keeps the shape, so those Shape nodes read the
    Cast's output instead, and the Cast moves to the front of the graph."""
    cast = next((n for n in graph.node if n.op_type == "Cast" and list(n.input) == ["images"]), None)
    readers = [n for n in graph.node if n.op_type == "Shape" and list(n.input) == ["images"]]
    if cast is None or not readers:
        return
    for node in readers:
        node.input[0] = cast.output[0]
    nodes = [cast, *(n for n in graph.node if n is not cast)]
    del graph.node[:]
    graph.node.extend(nodes)


def default_out(checkpoint: str, flavor: str, int8: bool = False) -> Path:
    from trainer.weights import is_named, run_name

    p = Path(checkpoint)
    # named weights live in torch's hub cache: their export goes to runs/, not beside them
    base = Path("runs") / run_name(checkpoint) if is_named(checkpoint) else p if p.is_dir() else p.parent
    return base / f"model{'.trt' if flavor == 'trt' else ''}{'.int8' if int8 else ''}.onnx"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m exporters.onnx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help=CHECKPOINT_HELP + "; coco with --arch")
    p.add_argument("--out", type=Path, help="output .onnx (default: model.onnx / model.trt.onnx beside the checkpoint; model.int8.onnx / model.trt.int8.onnx with --int8)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch", type=int, default=1, help="fixed batch size (default 1)")
    g.add_argument("--dynamic-batch", action="store_true", help="batch dimension left dynamic")
    p.add_argument("--canvas", type=parse_canvas, help="input canvas HxW, multiples of 32 (default: the checkpoint's)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (16-21, default 18)")
    p.add_argument("--flavor", choices=["onnx", "trt"], default="onnx",
                   help="onnx: standard ops (default); trt: TensorRT plugin nodes for NMS and RoIAlign")
    p.add_argument("--arch", help="architecture of a .pth file (default: guessed from its keys)")
    add_verify_args(p)
    add_int8_args(p)
    a = p.parse_args(argv)
    if a.batch < 1:
        fail("--batch must be at least 1")
    check_int8_args(a)
    if not 16 <= a.opset <= 21:
        fail(f"--opset {a.opset} is not supported (RoiAlign needs >= 16; use 16-21)")
    model, meta = load_source(a.checkpoint, a.arch, a.canvas)
    out = a.out or default_out(a.checkpoint, a.flavor, a.int8)
    batch = None if a.dynamic_batch else a.batch
    if a.int8:
        return main_int8(a, model, meta, out, batch)
    print(f"exporting {meta.arch} ({meta.num_classes - 1} classes, canvas {meta.canvas[0]}x{meta.canvas[1]}, "
          f"batch {batch or 'dynamic'}, flavor {a.flavor}, opset {a.opset}) ...", flush=True)
    t0 = time.perf_counter()
    try:
        export_onnx(model, meta, out, batch, a.flavor, a.opset)
    except onnx.checker.ValidationError as e:
        fail(f"onnx.checker rejected {out}: {first_line(e)}")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f}s; onnx.checker OK")
    if a.no_verify:
        return 0
    import runtimes
    from runtimes.torch import TorchDetector

    from .verify import print_report, verify

    report = verify(runtimes.load(out), TorchDetector(None, model=model, meta=meta), meta, a.parity_images,
                    thresholds_from(a))
    return 0 if print_report(report, str(out)) else 1


def main_int8(a: argparse.Namespace, model, meta: ModelMeta, out: Path, batch: int | None) -> int:
    """--int8: calibrate, quantize, report the INT8 kernels, gate against the PyTorch deploy graph."""
    from runtimes.torch import TorchDetector

    from .calibration import CalibrationError, calibration_set
    from .int8 import QuantizationError, check_artifact
    from .qdq import export_int8

    try:
        calib = calibration_set(meta, a.calib_images, a.calib_data)
        print(f"exporting {meta.arch} as INT8 Q/DQ (flavor {a.flavor}, batch {batch or 'dynamic'}), calibrated on "
              f"{len(calib)} images of {calib.split} ...", flush=True)
        t0 = time.perf_counter()
        export_int8(model, meta, out, calib, batch, a.flavor, a.opset)
    except (CalibrationError, QuantizationError) as e:
        fail(first_line(e))
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f}s")
    return check_artifact(out, a, TorchDetector(None, model=model, meta=meta), meta)


if __name__ == "__main__":
    sys.exit(main())
