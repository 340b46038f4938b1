"""libfrcnn_trt_plugins.so against TensorRT's real headers (10.16 and 11.1), without libnvinfer or a GPU.

For each header set: the library builds warning-free (-Wall -Wextra -Werror), exports TensorRT's two
entry points unmangled and needs nothing from libnvinfer; then plugins/src/plugin_driver.cpp, built
against the same headers, loads it as TensorRT does (dlopen, getCreators) and runs the creators and the
plugins' build-time methods on the plugin nodes of real exported graphs, with the PluginFields that
TensorRT's ONNX parser makes from those nodes' attributes (by ONNX type: INT -> kINT32, FLOAT and
FLOATS -> kFLOAT32, STRING -> kCHAR; onnx-tensorrt onnxOpImporters.cpp loadFields).
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import onnx
import pytest
from onnx import helper

from plugins import NMS_PLUGIN, PLUGIN_FIELDS, PLUGIN_INPUTS, ROI_ALIGN_PLUGIN
from tests.trt_standins import THIRD_PARTY

VERSIONS = ("10.16", "11.1")
PARSER_FIELD_TYPE = {"INT": "i32", "INTS": "i32", "FLOAT": "f32", "FLOATS": "f32", "STRING": "char"}
CREATOR_FIELD_TYPE = {"i32": "kINT32", "f32": "kFLOAT32", "char": "kCHAR"}
DRIVER_TYPE = {1: "float", 10: "half", 6: "int32", 7: "int64", 9: "bool", 2: "uint8"}  # ONNX -> driver's names
MATRIX_TYPE = {"FP32": "float", "FP16": "half", "INT32": "int32"}


@pytest.fixture(scope="module", params=VERSIONS)
def built(request, tmp_path_factory):
    """(library, driver) built against the headers of one TensorRT version."""
    from plugins.build import BuildError, build_plugin_driver, build_plugin_library, find_nvcc

    include = THIRD_PARTY / f"tensorrt-{request.param}" / "include"
    if not (include / "NvInferRuntime.h").is_file():
        pytest.skip(f"{include} not found (the reference headers live in ../shared/third_party beside the project)")
    try:
        find_nvcc()
    except BuildError as e:
        pytest.skip(str(e))
    out = tmp_path_factory.mktemp(f"trt-{request.param}")
    library = build_plugin_library("80", include, out / "libfrcnn_trt_plugins.so", werror=True)
    return library, build_plugin_driver(include, out / "plugin_driver", werror=True), include


def _driver(built, *args, env=None) -> list[str]:
    library, driver, _ = built
    r = subprocess.run([str(driver), *args[:1], str(library), *args[1:]] if args[:1] == ("--on-load",) else
                       [str(driver), str(library), *args], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.splitlines()


def _lines(output, key):
    return [line.split()[1:] for line in output if line.split()[0] == key]


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) not installed")
def test_entry_points_are_exported_unmangled_and_nothing_comes_from_libnvinfer(built):
    library, _, _ = built
    defined = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in defined.splitlines() if " T " in line}
    assert {"getCreators", "setLoggerFinder"} <= exported
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(library)], capture_output=True,
                               text=True).stdout
    assert "nvinfer1" not in undefined and "getInferLibVersion" not in undefined  # TensorRT calls us, not we it
    needed = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True).stdout
    assert "libnvinfer" not in needed and "libcudart.so" not in needed  # the CUDA runtime is linked statically
    lib = ctypes.CDLL(str(library))
    assert lib.getCreators and lib.setLoggerFinder


def test_creators_declare_the_fields_nodes_carry(built):
    output = _driver(built)
    assert output[0] == "symbols getCreators=yes setLoggerFinder=yes"
    creators = {c[0]: c for c in _lines(output, "creator")}
    assert set(creators) == set(PLUGIN_FIELDS)
    assert all(c[1:4] == ["1", '""', "PLUGIN"] for c in creators.values())  # version "1", namespace ""
    declared, current = {}, None
    for line in output:
        words = line.split()
        if words[0] == "creator":
            current = declared.setdefault(words[1], {})
        elif words[0] == "field":
            current[words[1]] = words[2]
    for plugin, fields in PLUGIN_FIELDS.items():  # the parser's type for each attribute is the one the creator reads
        assert declared[plugin] == {n: CREATOR_FIELD_TYPE[PARSER_FIELD_TYPE[t]] for n, t in fields.items()}


def parser_fields(node, declared: set[str]) -> list[str]:
    """The PluginFields TensorRT's ONNX parser makes from `node`, as driver arguments: one per field the
    creator declares that the node has, typed by the attribute's ONNX type (not by the declaration)."""
    fields = []
    for a in node.attribute:
        if a.name not in declared:
            continue
        kind = onnx.AttributeProto.AttributeType.Name(a.type)
        value = helper.get_attribute_value(a)
        values = value if isinstance(value, list) else [value]
        text = value.decode() if isinstance(value, bytes) else ",".join(repr(float(v)) if kind.startswith("FLOAT")
                                                                       else str(int(v)) for v in values)
        fields.append(f"{a.name}={PARSER_FIELD_TYPE[kind]}:{text}")
    return fields


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny model's plugin graphs as exporters.trt builds them: fp32 and mixed fp16, dynamic batch."""
    from exporters.onnx import export_onnx
    from trainer.checkpoint import load_checkpoint

    model, meta = load_checkpoint(tiny_run)
    out = tmp_path_factory.mktemp("plugin-graphs")
    return {half: onnx.load(str(export_onnx(model, meta, out / f"{half}.trt.onnx", None, "trt", half=half)))
            for half in (False, True)}


def _shape(graph, name):
    types = {v.name: v for v in (*graph.value_info, *graph.input, *graph.output)}
    dims = types[name].type.tensor_type.shape.dim
    return [d.dim_param if d.dim_param else str(d.dim_value) for d in dims], types[name].type.tensor_type.elem_type


@pytest.mark.parametrize("half", [False, True], ids=["fp32", "mixed-fp16"])
def test_plugins_take_the_nodes_the_exporter_writes(built, exported, half):
    graph = exported[half].graph
    nodes = [n for n in graph.node if n.op_type in PLUGIN_FIELDS]
    assert sorted(n.op_type for n in nodes) == [NMS_PLUGIN, NMS_PLUGIN, ROI_ALIGN_PLUGIN]
    for node in nodes:
        inputs = []
        for name in node.input:
            dims, kind = _shape(graph, name)
            inputs.append(f"{DRIVER_TYPE[kind]}:{','.join(dims)}")
        output = _driver(built, node.op_type, *parser_fields(node, set(PLUGIN_FIELDS[node.op_type])), "--", *inputs)
        assert "create ok" in output, output
        out_types = _lines(output, "output_types")[0]
        (shapes,) = _lines(output, "output_shapes")
        batch = _shape(graph, node.input[0])[0][0]
        if node.op_type == NMS_PLUGIN:
            k = str(helper.get_attribute_value(next(a for a in node.attribute if a.name == "max_output_boxes")))
            assert out_types == ["int32", "int32"] and shapes == [f"[{batch}]", f"[{batch},{k}]"]
        else:
            rois, features = _shape(graph, node.input[0])[0], _shape(graph, node.input[1])
            size = str(helper.get_attribute_value(next(a for a in node.attribute if a.name == "pooled_size")))
            assert out_types == [DRIVER_TYPE[features[1]]] == [["float", "half"][half]]
            assert shapes == [f"[{rois[0]},{rois[1]},{features[0][1]},{size},{size}]"]
        # formats: exactly the types the readiness check expects (plugins.PLUGIN_INPUTS), linear only
        expected = PLUGIN_INPUTS[node.op_type]
        for pos, accepted in enumerate(_lines(output, "supports")):
            split = accepted.index("|")
            kinds, chw32 = accepted[1:split], accepted[split + 2]
            if pos < len(node.input):
                allowed = {MATRIX_TYPE[t] for t in expected[min(pos, len(expected) - 1)].split()}
                if node.op_type == ROI_ALIGN_PLUGIN and pos > 1:
                    allowed = {out_types[0]}  # the other levels follow level 0
                assert set(kinds) == allowed, (node.op_type, pos, kinds)
            else:
                assert kinds == [out_types[pos - len(node.input)]]
            assert chw32 == "no"
        assert _lines(output, "configure") == [["0"]]
        assert _lines(output, "serialized") == _lines(output, "reserialized") != []  # round trip
        assert "clone ok" in output


def test_creators_refuse_fields_of_the_wrong_type(built):
    roi = ["pooled_size=i32:7", "sampling_ratio=i32:2", "aligned=i32:0", "canonical_scale=f32:224",
           "canonical_level=i32:4", "first_level=i32:2"]
    inputs = ["--", "float:B,10,4", "float:B,8,16,16", "float:B,8,8,8"]
    assert "create ok" in _driver(built, ROI_ALIGN_PLUGIN, *roi, "spatial_scales=f32:0.25,0.125", *inputs)
    # INTS where the creator reads floats: what a node with integer scales would hand it
    assert "create failed" in _driver(built, ROI_ALIGN_PLUGIN, *roi, "spatial_scales=i32:1,2", *inputs)
    assert "create failed" in _driver(built, ROI_ALIGN_PLUGIN, *roi, *inputs)  # missing
    nms = ["score_threshold=f32:0.05", "max_output_boxes=i32:100"]
    boxes = ["--", "float:B,50,4", "float:B,50", "int32:B,50"]
    assert "create failed" in _driver(built, NMS_PLUGIN, "iou_threshold=char:0.5", *nms, *boxes)
    assert "create ok" in _driver(built, NMS_PLUGIN, "iou_threshold=f32:0.5", *nms, *boxes)


def test_registration_at_load_time_is_opt_in(built, tmp_path):
    """Hosts that only dlopen the library (Triton's TensorRT backend, LD_PRELOAD, trtexec --staticPlugins)
    need it to register itself while loading; loadLibrary registers getCreators' creators itself, so that
    is opt-in (FRCNN_TRT_REGISTER_ON_LOAD=1). Checked against a stand-in libnvinfer whose registry records
    the calls (plugins/src/registry_probe.cpp, built against the same real headers)."""
    import os

    from plugins.build import build_registry_probe

    library, _, include = built
    major = include.parent.name.removeprefix("tensorrt-").split(".")[0]  # ../shared/third_party/tensorrt-11.1/include
    build_registry_probe(include, tmp_path / f"libnvinfer.so.{major}")
    env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path))
    env.pop("FRCNN_TRT_REGISTER_ON_LOAD", None)
    assert _driver(built, "--on-load", env=env) == ["no registry loaded"]  # default: nothing happens at load
    registered = _driver(built, "--on-load", env=dict(env, FRCNN_TRT_REGISTER_ON_LOAD="1"))
    assert sorted(registered) == sorted(f'registered {name} 1 "" PLUGIN CREATOR_V3ONE' for name in PLUGIN_FIELDS)
    # without a libnvinfer to register with: one line on stderr, and the library still loads
    r = subprocess.run([str(built[1]), "--on-load", str(library)], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in env.items() if k != "LD_LIBRARY_PATH"} | {"FRCNN_TRT_REGISTER_ON_LOAD": "1"})
    assert r.returncode == 0 and r.stdout.strip() == "no registry loaded"
    assert r.stderr.count("\n") == 1 and f"libnvinfer.so.{major}" in r.stderr
