"""OpenVINO export: ONNX (or a checkpoint, through exporters.onnx) -> IR model.xml + model.bin, verified.

    python -m exporters.openvino --checkpoint runs/shapes-tiny --out runs/shapes-tiny/openvino
    python -m exporters.openvino --onnx model.onnx --out ir/ --fp16-weights
    python -m exporters.openvino --checkpoint runs/shapes-tiny --out ir-bf16/ --precision bf16

--precision bf16 records bf16 as the IR's inference precision: runtimes.load compiles it so
(f32 where the device has no bf16, with a warning). Its check is then an mAP gate instead of
parity: mAP@[.5:.95] on --gate-images validation images at most --max-map-drop below the fp32
reference's, box-level figures reported only; it also reports the precision OpenVINO compiled
the layers to. Exit 1 when the gate fails.

--int8 quantizes the fp32 IR with NNCF (exporters.openvino_int8), calibrated on --calib-images
of the checkpoint's training data, post-processing float, and writes model.int8.xml (+ .bin);
--accuracy-control keeps the most harmful layers float until the mAP drop on the gate images is
within --max-map-drop. It then reports which layers the CPU plugin runs in INT8 and gates the mAP
drop against the fp32 deploy graph (exit 1 when it exceeds --max-map-drop).

Weights stay fp32 unless --fp16-weights (OpenVINO's save_model would compress them to fp16
by default). The model metadata travels in the IR's rt_info, so `runtimes.load(out)` needs
nothing else. Parity: the IR through runtimes.load against the PyTorch deploy graph of the
checkpoint; with --onnx alone, against ONNX Runtime on that ONNX (--reference-checkpoint
compares against PyTorch instead).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from runtimes.base import first_line
from runtimes.meta import META_KEY, ModelMeta, read_onnx_meta

from .cli import CHECKPOINT_HELP, add_verify_args, check_reference_arg, fail, load_source
from .int8 import add_int8_args, check_int8_args


def onnx_meta(onnx_path: Path) -> ModelMeta:
    """The metadata of a standard-flavour ONNX file (OpenVINO cannot run plugin nodes)."""
    meta = read_onnx_meta(onnx_path)
    if meta.export.get("flavor", "onnx") != "onnx":
        raise ValueError(f"{onnx_path}: a {meta.export['flavor']!r}-flavoured ONNX; OpenVINO needs --flavor onnx")
    return meta


def convert(onnx_path, out, fp16_weights: bool = False, batch: int | None = None,
            inference_precision: str = "f32") -> Path:
    """ONNX -> IR at `out` (a folder, or a .xml path). `batch` fixes the batch of a dynamic-batch
    ONNX (-1 keeps it dynamic); a fixed-batch ONNX keeps its own. `inference_precision` ("f32",
    "bf16") is recorded for runtimes.load to compile with. Returns the .xml path."""
    import openvino as ov

    onnx_path = Path(onnx_path)
    meta = onnx_meta(onnx_path)
    h, w = meta.canvas
    model = ov.convert_model(str(onnx_path))
    dim = model.input(0).get_partial_shape()[0]
    have = dim.get_length() if dim.is_static else None
    if batch is not None and batch != (have or -1):
        if have is not None:
            # torch.export bakes a fixed batch into reshapes and resizes: it cannot be changed here
            raise ValueError(f"{onnx_path} has a fixed batch of {have}: re-export it with exporters.onnx "
                             f"--dynamic-batch or --batch {batch}, or convert from --checkpoint")
        model.reshape({"images": [batch, h, w, 3]})
        have = None if batch == -1 else batch
    # a Q/DQ ONNX (exporters.onnx --int8) becomes FakeQuantize: the IR stays INT8, with its quantization record
    precision = "int8" if meta.export.get("precision") == "int8" else "fp16-weights" if fp16_weights else "fp32"
    meta.export = dict(meta.export, format="openvino", precision=precision,
                       inference_precision=inference_precision, batch=have, source=onnx_path.name,
                       openvino=ov.get_version())
    model.set_rt_info(meta.to_json(), META_KEY)
    xml = Path(out) if str(out).endswith(".xml") else Path(out) / "model.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml), compress_to_fp16=fp16_weights)
    return xml


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, with the parity thresholds' defaults resolved for the chosen precision."""
    p = argparse.ArgumentParser(prog="python -m exporters.openvino", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--onnx", type=Path, help="standard-flavour ONNX written by python -m exporters.onnx")
    src.add_argument("--checkpoint", help=CHECKPOINT_HELP + " (exported to ONNX first)")
    p.add_argument("--out", type=Path, required=True, help="output folder (model.xml + model.bin), or a .xml path")
    p.add_argument("--fp16-weights", action="store_true",
                   help="store weights as fp16 (half the size; looser parity defaults, see below); default fp32")
    p.add_argument("--precision", choices=("f32", "bf16"), default="f32",
                   help="inference precision recorded in the IR, which runtimes.load compiles it with (default f32; "
                        "bf16: f32 on a device without bf16); bf16 is checked by the mAP gate, not parity")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch", type=int, help="fixed batch size (default: the ONNX's; 1 from a checkpoint)")
    g.add_argument("--dynamic-batch", action="store_true", help="batch dimension left dynamic")
    p.add_argument("--device", default="CPU", help="OpenVINO device for the parity check (default CPU)")
    add_verify_args(p, "--fp16-weights", onnx_source=True)
    from .gate import add_gate_args, check_gate_args

    add_gate_args(p, "with --precision bf16")
    add_int8_args(p, accuracy_control=True)
    a = p.parse_args(argv)
    if a.batch is not None and a.batch < 1:
        fail("--batch must be at least 1")
    check_reference_arg(a)
    check_gate_args(a)
    check_int8_args(a)
    if a.int8 and a.fp16_weights:
        fail("--int8 and --fp16-weights exclude each other (the INT8 IR keeps its float constants fp32)")
    if a.int8 and a.precision != "f32":
        fail("--int8 and --precision bf16 exclude each other (an INT8 IR is gated as INT8)")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    batch = -1 if a.dynamic_batch else a.batch
    model = None
    with tempfile.TemporaryDirectory(prefix="frcnn-openvino-") as tmp:
        if a.checkpoint:
            from .onnx import export_onnx

            model, meta = load_source(a.checkpoint)
            onnx_path = Path(tmp) / "model.onnx"
            print(f"exporting {meta.arch} to ONNX (batch {'dynamic' if batch == -1 else batch or 1}) ...", flush=True)
            export_onnx(model, meta, onnx_path, batch=None if batch == -1 else batch or 1)
        else:
            onnx_path = a.onnx
            if not onnx_path.is_file():
                fail(f"{onnx_path}: no such file")
        if a.int8:
            return main_int8(a, onnx_path, Path(tmp), model, batch)
        source = onnx_meta(onnx_path)
        t0 = time.perf_counter()
        try:
            xml = convert(onnx_path, a.out, a.fp16_weights, batch, a.precision)
        except ValueError as e:
            fail(first_line(e))
        except Exception as e:  # OpenVINO's conversion errors (RuntimeError and frontend failures)
            from runtimes.openvino import ov_message

            fail(f"OpenVINO cannot convert {onnx_path.name}: {ov_message(e)}")
    size = (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 2**20
    kind = "INT8 from Q/DQ" if source.export.get("precision") == "int8" else \
        f"{'fp16' if a.fp16_weights else 'fp32'} weights, {a.precision} inference"
    print(f"wrote {xml} + .bin ({size:.1f} MiB, {kind}) in {time.perf_counter() - t0:.1f}s")
    if source.export.get("precision") == "int8":  # the Q/DQ route (--onnx model.int8.onnx): gated as INT8
        from .int8 import check_artifact
        from .verify import pick_reference

        reference = None if a.no_verify else pick_reference(None, None, onnx_path, a.reference_checkpoint)
        return check_artifact(xml, a, reference, source, a.device)
    if a.no_verify:
        return 0
    if a.precision != "f32":
        return 0 if gate_ir(xml, a, model) else 1
    return 0 if verify_ir(xml, a, model) else 1


def main_int8(a: argparse.Namespace, onnx_path: Path, tmp: Path, model=None, batch: int | None = None) -> int:
    """--int8: the fp32 IR (uncompressed, in `tmp`) -> NNCF -> model.int8.xml, INT8 layers reported, gated."""
    import onnx

    from .calibration import CalibrationError, calibration_set
    from .int8 import QuantizationError, check_artifact, gate_spec
    from .openvino_int8 import AccuracyControl, quantize_ir
    from .verify import pick_reference, sample_images

    meta = onnx_meta(onnx_path)
    out = a.out if str(a.out).endswith(".xml") else a.out / "model.int8.xml"
    try:
        calib = calibration_set(meta, a.calib_images, a.calib_data)
        fp32 = convert(onnx_path, tmp / "fp32" / "model.xml", fp16_weights=False, batch=batch)
        accuracy = None
        if a.accuracy_control:
            images, gt, ids, source = sample_images(meta, a.gate_images, spec=gate_spec(meta, a.calib_data))
            if gt is None:
                fail(f"--accuracy-control needs validation images with ground truth; {source} has none")
            print(f"accuracy control: mAP on {source}, budget {a.max_map_drop}")
            accuracy = AccuracyControl(images, gt, ids, a.max_map_drop)
        t0 = time.perf_counter()
        xml = quantize_ir(fp32, out, calib, onnx.load(str(onnx_path)), accuracy)
    except (CalibrationError, QuantizationError, ValueError) as e:
        fail(first_line(e))
    size = (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 2**20
    print(f"wrote {xml} + .bin ({size:.1f} MiB, INT8) in {time.perf_counter() - t0:.1f}s")
    reference = None if a.no_verify else pick_reference(model, meta, onnx_path, a.reference_checkpoint)
    return check_artifact(xml, a, reference, meta, a.device)


def verify_ir(xml: Path, a: argparse.Namespace, model=None) -> bool:
    """Parity of the IR (through runtimes.load) against PyTorch, or against ONNX Runtime on the source ONNX."""
    import runtimes

    from .verify import verify_artifact

    try:
        test = runtimes.load(xml, device=a.device)
    except runtimes.ModelLoadError as e:
        fail(str(e))
    return verify_artifact(test, str(xml), a, model, fp16=a.fp16_weights)


def gate_ir(xml: Path, a: argparse.Namespace, model=None) -> bool:
    """A reduced-precision IR: the precision OpenVINO compiled its layers to, then the mAP gate
    against the fp32 reference (PyTorch, or ONNX Runtime on the source ONNX)."""
    import runtimes
    from runtimes.openvino_precision import kernels, layer_precisions

    from .gate import map_gate
    from .verify import pick_reference

    try:
        test = runtimes.load(xml, device=a.device)
    except runtimes.ModelLoadError as e:
        fail(str(e))
    layers = ", ".join(f"{n} {p}" for p, n in sorted(layer_precisions(test.compiled).items()))
    used = ", ".join(f"{k} x{n}" for k, n in sorted(kernels(test.compiled).items()))
    print(f"OpenVINO compiled it for {test.device} in {test.inference_precision} (compute layers: {layers}; "
          f"kernels: {used})")
    if test.inference_precision != a.precision:
        print(f"note: {test.device} runs it in {test.inference_precision}, so the gate below measures "
              f"{test.inference_precision}, not {a.precision}")
    reference = pick_reference(model, test.meta, a.onnx, a.reference_checkpoint)
    return map_gate(test, reference, test.meta, a.precision, a.gate_images, a.max_map_drop).passed


if __name__ == "__main__":
    sys.exit(main())
