"""INT8: one calibration set, Q/DQ ONNX for ONNX Runtime and TensorRT, NNCF for OpenVINO, the mAP
gate, and proof that the quantized layers execute in INT8 (not merely annotated as such).

A small random tiny model (128x128 canvas) keeps this fast: it has no accuracy to lose, so the
tests check structure, execution and the gate's logic; the accuracy figures on the trained model
are benchmarks (README, INT8)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import runtimes
from exporters.calibration import CalibrationError, calibration_set
from exporters.gate import GateResult, map_gate
from exporters.int8 import (KEPT_FLOAT, check_artifact, gate_spec, network_nodes, non_relu_activations,
                            onnxruntime_executed, openvino_executed, output_convolutions, quantized_layers)
from runtimes.base import Detections, Detector
from runtimes.meta import META_KEY

CALIB = 8  # calibration images in these tests (the minimum)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.conftest import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("int8"), canvas=(128, 128), dataset="shapes:train=10,val=6")


@pytest.fixture(scope="module")
def source(run):
    from trainer.checkpoint import load_checkpoint

    return load_checkpoint(run)


@pytest.fixture(scope="module")
def calib(source):
    return calibration_set(source[1], CALIB)


@pytest.fixture(scope="module")
def onnx_int8(source, calib, tmp_path_factory):
    """(fp32 standard ONNX, its INT8 Q/DQ for ONNX Runtime, the TensorRT-flavoured INT8), one calibration."""
    from exporters.onnx import export_onnx
    from exporters.qdq import calibrate, quantize_onnx

    model, meta = source
    root = tmp_path_factory.mktemp("qdq")
    fp32 = export_onnx(model, meta, root / "model.onnx")
    calibration = calibrate(fp32, calib, root / "work")
    trt_fp32 = export_onnx(model, meta, root / "model.trt.onnx", flavor="trt")
    return dict(fp32=fp32, trt_fp32=trt_fp32, int8=quantize_onnx(calibration, root / "model.int8.onnx"),
                trt=quantize_onnx(calibration, root / "model.trt.int8.onnx", "tensorrt", trt_fp32),
                builtin=quantize_onnx(calibration, root / "model.builtin.int8.onnx", "tensorrt"),
                cache=calibration.cache)


@pytest.fixture(scope="module")
def ir_int8(onnx_int8, calib, tmp_path_factory):
    """(fp32 IR, NNCF INT8 IR) of the same ONNX."""
    pytest.importorskip("nncf", reason="nncf is not installed (pip install -e .[openvino])")
    from exporters.openvino import convert
    from exporters.openvino_int8 import quantize_ir

    root = tmp_path_factory.mktemp("nncf")
    fp32 = convert(onnx_int8["fp32"], root / "fp32" / "model.xml")
    return dict(fp32=fp32, int8=quantize_ir(fp32, root / "int8" / "model.int8.xml", calib,
                                            onnx.load(str(onnx_int8["fp32"]))))


# ------------------------------------------------------------------ calibration
def test_calibration_images_are_the_training_split_letterboxed_as_deployed(source, calib, onnx_int8):
    from trainer.data.shapes import shapes_splits

    _, meta = source
    train = shapes_splits(train=10, val=6)[0]
    assert len(calib) == CALIB and calib.split == "shapes-train"
    canvases = list(calib.canvases())
    deployed = runtimes.load(onnx_int8["fp32"])
    first, last = deployed.prepare([train.load(0).image, train.load(9).image])[0]  # evenly spaced: ends included
    assert np.array_equal(canvases[0], first) and np.array_equal(canvases[-1], last)
    assert canvases[0].shape == (128, 128, 3) and canvases[0].dtype == np.uint8
    batches = list(calib.batches(3))  # 8 images: 3 + 3 + 2, the last filled with the first image again
    assert [b.shape[0] for b in batches] == [3, 3, 3] and np.array_equal(batches[-1][2], canvases[0])
    assert calib.describe() == dict(dataset="shapes:train=10,val=6", split="shapes-train", images=8, of=10,
                                    letterbox="128x128")


def test_calibration_errors_are_one_line(source, tmp_path):
    from dataclasses import replace

    _, meta = source
    cases = [
        (lambda: calibration_set(meta, 50), "holds 10 training images, fewer than --calib-images 50"),
        (lambda: calibration_set(meta, 2), "at least 8"),
        (lambda: calibration_set(replace(meta, provenance={}), 8), "--calib-data"),
        (lambda: calibration_set(meta, 8, str(tmp_path / "missing.json")), "no such file"),
    ]
    # a COCO file whose image is not an image: unreadable, found before any runtime starts
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "ann.json").write_text(json.dumps(dict(
        images=[dict(id=i, file_name="bad.jpg", width=64, height=64) for i in range(1, 21)],
        annotations=[], categories=[dict(id=1, name="circle")])))
    cases.append((lambda: calibration_set(meta, 8, str(tmp_path / "ann.json")), "bad.jpg"))
    for make, words in cases:
        with pytest.raises(CalibrationError) as e:
            make()
        assert words in str(e.value) and "\n" not in str(e.value)


def test_cli_rejects_bad_int8_options_in_one_line(run, tmp_path, capsys):
    from exporters import onnx as onnx_export
    from exporters import openvino as ov_export

    # a set too small for --calib-images, found after the checkpoint loads: one line, exit 2, no traceback
    r = subprocess.run([sys.executable, "-m", "exporters.onnx", "--checkpoint", str(run), "--int8", "--calib-images",
                        "50"], capture_output=True, text=True, timeout=300)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and err[-1].startswith("error:") and "fewer than --calib-images 50" in err[-1], r.stderr
    assert "Traceback" not in r.stderr
    cases = [(onnx_export.main, ["--checkpoint", str(run), "--calib-data", "shapes"], "only with --int8"),
             (ov_export.main, ["--checkpoint", str(run), "--out", str(tmp_path), "--int8", "--fp16-weights"],
              "exclude each other"),
             (ov_export.main, ["--checkpoint", str(run), "--out", str(tmp_path), "--accuracy-control"],
              "only with --int8"),
             (onnx_export.main, ["--checkpoint", str(run), "--int8", "--calib-images", "3"], "at least 8")]
    for main, args, words in cases:  # refused before any work
        with pytest.raises(SystemExit) as e:
            main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error:") and words in err[0], err


# ------------------------------------------------------------------ what is quantized
def _consumers(model):
    found = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def test_only_the_networks_conv_and_gemm_are_quantized(onnx_int8):
    for key, source in (("int8", "fp32"), ("trt", "trt_fp32")):
        fp32 = onnx.load(str(onnx_int8[source]))
        network = network_nodes(fp32)
        assert {op for op in network.values()} >= {"Conv", "Gemm", "Relu"}
        post = {n.op_type for n in fp32.graph.node if n.name not in network}
        assert post >= {"TopK", "Add", "Mul", "Exp", "Concat"}  # decoding, top-k, NMS, RoIAlign, selects
        weighted = {n for n, op in network.items() if op in ("Conv", "Gemm")}
        rpn_outputs = set(output_convolutions(fp32, network))
        assert len(weighted) == 39 and len(rpn_outputs) == 10  # 5 levels x (objectness, deltas)
        float_layers = rpn_outputs if key == "int8" else set()
        model = onnx.load(str(onnx_int8[key]))
        consumers, producers = _consumers(model), {o: n for n in model.graph.node for o in n.output}
        quantized = set()
        for q in (n for n in model.graph.node if n.op_type == "QuantizeLinear"):
            users = [u for dq in consumers[q.output[0]] for u in consumers[dq.output[0]]]
            assert all(dq.op_type == "DequantizeLinear" for dq in consumers[q.output[0]])
            quantized |= {u.name for u in users if u.op_type in ("Conv", "Gemm")}
            # what is quantized is a network tensor, or the input of a network layer (the
            # normalised image, the pooled RoI features): never a box, score, index or mask
            producer = producers.get(q.input[0])
            assert (producer is not None and producer.name in network) or \
                all(u.name in weighted for u in users), (key, q.name, [u.op_type for u in users])
            if key == "trt" and producer is not None and producer.op_type in ("Conv", "Gemm"):
                # TensorRT: Q/DQ on the weighted layers' inputs only; a layer's output is quantized
                # only where it is the next layer's input (FPN: lateral conv -> output conv)
                assert any(u.name in weighted for u in users), q.name
        assert quantized == weighted - float_layers, key
        meta = json.loads({p.key: p.value for p in model.metadata_props}[META_KEY])
        q = meta["export"]["quantization"]
        assert meta["export"]["precision"] == "int8" and q["kept_float"] == list(KEPT_FLOAT)
        assert q["calibration"]["images"] == CALIB and q["calibration"]["split"] == "shapes-train"
        assert q["quantized"] == dict(layers=39 - len(float_layers), ops=["Conv", "Gemm"])
        assert (q["float_layers"] or {}).get("layers", 0) == len(float_layers)


def test_trt_flavour_is_symmetric_int8_with_float_bias(onnx_int8):
    model = onnx.load(str(onnx_int8["trt"]))
    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero = inits[node.input[2]]
        assert zero.data_type == onnx.TensorProto.INT8 and not numpy_helper.to_array(zero).any(), node.name
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:  # a weight
            assert inits[node.input[0]].data_type == onnx.TensorProto.INT8
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(len(c.input) < 3 or c.input[2] in inits and inits[c.input[2]].data_type == onnx.TensorProto.FLOAT
               for c in convs)
    # the same ranges as the ONNX Runtime flavour: one calibration (the TensorRT graph cannot be calibrated here)
    def scales(m):  # quantized tensor -> its activation scale
        values = {i.name: i for i in m.graph.initializer}
        return {n.input[0]: float(numpy_helper.to_array(values[n.input[1]])) for n in m.graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] not in values}

    ranges = json.loads(onnx_int8["cache"].read_text())["data"]
    trt, ort = scales(model), scales(onnx.load(str(onnx_int8["int8"])))
    shared = sorted(set(trt) & set(ort))
    assert len(shared) >= 20
    for x in shared:
        lo, hi = (ranges[x][k]["data"][0] for k in ("lowest", "highest"))
        assert trt[x] == pytest.approx(max(abs(lo), abs(hi)) / 127, rel=1e-5), x
        assert ort[x] == pytest.approx((max(hi, 0) - min(lo, 0)) / 255, rel=1e-5), x


def test_int8_onnx_runs_unchanged_through_runtimes(onnx_int8, shapes_images):
    for key in ("int8", "trt"):
        det = runtimes.load(onnx_int8[key])
        assert det.meta.export["precision"] == "int8" and det.flavor == ("onnx" if key == "int8" else "trt")
        out = det.infer(det.prepare(shapes_images[:1])[0])
        assert out["boxes"].shape == (1, 100, 4) and out["scores"].dtype == np.float32
        assert det.winograd_convs == 0


def test_winograd_leaves_quantized_convolutions_alone(onnx_int8):
    from runtimes.winograd import candidates, rewrite

    fp32, int8 = onnx.load(str(onnx_int8["fp32"])), onnx.load(str(onnx_int8["int8"]))
    assert candidates(fp32, min_channels=1, min_tiles=1)  # the fp32 graph has 3x3 convolutions it would take
    assert rewrite(int8, min_channels=1, min_tiles=1) == 0


# ------------------------------------------------------------------ executed in INT8, not annotated
def _annotated_only(int8, fp32, out):
    """The fp32 graph carrying the INT8 artifact's metadata (precision int8, 29 quantized layers)."""
    model = onnx.load(str(fp32))
    del model.metadata_props[:]
    model.metadata_props.extend(onnx.load(str(int8), load_external_data=False).metadata_props)
    onnx.save(model, str(out))
    return out


def _fake_quantized(path, out):
    """The INT8 graph with its weights dequantized back to float constants: activations still pass
    through Q/DQ (simulated quantization, as a QAT export may leave it)."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q, s, z = (numpy_helper.to_array(inits[n]) for n in node.input)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if s.ndim:
                shape[axis] = -1
            w = (q.astype(np.float32) - z.reshape(shape)) * s.reshape(shape)
            model.graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), node.output[0]))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    onnx.save(model, str(out))
    return out


def test_onnxruntime_executes_the_quantized_convolutions_in_int8(onnx_int8, tmp_path):
    det = runtimes.load(onnx_int8["int8"])
    claimed = quantized_layers(det.meta)
    executed = onnxruntime_executed(onnx_int8["int8"])
    assert claimed == 29 and executed.executes(claimed), executed.summary(claimed)
    assert sorted(k.split("(")[-1] for k in executed.int8) == ["QGemm)"] * 4 + ["QLinearConv)"] * 25
    assert len(executed.other) == 10  # the RPN's output convolutions, float by design
    for fake in (_annotated_only(onnx_int8["int8"], onnx_int8["fp32"], tmp_path / "annotated.onnx"),
                 _fake_quantized(onnx_int8["int8"], tmp_path / "fake.onnx")):
        det = runtimes.load(fake)  # a valid model that runs and claims INT8, only not in INT8
        assert quantized_layers(det.meta) == 29
        executed = onnxruntime_executed(fake)
        # (ONNX Runtime quantizes float Conv weights between Q/DQ activations by itself, not Gemm's)
        assert not executed.executes(29) and len(executed.int8) < 29, (fake.name, executed.summary())


def test_openvino_executes_the_quantized_convolutions_in_int8(ir_int8, tmp_path):
    import openvino as ov

    det = runtimes.load(ir_int8["int8"], cache_dir=None)
    assert det.meta.export["precision"] == "int8" and det.meta.export["quantization"]["preset"] == "performance"
    executed = openvino_executed(det.compiled)
    assert quantized_layers(det.meta) == 39 and executed.executes(39) and not executed.other, executed.summary()
    # the fp32 IR with the INT8 IR's metadata: its layers run in f32 whatever it says
    model = ov.Core().read_model(str(ir_int8["fp32"]))
    model.set_rt_info(ov.Core().read_model(str(ir_int8["int8"])).get_rt_info(META_KEY).astype(str), META_KEY)
    ov.save_model(model, str(tmp_path / "annotated.xml"), compress_to_fp16=False)
    fake = runtimes.load(tmp_path / "annotated.xml", cache_dir=None)
    assert fake.meta.export["precision"] == "int8" and quantized_layers(fake.meta) == 39
    executed = openvino_executed(fake.compiled)
    assert not executed.executes(39) and len(executed.other) == 39, executed.summary()


def test_the_qdq_onnx_converts_to_an_int8_ir(onnx_int8, tmp_path):
    """The Q/DQ route (DESIGN.md): OpenVINO reads the Q/DQ ONNX as FakeQuantize and runs those layers in INT8."""
    from exporters.openvino import convert

    det = runtimes.load(convert(onnx_int8["int8"], tmp_path / "qdq"), cache_dir=None)
    assert det.meta.export["precision"] == "int8" and det.meta.export["format"] == "openvino"
    executed = openvino_executed(det.compiled)
    assert executed.executes(quantized_layers(det.meta)) and len(executed.int8) == 29, executed.summary()


def test_nncf_leaves_the_post_processing_float(ir_int8, onnx_int8):
    import openvino as ov

    model = ov.Core().read_model(str(ir_int8["int8"]))
    network = network_nodes(onnx.load(str(onnx_int8["fp32"])))
    fq = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    assert fq
    for op in fq:  # each FakeQuantize feeds network operations (through shape-only ops at most)
        for target in op.output(0).get_target_inputs():
            user = target.get_node()
            while user.get_type_name() in ("Reshape", "Convert") and user.get_friendly_name().split("/")[0] not in network:
                user = next(iter(user.output(0).get_target_inputs())).get_node()
            assert user.get_friendly_name().split("/")[0] in network, (op.get_friendly_name(), user.get_friendly_name())
    # no FakeQuantize on box decoding, NMS, TopK, RoIAlign or the selects
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("TopK", "NonMaxSuppression", "ROIAlign", "Select", "Add", "Multiply"):
            if op.get_friendly_name().split("/")[0] not in network:
                assert all(i.get_source_output().get_node().get_type_name() != "FakeQuantize" for i in op.inputs())


def test_preset_follows_the_activations():
    assert non_relu_activations({"a": "Conv", "b": "Relu"}) == []
    assert non_relu_activations({"a": "Conv", "b": "HardSwish", "c": "HardSigmoid"}) == ["HardSigmoid", "HardSwish"]


# ------------------------------------------------------------------ the gate
class _Fixed(Detector):
    """A stand-in detector answering each image with the given detections, in call order."""

    runtime = "fixed"

    def __init__(self, meta, answers):
        self.meta, self.answers = meta, list(answers)

    def __call__(self, image, threshold=None):
        return self.answers.pop(0)


def _val(spec, n):
    from trainer.data import build_datasets

    val = build_datasets(spec)[1]
    return [val.load(i) for i in range(n)]


def _truth(samples):
    return [Detections(s.boxes, np.ones(len(s.labels), np.float32), s.labels, []) for s in samples]


def test_gate_fails_on_a_map_drop_and_names_it(source, onnx_int8, capsys):
    _, meta = source
    truth = _truth(_val(meta.provenance["dataset"], 6))
    nothing = [Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), [])] * 6
    result = map_gate(_Fixed(meta, nothing), _Fixed(meta, truth), meta, "INT8", 6, 0.01)
    assert not result.passed and result.map_fp32 == pytest.approx(1.0) and result.drop == pytest.approx(1.0)
    assert "INT8 gate FAILED: mAP 0.0000 vs fp32 1.0000: drop +1.0000 (> --max-map-drop 0.01)" in capsys.readouterr().err
    assert map_gate(_Fixed(meta, truth), _Fixed(meta, list(truth)), meta, "INT8", 6, 0.0).passed
    assert GateResult("INT8", False, None, None, 0.01).line().startswith("no ground truth to score mAP on")
    # the exporters' last step: the real INT8 artifact against a reference it cannot match -> exit 1
    a = argparse.Namespace(no_verify=False, gate_images=6, max_map_drop=0.01, calib_data=None)
    assert check_artifact(onnx_int8["int8"], a, _Fixed(meta, truth), meta) == 1
    err = capsys.readouterr().err
    assert "INT8 gate FAILED: mAP 0.0000 vs fp32 1.0000" in err


def test_gate_scores_on_the_named_dataset_when_the_checkpoint_has_none(source, capsys):
    """Published weights name no training data: calibration and gate both use --calib-data's."""
    _, meta = source
    other = "shapes:train=10,val=5,seed=3"  # other images than the checkpoint's own validation split
    assert gate_spec(meta, other) is None  # the checkpoint names its dataset: the gate scores on that
    bare = type(meta).from_json(meta.to_json())
    bare.provenance = {k: v for k, v in bare.provenance.items() if k not in ("dataset", "val_dataset")}
    assert gate_spec(bare, other) == other
    truth = _truth(_val(other, 5))  # perfect on `other`'s validation images, and on those only
    assert map_gate(_Fixed(bare, truth), _Fixed(bare, list(truth)), bare, "INT8", 5, 0.0, spec=other).passed
    own = _truth(_val(meta.provenance["dataset"], 5))
    result = map_gate(_Fixed(meta, own), _Fixed(meta, truth), meta, "INT8", 5, 0.0, spec=other)
    assert result.map_fp32 == pytest.approx(1.0) and result.map_test < 0.5  # scored on `other`, not the own split
    assert "shapes" in capsys.readouterr().out


def test_exporter_commands_write_gated_int8_artifacts(run, tmp_path):
    pytest.importorskip("nncf", reason="nncf is not installed (pip install -e .[openvino])")
    env_cache = {"FRCNN_OPENVINO_CACHE": "none"}
    import os

    env = dict(os.environ, **env_cache)
    common = ["--calib-images", "8", "--gate-images", "4"]
    r = subprocess.run([sys.executable, "-m", "exporters.onnx", "--checkpoint", str(run), "--int8",
                        "--out", str(tmp_path / "m.int8.onnx"), *common], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "29 of 39 convolution/fully-connected layers execute in INT8 (the artifact quantizes 29)" in r.stdout
    assert "INT8 gate OK" in r.stdout
    r = subprocess.run([sys.executable, "-m", "exporters.openvino", "--checkpoint", str(run), "--int8",
                        "--accuracy-control", "--out", str(tmp_path / "ov"), *common], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "39 of 39 convolution/fully-connected layers execute in INT8 (the artifact quantizes 39)" in r.stdout
    assert "INT8 gate OK" in r.stdout
    det = runtimes.load(tmp_path / "ov")  # the folder holds model.int8.xml alone
    assert det.path.name == "model.int8.xml"
    q = det.meta.export["quantization"]
    assert q["accuracy_control"] == dict(max_drop=0.01, images=4) and q["ignored_operations"] > 100


# ------------------------------------------------------------------ TensorRT: readiness and the build
def _qdq_graph(scale=(0.1,), zero=(0,), zero_type=onnx.TensorProto.INT8, weight=False, axis=None, scale_input=False):
    """x -> QuantizeLinear -> DequantizeLinear -> y, with the given scale and zero point (x a weight when `weight`)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])
    inits = [numpy_helper.from_array(np.asarray(zero, onnx.helper.tensor_dtype_to_np_dtype(zero_type)), "z")]
    if not scale_input:
        inits.append(numpy_helper.from_array(np.asarray(scale, np.float32).reshape(-1 if len(scale) > 1 else ()), "s"))
    if weight:
        inits.append(numpy_helper.from_array(np.ones((4, 3), np.float32), "x"))
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q", **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq", **attrs)]
    inputs = [helper.make_tensor_value_info("s", TensorProto.FLOAT, [])] if scale_input else []
    graph = helper.make_graph(nodes, "g", ([] if weight else [x]) + inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_readiness_check_holds_qdq_to_tensorrts_rules():
    from exporters.trt_check import problems

    def rules(model):
        return {(p.op, p.rule) for p in problems(model)}

    assert problems(_qdq_graph()) == []  # per-tensor, symmetric: what TensorRT builds
    assert problems(_qdq_graph((0.1, 0.2, 0.3, 0.4), (0, 0, 0, 0), weight=True, axis=0)) == []  # per-channel weight
    cases = {
        "not all zeros": _qdq_graph(zero=(3,)),  # asymmetric
        "strictly positive": _qdq_graph(scale=(-0.1,)),
        "build-time constant": _qdq_graph(scale_input=True),
        "per-tensor only": _qdq_graph((0.1, 0.2, 0.3, 0.4), (0, 0, 0, 0), axis=0),  # per-channel activations
        "4 scales for axis 1": _qdq_graph((0.1, 0.2, 0.3, 0.4), (0, 0, 0, 0), weight=True, axis=1),
        "has 1 values, scale 4": _qdq_graph((0.1, 0.2, 0.3, 0.4), (0,), weight=True, axis=0),
    }
    for words, model in cases.items():
        found = [str(p) for p in problems(model) if p.rule == "Q/DQ"]
        assert found and any(words in f for f in found), (words, found)
    # uint8 activations (ONNX Runtime's Q/DQ) break the parser's uint8 rule and the DequantizeLinear types
    u8 = rules(_qdq_graph(zero=(0,), zero_type=onnx.TensorProto.UINT8))
    assert ("QuantizeLinear", "uint8") in u8 and ("DequantizeLinear", "input types") in u8


def test_tensorrt_qdq_graphs_are_tensorrt_ready(onnx_int8):
    from exporters.trt_check import problems

    for key in ("trt", "builtin"):
        assert problems(onnx.load(str(onnx_int8[key]))) == [], key
    # the ONNX Runtime flavour is not: uint8 activations, int32 biases, asymmetric zero points
    rules = {(p.op, p.rule) for p in problems(onnx.load(str(onnx_int8["int8"])))}
    assert {("QuantizeLinear", "uint8"), ("QuantizeLinear", "Q/DQ"), ("DequantizeLinear", "input types")} <= rules


def test_tensorrt_int8_plan_is_strongly_typed_on_both_versions():
    from exporters.trt import precision_plan

    for version in ("10.16.0", "11.1.0"):
        plan = precision_plan(version, fp16=False, int8=True)
        assert (plan.precision, plan.strongly_typed, plan.fp16_flag, plan.half_onnx) == ("int8", True, False, False)
        assert precision_plan(version, fp16=False, onnx_precision="int8") == plan
        with pytest.raises(ValueError, match="exclude each other"):
            precision_plan(version, fp16=True, int8=True)
        with pytest.raises(ValueError, match="mixed-fp16"):
            precision_plan(version, fp16=False, onnx_precision="mixed-fp16", int8=True)


@pytest.mark.parametrize("version", ["10.16", "11.1"])
def test_tensorrt_int8_build_against_the_stand_ins(onnx_int8, run, tmp_path, monkeypatch, capsys, version):
    """--checkpoint --int8 --plugins builtin: the TensorRT Q/DQ export, the readiness check, a strongly
    typed build without precision flags, the sidecar, then the mAP gate against PyTorch. The stand-ins'
    engine is the ONNX itself, run by ONNX Runtime (tests/trt_standins.py)."""
    import shutil

    from exporters import trt as trt_export
    from runtimes.tensorrt import read_sidecar

    from tests.trt_standins import facts, install

    built = onnx_int8["builtin"]
    trt, _ = install(monkeypatch, version, built)
    exports = []

    def export(model, meta, onnx_path, plan, plugins, batch, calib=None):
        exports.append((plan.precision, plugins, batch, len(calib)))
        return shutil.copy(built, onnx_path)  # the export the fixture made from the same calibration

    monkeypatch.setattr(trt_export, "export_for_tensorrt", export)
    engine = tmp_path / "model.engine"
    argv = ["--checkpoint", str(run), "--out", str(engine), "--int8", "--plugins", "builtin", "--calib-images", "8",
            "--gate-images", "4"]
    assert trt_export.main(argv) == 0
    out = capsys.readouterr().out
    assert exports == [("int8", "builtin", 1, 8)]
    (builder,) = trt._builders
    flags = facts(version)["enums"]["NetworkDefinitionCreationFlag"]
    assert builder._network._flags == 1 << flags["STRONGLY_TYPED"]
    assert builder._config._set == set() and builder._config._cleared == {"TF32"}  # no INT8/FP16 flag: strongly typed
    export_meta = read_sidecar(engine).export
    assert (export_meta["precision"], export_meta["typing"], export_meta["onnx_precision"]) == ("int8", "strong", "int8")
    assert export_meta["quantization"]["qdq"] == "tensorrt"
    assert "INT8 gate OK" in out and "parity reference: the PyTorch deploy graph" in out
    with pytest.raises(SystemExit) as e:  # an fp32 ONNX is not something --int8 can build
        trt_export.main(["--onnx", str(onnx_int8["fp32"]), "--out", str(engine), "--int8", "--no-verify"])
    assert e.value.code == 2 and "quantize it with python -m exporters.onnx --int8" in capsys.readouterr().err
