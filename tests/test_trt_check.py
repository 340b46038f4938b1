"""The TensorRT-readiness check (exporters.trt_check) and the graphs we hand TensorRT.

TensorRT cannot be installed here, so the graphs are held against the parser's published rules:
the support-matrix table is compared with onnx-tensorrt's own operators.md, every graph
exporters.trt would build from (tiny and R50-FPN, both flavours, fixed and dynamic batch, fp32
and mixed fp16) must pass, and each rule must refuse the graph it exists to catch, starting with
the old export whose uint8 input fed a Transpose.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporters import trt_check
from exporters import trt_support as facts
from exporters.trt_check import NotReadyError, ensure_ready, problems
from plugins import NMS_PLUGIN, PLUGIN_DOMAIN, ROI_ALIGN_PLUGIN

from tests.trt_standins import THIRD_PARTY

ROOT = Path(__file__).resolve().parents[1]
TRT11 = "11.1.0"


# ------------------------------------------------------------------ the facts table against its source
def _matrix_rows():
    path = THIRD_PARTY / "onnx-tensorrt-10.1" / "operators.md"
    if not path.is_file():
        pytest.skip(f"{path} not found (the reference files live in ../shared/third_party beside the project)")
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("Operator", "") and not cells[0].startswith("---"):
            rows[cells[0]] = cells[1:] + [""] * (4 - len(cells))
    return path.read_text(), rows


def test_support_table_is_the_published_matrix():
    text, rows = _matrix_rows()
    published = {op: {t.strip().replace("INF64", "INT64") for t in types.split(",") if t.strip()}
                 for op, (supported, types, *_) in rows.items() if supported == "Y"}  # INF64: a typo there
    assert {op: set(types.split()) for op, types in facts.SUPPORTED.items()} == published
    assert facts.UNSUPPORTED == {op for op, (supported, *_) in rows.items() if supported == "N"}
    low, high = facts.OPSETS
    assert f"opset {low} to opset {high}" in text


def test_restriction_rules_are_the_published_restrictions():
    _, rows = _matrix_rows()
    restriction = {op: cells[2] for op, cells in rows.items()}
    assert "less than 3840" in restriction["TopK"] and "`sorted` must be 1" in restriction["TopK"]
    assert facts.TOPK_MAX_K == 3840
    for op, names in facts.CONSTANT_INPUTS.items():
        for name in names:
            assert f"`{name}`" in restriction[op] and re.search("initializer|constant", restriction[op]), op
    resize = restriction["Resize"]
    for values in facts.RESIZE.values():
        assert all(f"`{v}`" in resize for v in values)
    assert "Antialiasing is not supported" in resize


# ------------------------------------------------------------------ every graph exporters.trt builds from
def _r50():
    import torch
    from torchvision.models._meta import _COCO_CATEGORIES

    from trainer.models import build_model, default_meta

    torch.manual_seed(0)
    meta = default_meta("resnet50_fpn", list(_COCO_CATEGORIES), arch_kwargs={"frozen_bn": True})
    assert tuple(meta.canvas) == (800, 1344) and meta.num_classes == 91
    return build_model(meta).eval(), meta


@pytest.fixture(scope="module")
def models(tiny_run):
    from trainer.checkpoint import load_checkpoint

    return {"tiny": load_checkpoint(tiny_run), "resnet50_fpn": _r50()}


GRAPHS = [(arch, plugins, batch, fp16) for arch in ("tiny", "resnet50_fpn") for plugins in ("custom", "builtin")
          for batch in (1, None) for fp16 in (False, True)]


@pytest.mark.parametrize("arch, plugins, batch, fp16", GRAPHS,
                         ids=[f"{a}-{p}-{'b1' if b else 'dynamic'}-{'fp16' if h else 'fp32'}" for a, p, b, h in GRAPHS])
def test_every_graph_we_hand_tensorrt_is_ready(models, tmp_path, arch, plugins, batch, fp16):
    from exporters import trt as trt_export

    model, meta = models[arch]
    plan = trt_export.precision_plan(TRT11, fp16)  # fp16: the mixed-precision graph, as TensorRT 11 builds it
    name = "model.trt.onnx" if plugins == "custom" else "model.onnx"
    path = trt_export.export_for_tensorrt(model, meta, tmp_path / name, plan, plugins, batch)
    graph = onnx.load(str(path), load_external_data=False)
    assert trt_check.Graph(graph).plugin_flavour == (plugins == "custom")
    assert problems(graph) == []
    (cast,) = [n for n in graph.graph.node if "images" in n.input]  # the uint8 input feeds one Cast, nothing else
    assert cast.op_type == "Cast"


def _old_export(model, meta, path, batch):
    """The export before the fix: the uint8 canvas transposed before the cast."""
    import torch

    from exporters.deploy import DeployFasterRCNN
    from exporters.onnx import export_onnx

    def normalize(self, images):
        x = images.permute(0, 3, 1, 2).to(torch.float32).div(255)
        return (x - self.mean) / self.std

    original = DeployFasterRCNN.normalize
    DeployFasterRCNN.normalize = normalize
    try:
        return export_onnx(model, meta, path, batch=batch, flavor="trt")
    finally:
        DeployFasterRCNN.normalize = original


@pytest.fixture(scope="module")
def old_graph(models, tmp_path_factory):
    model, meta = models["tiny"]
    return _old_export(model, meta, tmp_path_factory.mktemp("old") / "model.trt.onnx", batch=1)


def test_the_old_uint8_transpose_is_refused(old_graph):
    graph = onnx.load(str(old_graph))
    first = graph.graph.node[0]
    assert first.op_type == "Transpose" and list(first.input) == ["images"]  # the graph the issue found
    found = problems(graph)
    assert {(p.op, p.rule) for p in found} >= {("Transpose", "uint8"), ("Transpose", "input types")}
    assert any("intermediate tensor" in p.detail and p.op == "Transpose" for p in found)
    with pytest.raises(NotReadyError) as e:
        ensure_ready(old_graph)
    message = str(e.value)
    assert "\n" not in message and f"node {first.name!r} (Transpose)" in message and "uint8" in message


def test_dynamic_batch_shape_reads_the_cast_not_the_uint8_input(models, tmp_path, monkeypatch):
    """torch's exporter reads a dynamic batch with Shape(images); export_onnx moves it onto the Cast."""
    from exporters import onnx as onnx_export

    model, meta = models["tiny"]
    monkeypatch.setattr(onnx_export, "read_shapes_after_cast", lambda graph: None)
    as_torch_writes_it = onnx.load(str(onnx_export.export_onnx(model, meta, tmp_path / "m.trt.onnx", None, "trt")))
    assert any(n.op_type == "Shape" and list(n.input) == ["images"] for n in as_torch_writes_it.graph.node)
    assert ("Shape", "uint8") in {(p.op, p.rule) for p in problems(as_torch_writes_it)}
    monkeypatch.undo()
    onnx_export.read_shapes_after_cast(as_torch_writes_it.graph)
    assert problems(as_torch_writes_it) == []
    onnx.checker.check_model(as_torch_writes_it)  # still topologically sorted


# ------------------------------------------------------------------ each rule refuses what it exists to catch
def _model(nodes, inputs, outputs, initializers=(), opset=18, plugin=False):
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(PLUGIN_DOMAIN, 1)] if plugin else [])
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 10
    return model


def _t(name, kind=TensorProto.FLOAT, shape=(1, 4)):
    return helper.make_tensor_value_info(name, kind, list(shape))


def _const(name, values, kind=np.int64):
    return numpy_helper.from_array(np.array(values, kind), name)


def _rules(model):
    return {(p.op, p.rule) for p in problems(model)}


def test_op_and_type_rules():
    unique = _model([helper.make_node("Unique", ["x"], ["y"])], [_t("x")], [_t("y")])
    assert ("Unique", "op type") in _rules(unique)
    other_domain = _model([helper.make_node("Foo", ["x"], ["y"], domain="com.example")], [_t("x")], [_t("y")])
    other_domain.opset_import.append(helper.make_opsetid("com.example", 1))
    assert ("Foo", "op type") in _rules(other_domain)
    # Conv on int32 data: outside the matrix's FP32/FP16/BF16
    conv = _model([helper.make_node("Conv", ["x", "w"], ["y"])], [_t("x", TensorProto.INT32, (1, 1, 4, 4)),
                                                                    _t("w", TensorProto.INT32, (1, 1, 1, 1))],
                  [_t("y", TensorProto.INT32, (1, 1, 4, 4))])
    assert ("Conv", "input types") in _rules(conv)
    # Resize is checked on X only: its int64 sizes input is fine
    resize = _model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest")],
                    [_t("x", shape=(1, 1, 2, 2))], [_t("y", shape=(1, 1, 4, 4))], [_const("sizes", [1, 1, 4, 4])])
    assert problems(resize) == []
    uint16 = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.UINT16)], [_t("x")],
                    [_t("y", TensorProto.UINT16)])
    assert ("Cast", "data type") in _rules(uint16)
    new_opset = _model([helper.make_node("Relu", ["x"], ["y"])], [_t("x")], [_t("y")], opset=21)
    assert ("opset", "opset") in _rules(new_opset)


def test_uint8_rules():
    add = _model([helper.make_node("Cast", ["x"], ["u"], to=TensorProto.UINT8),
                  helper.make_node("Cast", ["u"], ["y"], to=TensorProto.FLOAT)],
                 [_t("x")], [_t("y")])
    assert [(p.node, p.rule) for p in problems(add) if p.rule == "uint8"] == [("u", "uint8")]
    output = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.UINT8)], [_t("x")],
                    [_t("y", TensorProto.UINT8)])
    assert problems(output) == []  # a uint8 network output is allowed
    feeds_reshape = _model([helper.make_node("Reshape", ["images", "shape"], ["y"])],
                           [_t("images", TensorProto.UINT8)], [_t("y", TensorProto.UINT8, (4,))],
                           [_const("shape", [4])])
    assert ("Reshape", "uint8") in _rules(feeds_reshape)


def test_topk_and_constant_input_rules():
    def topk(k_input, k_value=100, sorted_=1):
        inits = [_const("k", [k_value])] if k_input == "k" else []
        nodes = [helper.make_node("TopK", ["x", k_input], ["v", "i"], axis=1, sorted=sorted_)]
        inputs = [_t("x", shape=(1, 5000))] + ([_t(k_input, TensorProto.INT64, (1,))] if k_input != "k" else [])
        return _model(nodes, inputs, [_t("v", shape=(1, k_value)), _t("i", TensorProto.INT64, (1, k_value))], inits)

    assert problems(topk("k")) == []
    assert ("TopK", "TopK") in _rules(topk("k", 3840))
    assert ("TopK", "TopK") in _rules(topk("k", sorted_=0))
    assert ("TopK", "TopK") in _rules(topk("runtime_k"))
    unsqueeze = _model([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])],
                       [_t("x"), _t("axes", TensorProto.INT64, (1,))], [_t("y", shape=(1, 1, 4))])
    assert ("Unsqueeze", "constant input") in _rules(unsqueeze)
    slice_ = _model([helper.make_node("Slice", ["x", "s", "e", "axes"], ["y"])],
                    [_t("x"), _t("axes", TensorProto.INT64, (1,))], [_t("y", shape=(1, 2))],
                    [_const("s", [0]), _const("e", [2])])
    assert ("Slice", "constant input") in _rules(slice_)


def test_resize_rules():
    def resize(**attrs):
        return _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)],
                      [_t("x", shape=(1, 1, 2, 2))], [_t("y", shape=(1, 1, 4, 4))],
                      [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])

    assert problems(resize(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")) == []
    for bad in (dict(mode="cubic"), dict(coordinate_transformation_mode="tf_crop_and_resize"),
                dict(nearest_mode="round_prefer_nearest"), dict(antialias=1),
                dict(keep_aspect_ratio_policy="not_larger")):
        assert ("Resize", "Resize") in _rules(resize(**bad)), bad


def test_data_dependent_shapes_are_refused_in_the_plugin_flavour_only():
    plugin_node = helper.make_node(NMS_PLUGIN, ["b", "s", "c"], ["n", "i"], domain=PLUGIN_DOMAIN,
                                   iou_threshold=0.5, score_threshold=0.0, max_output_boxes=10)
    nonzero = helper.make_node("NonZero", ["s"], ["nz"])
    reshape = helper.make_node("Reshape", ["s", "nz_shape"], ["r"])  # shape taken from data
    cast = helper.make_node("Cast", ["s"], ["nz_shape"], to=TensorProto.INT64)
    inputs = [_t("b", shape=(1, 10, 4)), _t("s", shape=(1, 10)), _t("c", TensorProto.INT32, (1, 10))]
    outputs = [_t("n", TensorProto.INT32, (1,)), _t("i", TensorProto.INT32, (1, 10)),
               _t("nz", TensorProto.INT64, (2, -1)), _t("r", shape=(-1,))]
    with_plugin = _model([plugin_node, nonzero, cast, reshape], inputs, outputs, plugin=True)
    found = {(p.op, p.rule) for p in problems(with_plugin)}
    assert ("NonZero", "data-dependent shape") in found and ("Reshape", "data-dependent shape") in found
    standard = _model([nonzero, cast, reshape], inputs[1:2], outputs[2:])
    assert not any(p.rule == "data-dependent shape" for p in problems(standard))


@pytest.fixture(scope="module")
def plugin_graph(models, tmp_path_factory):
    from exporters.onnx import export_onnx

    model, meta = models["tiny"]
    return export_onnx(model, meta, tmp_path_factory.mktemp("plugin") / "model.trt.onnx", batch=1, flavor="trt")


def _mutated(path, op_type, mutate):
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == op_type)
    mutate(node, model)
    return model


@pytest.mark.parametrize("case", ["ints spatial_scales", "missing attribute", "unknown attribute", "int64 classes",
                                  "too many levels", "plugin_version as int", "unknown plugin"])
def test_plugin_node_rules(plugin_graph, case):
    def set_attribute(node, name, value):
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept + ([helper.make_attribute(name, value)] if value is not None else []))

    def int64_classes(node, model):  # the classes as torch has them, without the exporter's cast to int32
        for init in model.graph.initializer:
            if init.name == node.input[2]:
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.int64), init.name))
        for producer in model.graph.node:
            if node.input[2] in producer.output and producer.op_type == "Cast":
                producer.attribute[0].i = TensorProto.INT64
        for v in model.graph.value_info:
            if v.name == node.input[2]:
                v.type.tensor_type.elem_type = TensorProto.INT64

    mutations = {
        "ints spatial_scales": (ROI_ALIGN_PLUGIN, lambda n, m: set_attribute(n, "spatial_scales", [1, 2, 3])),
        "missing attribute": (NMS_PLUGIN, lambda n, m: set_attribute(n, "iou_threshold", None)),
        "unknown attribute": (NMS_PLUGIN, lambda n, m: set_attribute(n, "iou_treshold", 0.5)),
        "int64 classes": (NMS_PLUGIN, int64_classes),
        "too many levels": (ROI_ALIGN_PLUGIN, lambda n, m: n.input.extend([n.input[1]] * 8)),
        "plugin_version as int": (NMS_PLUGIN, lambda n, m: set_attribute(n, "plugin_version", 1)),
        "unknown plugin": (NMS_PLUGIN, lambda n, m: setattr(n, "op_type", "FrcnnBatchedNms")),
    }
    op_type, mutate = mutations[case]
    assert problems(onnx.load(str(plugin_graph))) == []
    found = problems(_mutated(plugin_graph, op_type, mutate))
    rule = {"int64 classes": "plugin inputs", "too many levels": "plugin inputs", "unknown plugin": "plugin"}.get(
        case, "plugin attributes")
    assert rule in {p.rule for p in found}, [str(p) for p in found]


def test_plugin_version_and_namespace_are_allowed(plugin_graph):
    model = _mutated(plugin_graph, NMS_PLUGIN, lambda n, m: n.attribute.extend(
        [helper.make_attribute("plugin_version", "1"), helper.make_attribute("plugin_namespace", "")]))
    assert problems(model) == []


# ------------------------------------------------------------------ where the check runs
def test_command_line(plugin_graph, old_graph, tmp_path):
    def run(*paths):
        return subprocess.run([sys.executable, "-m", "exporters.trt_check", *map(str, paths)], capture_output=True,
                              text=True, cwd=ROOT)

    ok = run(plugin_graph)
    assert ok.returncode == 0 and "TensorRT-ready" in ok.stdout
    bad = run(plugin_graph, old_graph)
    assert bad.returncode == 1 and "NOT TensorRT-ready" in bad.stdout and "(Transpose): uint8" in bad.stdout
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    broken = run(junk)
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1 and "Traceback" not in broken.stderr


def test_exporters_trt_refuses_an_unready_graph_before_parsing(old_graph, tmp_path, monkeypatch, capsys):
    """exporters.trt checks before TensorRT's parser sees the file: --onnx stops on the old graph before it
    even looks for TensorRT (exit 1, one line naming the node and the rule), and build_engine, the step the
    --checkpoint path ends in, refuses it without calling the parser."""
    from exporters import trt as trt_export

    from tests.trt_standins import install

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no TensorRT needed to be told
    with pytest.raises(SystemExit) as e:
        trt_export.main(["--onnx", str(old_graph), "--out", str(tmp_path / "m.engine"), "--no-verify"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(err) == 1 and "not TensorRT-ready" in err[0] and "(Transpose): uint8" in err[0]
    trt, _ = install(monkeypatch, "11.1", old_graph)
    library = tmp_path / "libfrcnn_trt_plugins.so"
    library.write_bytes(b"")
    meta = trt_export.read_onnx_meta(old_graph)
    with pytest.raises(NotReadyError, match="uint8"):
        trt_export.build_engine(old_graph, tmp_path / "m.engine", meta, trt_export.precision_plan("11.1.0", False),
                                (1, 1, 1), "custom", library)
    assert trt._parsed == [] and trt._builders == [] and not (tmp_path / "m.engine").exists()
