"""TensorRT export (exporters.trt) and runtime (runtimes.tensorrt).

Everything that does not need TensorRT runs here for real: the version-dependent build choices,
batch profiles, plugin-library lookup, the metadata sidecar, the command line and its one-line
errors when TensorRT, pycuda or a GPU is missing, and the mixed-precision ONNX the exporter feeds
TensorRT 11 (real exports of a tiny model, the standard flavour run in ONNX Runtime). Building,
running and verifying engines needs TensorRT and a CUDA GPU: those tests skip and say which is missing.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runtimes
from exporters import trt as trt_export
from exporters.trt import batch_profile, checkpoint_profile, plugins_for, precision_plan
from runtimes import tensorrt as trt_runtime
from runtimes.base import ModelLoadError
from runtimes.tensorrt import device_index, find_plugin_library, read_sidecar, sidecar_path

from tests.trt_standins import facts, install

ROOT = Path(__file__).resolve().parents[1]
TRT11, TRT10 = "11.1.0", "10.16.0"


# ------------------------------------------------------------------ version-dependent choices
def test_tensorrt_11_builds_fp16_strongly_typed_from_the_mixed_precision_onnx():
    fp16 = precision_plan(TRT11, fp16=True)
    assert (fp16.precision, fp16.half_onnx, fp16.strongly_typed, fp16.fp16_flag) == ("fp16", True, True, False)
    fp32 = precision_plan(TRT11, fp16=False)
    assert (fp32.precision, fp32.half_onnx, fp32.strongly_typed, fp32.fp16_flag) == ("fp32", False, True, False)
    assert precision_plan("11.0.0", fp16=True) == fp16


def test_tensorrt_10_uses_the_fp16_flag_unless_asked_for_strong_typing():
    fp16 = precision_plan(TRT10, fp16=True)
    assert (fp16.half_onnx, fp16.strongly_typed, fp16.fp16_flag, fp16.typing) == (False, False, True, "weak")
    strong = precision_plan(TRT10, fp16=True, strongly_typed=True)
    assert strong == precision_plan(TRT11, fp16=True)
    fp32 = precision_plan(TRT10, fp16=False)
    assert (fp32.precision, fp32.half_onnx, fp32.fp16_flag) == ("fp32", False, False)


def test_a_given_onnx_decides_its_precision():
    for version in (TRT10, TRT11):
        for fp16 in (False, True):  # a mixed-precision ONNX is fp16 whatever --fp16 says; only strong typing keeps it
            plan = precision_plan(version, fp16, onnx_precision="mixed-fp16")
            assert (plan.precision, plan.strongly_typed, plan.fp16_flag) == ("fp16", True, False)
    assert precision_plan(TRT10, True, onnx_precision="fp32").fp16_flag
    with pytest.raises(ValueError, match="--checkpoint with --fp16"):
        precision_plan(TRT11, True, onnx_precision="fp32")  # TensorRT 11 has no BuilderFlag.FP16


def test_old_or_unreadable_tensorrt_versions_are_refused():
    with pytest.raises(ValueError, match="TensorRT 10 or newer"):
        precision_plan("8.6.1", fp16=False)
    with pytest.raises(ValueError, match="unreadable"):
        precision_plan("dev", fp16=False)


def test_batch_profiles():
    assert batch_profile(None) == (1, 1, 1)  # dynamic ONNX, nothing asked: batch 1
    assert batch_profile(4) == (4, 4, 4)  # a fixed ONNX keeps its batch
    assert batch_profile(None, batch=3) == (3, 3, 3)
    assert batch_profile(None, max_batch=8) == (1, 8, 8)
    assert batch_profile(None, max_batch=8, opt_batch=2) == (1, 2, 8)
    for kwargs, message in [(dict(onnx_batch=2, max_batch=8), "fixed batch of 2"),
                            (dict(onnx_batch=2, batch=4), "fixed batch of 2"),
                            (dict(onnx_batch=None, batch=0), "at least 1"),
                            (dict(onnx_batch=None, max_batch=0), "at least 1"),
                            (dict(onnx_batch=None, max_batch=4, opt_batch=5), "between 1 and"),
                            (dict(onnx_batch=None, opt_batch=2), "goes with --max-batch")]:
        with pytest.raises(ValueError, match=message):
            batch_profile(**kwargs)
    # from a checkpoint the ONNX is exported to fit: batch 1 by default, --batch 0 refused as with --onnx
    assert checkpoint_profile() == checkpoint_profile(None) == (1, 1, 1) and checkpoint_profile(3) == (3, 3, 3)
    assert checkpoint_profile(None, max_batch=4) == (1, 4, 4)
    with pytest.raises(ValueError, match="at least 1"):
        checkpoint_profile(0)


def test_plugins_follow_the_onnx_flavour():
    assert plugins_for("trt") == "custom" and plugins_for("onnx") == "builtin"
    assert plugins_for("trt", "custom") == "custom"
    with pytest.raises(ValueError, match="--plugins custom"):
        plugins_for("trt", "builtin")


def test_device_names():
    assert [device_index(d) for d in ("cuda", "cuda:1", "CUDA:2", "gpu:3", "cpu", None)] == [0, 1, 2, 3, 0, 0]
    with pytest.raises(ModelLoadError, match="unknown device"):
        device_index("npu")


def test_plugin_library_lookup_order(tmp_path, monkeypatch):
    explicit, env, recorded, default = (tmp_path / f"{n}.so" for n in ("explicit", "env", "recorded", "default"))
    for f in (explicit, env, recorded, default):
        f.write_bytes(b"")
    monkeypatch.setattr(trt_runtime, "default_plugin_library", lambda: default)
    monkeypatch.setenv(trt_runtime.PLUGIN_LIBRARY_ENV, str(env))
    assert find_plugin_library(explicit, recorded) == explicit
    assert find_plugin_library(None, recorded) == env
    monkeypatch.delenv(trt_runtime.PLUGIN_LIBRARY_ENV)
    assert find_plugin_library(None, recorded) == recorded
    assert find_plugin_library(None, tmp_path / "moved.so") == default  # a recorded path that is gone is skipped
    with pytest.raises(ModelLoadError, match="no such file"):
        find_plugin_library(tmp_path / "typo.so")  # a path the user gave must exist
    monkeypatch.setattr(trt_runtime, "default_plugin_library", lambda: None)
    with pytest.raises(ModelLoadError, match="python -m plugins.build"):
        find_plugin_library(None, None)


def test_the_default_plugin_library_is_the_one_plugins_build_writes():
    from plugins.build import PLUGIN_LIBRARY

    assert trt_runtime.default_plugin_library() == PLUGIN_LIBRARY


# ------------------------------------------------------------------ sidecar metadata
def _engine_meta():
    from trainer.models import default_meta

    meta = default_meta("tiny", ["__background__", "circle", "square", "triangle"], (256, 256))
    meta.export = dict(format="tensorrt", tensorrt=TRT11, precision="fp16", typing="strong", plugins="custom",
                       plugin_library="/opt/frcnn/libfrcnn_trt_plugins.so", batch=None, batch_range=[1, 4, 8])
    return meta


def test_sidecar_round_trip(tmp_path):
    engine = tmp_path / "model.engine"
    meta = _engine_meta()
    written = trt_export.write_sidecar(engine, meta)
    assert written == sidecar_path(engine) == tmp_path / "model.engine.json"
    assert json.loads(written.read_text())["export"]["batch_range"] == [1, 4, 8]
    assert read_sidecar(engine) == meta


@pytest.mark.parametrize("content, message", [(None, "is missing"), ("{not json", "unreadable"),
                                              ('{"arch": "tiny"}', "unreadable")])
def test_bad_sidecars_give_one_line(tmp_path, content, message):
    engine = tmp_path / "model.engine"
    if content is not None:
        sidecar_path(engine).write_text(content)
    with pytest.raises(ModelLoadError, match=message) as e:
        read_sidecar(engine)
    assert "\n" not in str(e.value)


def test_sidecar_of_another_format_is_refused(tmp_path):
    meta = _engine_meta()
    meta.export = dict(format="onnx")
    trt_export.write_sidecar(tmp_path / "model.engine", meta)
    with pytest.raises(ModelLoadError, match="not the metadata of a TensorRT engine"):
        read_sidecar(tmp_path / "model.engine")


# ------------------------------------------------------------------ command line, no TensorRT needed
def _run(code: str, *args, cwd=ROOT):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=str(cwd))


BLOCK_TENSORRT = "import sys; sys.modules['tensorrt'] = None\n"  # `import tensorrt` fails, installed or not
FAKE_TENSORRT_NO_PYCUDA = ("import sys, types; sys.modules['tensorrt'] = types.SimpleNamespace(__version__='11.4.0')\n"
                           "sys.modules['pycuda'] = sys.modules['pycuda.driver'] = None\n")
RUN_EXPORTER = "import runpy; sys.argv[0] = 'exporters.trt'; runpy.run_module('exporters.trt', run_name='__main__')"


def _one_line_error(r, exit_code: int, *words: str):
    assert r.returncode == exit_code, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for word in words:
        assert word in lines[0]


def test_help():
    r = subprocess.run([sys.executable, "-m", "exporters.trt", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0
    for option in ("--checkpoint", "--onnx", "--fp16", "--max-batch", "--workspace", "--timing-cache", "--plugins",
                   "--no-verify", "STRONGLY", "Exit codes"):
        assert option.lower() in r.stdout.lower()


def test_missing_tensorrt_is_one_line_and_exit_3(tiny_run, tmp_path):
    r = _run(BLOCK_TENSORRT + RUN_EXPORTER, "--checkpoint", str(tiny_run), "--out", str(tmp_path / "m.engine"))
    _one_line_error(r, 3, "TensorRT is not installed", "pip install tensorrt")
    assert not (tmp_path / "m.engine").exists()


def test_missing_pycuda_is_one_line_and_exit_3(tiny_run, tmp_path):
    r = _run(FAKE_TENSORRT_NO_PYCUDA + RUN_EXPORTER, "--checkpoint", str(tiny_run), "--out", str(tmp_path / "m.engine"))
    _one_line_error(r, 3, "pycuda is not installed", "pip install pycuda")


def test_loading_an_engine_without_tensorrt_is_one_line(tmp_path, monkeypatch):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ModelLoadError, match="pip install tensorrt") as e:
        runtimes.load(engine)
    assert "\n" not in str(e.value)


def test_predict_on_an_engine_without_tensorrt_is_one_line(tmp_path, shapes_images):
    import cv2

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    cv2.imwrite(str(tmp_path / "a.png"), shapes_images[0][..., ::-1])
    r = _run(BLOCK_TENSORRT + "import runpy; sys.argv[0] = 'runtimes.predict'; "
             "runpy.run_module('runtimes.predict', run_name='__main__')",
             "--model", str(engine), "--source", str(tmp_path / "a.png"), "--save-dir", str(tmp_path / "out"))
    _one_line_error(r, 2, "TensorRT is not installed")


class _NoGpuDriver:
    """pycuda.driver as it behaves without a GPU: cuInit fails."""

    class Error(Exception):
        pass

    @staticmethod
    def init():
        raise _NoGpuDriver.Error("cuInit failed: no CUDA-capable device is detected")


class _ZeroGpuDriver(_NoGpuDriver):
    @staticmethod
    def init():
        pass

    class Device:
        @staticmethod
        def count():
            return 0


def test_no_gpu_is_one_line():
    with pytest.raises(ModelLoadError, match="no usable CUDA GPU .*no CUDA-capable device"):
        trt_runtime.open_gpu(_NoGpuDriver, 0)
    with pytest.raises(ModelLoadError, match="no CUDA GPU found"):
        trt_runtime.open_gpu(_ZeroGpuDriver, 0)


@pytest.mark.parametrize("args, message", [
    (["--out", "m.onnx"], "use a .engine or .plan"),
    (["--out", "m.engine", "--opt-batch", "2"], "--opt-batch goes with --max-batch"),
    (["--out", "m.engine", "--workspace", "0"], "--workspace"),
    (["--out", "m.engine", "--reference-checkpoint", "x"], "--reference-checkpoint goes with --onnx"),
])
def test_bad_arguments_exit_2_with_one_line(tiny_run, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        trt_export.main(["--checkpoint", str(tiny_run), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message in err[0], err


# ------------------------------------------------------------------ the ONNX the exporter feeds TensorRT 11
@pytest.fixture(scope="module")
def tiny_model(tiny_run):
    from trainer.checkpoint import load_checkpoint

    return load_checkpoint(tiny_run)


def _mixed_precision_onnx(tiny_model, tmp_path_factory, plugins: str) -> Path:
    """The fp16 build's ONNX for TensorRT 11, exactly as build_from_checkpoint exports it (dynamic batch)."""
    model, meta = tiny_model
    path = tmp_path_factory.mktemp("trt_mixed") / ("model.trt.onnx" if plugins == "custom" else "model.onnx")
    return trt_export.export_for_tensorrt(model, meta, path, precision_plan(TRT11, fp16=True), plugins, None)


@pytest.fixture(scope="module")
def mixed_custom(tiny_model, tmp_path_factory):
    return _mixed_precision_onnx(tiny_model, tmp_path_factory, "custom")


@pytest.fixture(scope="module")
def mixed_builtin(tiny_model, tmp_path_factory):
    return _mixed_precision_onnx(tiny_model, tmp_path_factory, "builtin")


def _types(path):
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input, *g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return model, types


def test_mixed_precision_graph_keeps_box_math_in_fp32(mixed_custom, tiny_model):
    from onnx import TensorProto

    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    model, types = _types(mixed_custom)
    g = model.graph
    meta = trt_export.read_onnx_meta(mixed_custom)
    assert meta.export["precision"] == "mixed-fp16" and meta.export["flavor"] == "trt"
    assert tiny_model[1].export.get("precision") is None  # the caller's metadata is left alone
    nodes = {op: [n for n in g.node if n.op_type == op] for op in ("Conv", "Gemm", "Exp", "FrcnnBatchedNMS",
                                                                     "FrcnnMultilevelRoIAlign")}
    # the networks: every conv and linear layer, weights and inputs, in fp16
    assert nodes["Conv"] and all(types[n.input[0]] == F16 and types[n.input[1]] == F16 for n in nodes["Conv"])
    assert nodes["Gemm"] and all(types[n.input[0]] == F16 and types[n.input[1]] == F16 for n in nodes["Gemm"])
    # RoIAlign: RoI coordinates fp32, feature maps fp16
    (roi_align,) = nodes["FrcnnMultilevelRoIAlign"]
    assert types[roi_align.input[0]] == F32 and {types[i] for i in roi_align.input[1:]} == {F16}
    # both NMS (RPN and final): boxes and scores fp32
    assert len(nodes["FrcnnBatchedNMS"]) == 2
    assert all(types[n.input[0]] == F32 and types[n.input[1]] == F32 for n in nodes["FrcnnBatchedNMS"])
    # box decoding (exp of the size deltas) and the anchors: fp32
    assert nodes["Exp"] and all(types[n.input[0]] == F32 for n in nodes["Exp"])
    anchors = [t for t in g.initializer if len(t.dims) == 2 and t.dims[1] == 4]
    assert anchors and all(t.data_type == F32 for t in anchors)
    assert [types[o.name] for o in g.output] == [TensorProto.INT32, F32, F32, TensorProto.INT32]


def test_mixed_precision_standard_graph_runs_in_onnxruntime_close_to_fp32(mixed_builtin, tiny_model):
    """The --plugins builtin fp16 graph on the CPU (ONNX Runtime runs fp16 nodes it has no CPU
    kernel for in fp32 between casts, so values are rounded to fp16 between layers) against the
    fp32 PyTorch deploy graph."""
    from exporters.verify import sample_images
    from runtimes.parity import Thresholds, compare
    from runtimes.torch import TorchDetector

    half = runtimes.load(mixed_builtin)
    assert half.meta.export["precision"] == "mixed-fp16" and half.flavor == "onnx" and half.batch is None
    reference = TorchDetector(None, model=tiny_model[0], meta=tiny_model[1])
    images, gt, ids, _ = sample_images(reference.meta, 6)
    report = compare([reference(im) for im in images], [half(im) for im in images],
                     Thresholds(min_matched=0.98, max_box_px=0.25, max_score=0.005, max_map_diff=0.005),
                     gt=gt, image_ids=ids, category_ids=reference.meta.category_ids)
    assert report.reference > 50, "too few detections to compare"
    assert report.passed, report.summary()


def test_onnx_input_is_checked_before_tensorrt(mixed_custom, tmp_path, capsys, monkeypatch):
    """--onnx: flavour/plugins and batch mismatches are input errors (2); a good ONNX reaches the TensorRT check (3)."""
    onnx_path = str(mixed_custom)
    for args, message in [(["--plugins", "builtin"], "--plugins custom"), (["--onnx", "missing.onnx"], "no such file")]:
        argv = ["--onnx", onnx_path, "--out", str(tmp_path / "m.engine"), *args]
        with pytest.raises(SystemExit) as e:
            trt_export.main(argv if "missing.onnx" not in args else argv[2:])
        assert e.value.code == 2 and message in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(SystemExit) as e:
        trt_export.main(["--onnx", onnx_path, "--out", str(tmp_path / "m.engine"), "--max-batch", "4"])
    assert e.value.code == 3 and "TensorRT is not installed" in capsys.readouterr().err


# ------------------------------------------------------------------ against stand-ins held to the real bindings
# tests/trt_standins.py: a tensorrt module per version with only the names its bindings have; pycuda free-written.
STANDIN_VERSIONS = ("10.16", "11.1")


def _flag_bit(version: str, name: str) -> int:
    return 1 << facts(version)["enums"]["NetworkDefinitionCreationFlag"][name]


@pytest.mark.parametrize("version", STANDIN_VERSIONS)
def test_command_line_against_the_stand_ins(mixed_builtin, tmp_path, monkeypatch, capsys, version):
    """--onnx (mixed-fp16, standard flavour) through check, build, files and parity."""
    trt, _ = install(monkeypatch, version, mixed_builtin)
    engine, cache = tmp_path / "model.engine", tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    argv = ["--onnx", str(mixed_builtin), "--out", str(engine), "--max-batch", "4", "--opt-batch", "2",
            "--workspace", "1.5", "--timing-cache", str(cache), "--parity-images", "3"]
    assert trt_export.main(argv) == 0
    out = capsys.readouterr().out
    assert "fp16 engine (strongly typed), plugins builtin, batch 1..4 (opt 2)" in out and "parity OK" in out
    (builder,) = trt._builders
    config = builder._config
    # STRONGLY_TYPED: the mixed-precision ONNX keeps its types (the flag is bit 1 on 10.16, bit 0 on 11.1)
    assert builder._network._flags == _flag_bit(version, "STRONGLY_TYPED")
    assert config._set == set() and config._cleared == set()  # no FP16 flag; TF32 only matters for fp32
    assert config._pools == {"WORKSPACE": int(1.5 * 2**30)}
    h, w = trt_export.read_onnx_meta(mixed_builtin).canvas
    assert config._profiles == [("images", (1, h, w, 3), (2, h, w, 3), (4, h, w, 3))]
    assert cache.read_bytes() == b"timings:old" and engine.read_bytes() == mixed_builtin.read_bytes()
    assert trt._parsed == [str(mixed_builtin)]
    assert trt._loaded == ["libnvinfer_plugin", "libnvinfer_plugin"]  # builtin: TensorRT's plugins, not ours
    export = read_sidecar(engine).export
    assert (export["precision"], export["typing"], export["plugins"], export["plugin_library"], export["batch"],
            export["batch_range"], export["tensorrt"], export["onnx_precision"], export["source"]) == \
        ("fp16", "strong", "builtin", None, None, [1, 2, 4], trt.__version__, "mixed-fp16", "model.onnx")


@pytest.mark.parametrize("version, half_onnx", [("10.16", False), ("11.1", True)])
def test_checkpoint_command_line_against_the_stand_ins(mixed_builtin, tiny_run, tmp_path, monkeypatch, capsys,
                                                      version, half_onnx):
    """--checkpoint: the export the installed TensorRT needs, the build, parity against PyTorch. The
    export is the fixture's (the same call build_from_checkpoint makes, already done once)."""
    import shutil

    install(monkeypatch, version, mixed_builtin)
    exports = []

    def export(model, meta, onnx_path, plan, plugins, batch, calib=None):
        exports.append((plan.half_onnx, plugins, batch))
        return shutil.copy(mixed_builtin, onnx_path)

    monkeypatch.setattr(trt_export, "export_for_tensorrt", export)
    engine = tmp_path / "model.plan"
    argv = ["--checkpoint", str(tiny_run), "--out", str(engine), "--fp16", "--max-batch", "4", "--plugins", "builtin",
            "--parity-images", "4"]
    assert trt_export.main(argv) == 0
    out = capsys.readouterr().out
    # fp16: TensorRT 11 builds the mixed-precision ONNX; 10 the fp32 one with BuilderFlag.FP16; dynamic batch
    assert exports == [(half_onnx, "builtin", None)]
    assert "parity reference: the PyTorch deploy graph" in out and "parity OK" in out
    assert read_sidecar(engine).export["batch_range"] == [1, 4, 4]


@pytest.mark.parametrize("version, fp16, flag, set_flags, cleared", [
    ("10.16", True, None, {"FP16"}, set()),  # TensorRT 10: weak typing, the FP16 flag
    ("10.16", False, None, set(), {"TF32"}),  # fp32 means fp32: TF32 off
    ("11.1", False, "STRONGLY_TYPED", set(), {"TF32"}),
    ("11.1", True, "STRONGLY_TYPED", set(), set()),
])
def test_builder_settings_per_version(mixed_builtin, monkeypatch, version, fp16, flag, set_flags, cleared):
    trt, _ = install(monkeypatch, version, mixed_builtin)
    plan = precision_plan(trt.__version__, fp16)
    builder = trt.Builder(None)
    network, _ = trt_export.parse_onnx(trt, builder, None, mixed_builtin, plan.strongly_typed)
    config = trt_export.builder_config(trt, builder, network, plan, (3, 3, 3))
    assert network._flags == (_flag_bit(version, flag) if flag else 0)
    assert config._set == set_flags and config._cleared == cleared
    assert config._pools == {} and config._profiles[0][1][0] == 3


def test_a_name_the_version_lacks_fails(mixed_builtin, monkeypatch):
    """The stand-ins have only the real bindings' names: TensorRT 11.1 has no BuilderFlag.FP16, so the weakly
    typed fp16 recipe of TensorRT 10 fails on its 11.1 stand-in as it would on TensorRT 11 itself."""
    from exporters.trt import Precision

    from tests.trt_standins import NotInBindings, strict_class, strict_module

    trt, _ = install(monkeypatch, "11.1", mixed_builtin)
    assert not hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "TF32")
    builder = trt.Builder(None)
    network, _ = trt_export.parse_onnx(trt, builder, None, mixed_builtin, False)
    with pytest.raises(AttributeError, match="FP16"):
        trt_export.builder_config(trt, builder, network, Precision("fp16", strongly_typed=False), (1, 1, 1))
    trt10, _ = install(monkeypatch, "10.16", mixed_builtin)
    assert int(trt10.BuilderFlag.FP16) == facts("10.16")["enums"]["BuilderFlag"]["FP16"]
    # and a stand-in cannot add what the bindings lack: a member, an instance attribute, a module function
    with pytest.raises(NotInBindings, match="platform_has_fast_fp16"):
        strict_class("11.1", "Builder", type("Builder", (), {"platform_has_fast_fp16": True}))
    with pytest.raises(NotInBindings, match="num_bindings"):
        trt.ICudaEngine().num_bindings = 5
    with pytest.raises(NotInBindings, match="tensorrt.volume_of"):
        strict_module("11.1", "11.1.0", volume_of=len)


@pytest.mark.parametrize("version", STANDIN_VERSIONS)
def test_adapter_buffers_against_the_stand_ins(mixed_builtin, tmp_path, monkeypatch, version):
    onnx_path = mixed_builtin
    engine, library = tmp_path / "model.engine", tmp_path / "libfrcnn_trt_plugins.so"
    engine.write_bytes(onnx_path.read_bytes())  # the stand-ins' "serialized engine" is the ONNX itself
    library.write_bytes(b"")
    meta = trt_export.read_onnx_meta(onnx_path)
    meta.export = dict(format="tensorrt", precision="fp16", plugins="custom", plugin_library=str(library),
                       batch=None, batch_range=[1, 2, 4])
    trt_export.write_sidecar(engine, meta)
    trt, primary = install(monkeypatch, version, onnx_path)
    memory, loaded = trt._memory, trt._loaded

    det = runtimes.load(engine)
    assert loaded == ["libnvinfer_plugin", str(library.resolve())]  # the recorded library, before deserializing
    assert (det.batch, det.min_batch, det.max_batch, det.device) == (None, 1, 4, "cuda:0")
    reference = runtimes.load(onnx_path)
    from trainer.data.shapes import render

    images = [render(5, i)[0] for i in range(6)]
    canvas, _ = reference.prepare(images)
    expected = reference.infer(canvas)
    for n in (3, 1, 6, 2):  # grow, shrink (reuse), beyond the profile (chunks of 4 + 2), shrink again
        out = det.infer(canvas[:n])
        for name, value in expected.items():
            # the stand-ins run ONNX Runtime, whose float results may differ in the last bits between batch sizes
            np.testing.assert_allclose(out[name], value[:n], rtol=1e-5, atol=1e-3, err_msg=f"{name} at batch {n}")
        assert out["labels"].dtype == np.int32 and out["boxes"].dtype == np.float32
    assert det._capacity == 4 and len(memory.blocks) == 10  # allocated for 3, then once more for 4
    first = det(images[0])
    assert len(first) == len(reference(images[0])) and primary.depth == 0
    det.close()
    assert primary.detached and primary.depth == 0


def test_a_one_value_profile_is_a_fixed_batch(mixed_builtin, tmp_path, monkeypatch):
    """--batch 2 on a dynamic-batch ONNX: the engine's profile is 2..2, and the detector pads to it."""
    install(monkeypatch, "11.1", mixed_builtin, profile=(2, 2, 2))
    engine = tmp_path / "model.engine"
    engine.write_bytes(mixed_builtin.read_bytes())
    meta = trt_export.read_onnx_meta(mixed_builtin)
    meta.export = dict(format="tensorrt", plugins="builtin", batch=2, batch_range=[2, 2, 2])
    trt_export.write_sidecar(engine, meta)
    det = runtimes.load(engine, device="cuda:0")
    assert (det.batch, det.min_batch, det.max_batch) == (2, 2, 2)
    from trainer.data.shapes import render

    images = [render(5, i)[0] for i in range(3)]
    reference = runtimes.load(mixed_builtin)
    got, want = det(images), reference(images)  # 3 images: batches of 2, the last padded
    assert [len(d) for d in got] == [len(d) for d in want]
    np.testing.assert_array_equal(got[2].boxes, want[2].boxes)


# ------------------------------------------------------------------ with TensorRT and a GPU
_UNAVAILABLE = runtimes.unavailable("tensorrt", "cuda")
needs_gpu = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"needs TensorRT and a CUDA GPU: {_UNAVAILABLE}")


@pytest.fixture(scope="module")
def plugin_library():
    try:
        return find_plugin_library()
    except ModelLoadError as e:
        pytest.skip(str(e))


def _parity(detector, model, meta, thresholds=None, images: int = 8):
    from exporters.verify import sample_images
    from runtimes.parity import Thresholds, compare
    from runtimes.torch import TorchDetector

    reference = TorchDetector(None, model=model, meta=meta)
    imgs, gt, ids, _ = sample_images(meta, images)
    return compare([reference(im) for im in imgs], [detector(im) for im in imgs], thresholds or Thresholds(),
                   gt=gt, image_ids=ids, category_ids=meta.category_ids)


@needs_gpu
def test_fp32_engine_with_our_plugins_matches_pytorch(tiny_model, plugin_library, tmp_path):
    model, meta = tiny_model
    engine = trt_export.build_from_checkpoint(model, meta, tmp_path / "fp32.engine", fp16=False, batch=2)
    export = read_sidecar(engine).export
    assert (export["precision"], export["plugins"], export["batch"], export["batch_range"]) == ("fp32", "custom", 2,
                                                                                                 [2, 2, 2])
    det = runtimes.load(engine, device="cuda")
    assert det.batch == 2 and det.dtypes["num_detections"] == np.int32 and det.dtypes["boxes"] == np.float32
    canvas = np.zeros((2, *det.canvas, 3), np.uint8)
    out = det.infer(canvas)
    assert out["boxes"].shape == (2, meta.detections_per_img, 4) and out["labels"].dtype == np.int32
    with pytest.raises(ValueError, match="fixed batch of 2"):
        det.infer(canvas[:1])
    report = _parity(det, model, meta)
    assert report.passed, report.summary()


@needs_gpu
def test_fp16_dynamic_engine_reuses_its_buffers(tiny_model, plugin_library, tmp_path):
    from runtimes.parity import FP16, Thresholds

    model, meta = tiny_model
    engine = trt_export.build_from_checkpoint(model, meta, tmp_path / "fp16.engine", fp16=True, max_batch=4)
    det = runtimes.load(engine, device="cuda:0")
    assert det.batch is None and det.max_batch == 4 and det.meta.export["precision"] == "fp16"
    canvas = np.zeros((6, *det.canvas, 3), np.uint8)
    det.infer(canvas[:3])
    assert det._capacity == 3
    det.infer(canvas[:1])
    assert det._capacity == 3  # a smaller batch reuses the buffers
    out = det.infer(canvas)  # beyond the profile: chunks of 4 and 2
    assert det._capacity == 4 and out["scores"].shape[0] == 6
    # fp16 tolerances are a first guess: not yet measured on a GPU
    report = _parity(det, model, meta, Thresholds(min_matched=0.9, max_box_px=2.0, max_score=0.02,
                                                  max_map_diff=FP16.max_map_diff))
    assert report.passed, report.summary()


@needs_gpu
def test_builtin_ops_engine_matches_pytorch(tiny_model, tmp_path):
    model, meta = tiny_model
    engine = trt_export.build_from_checkpoint(model, meta, tmp_path / "builtin.engine", plugins="builtin")
    det = runtimes.load(engine, device="cuda")
    assert det.meta.export["plugins"] == "builtin" and det.meta.export["plugin_library"] is None
    report = _parity(det, model, meta)
    assert report.passed, report.summary()


@needs_gpu
def test_command_line_builds_and_verifies(tiny_run, plugin_library, tmp_path):
    cache = tmp_path / "timing.cache"
    r = subprocess.run([sys.executable, "-m", "exporters.trt", "--checkpoint", str(tiny_run), "--out",
                        str(tmp_path / "m.engine"), "--timing-cache", str(cache), "--parity-images", "4"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "parity OK" in r.stdout and cache.stat().st_size > 0 and sidecar_path(tmp_path / "m.engine").is_file()
