"""OpenVINO export and runtime: real IRs converted from a small tiny-model ONNX, run in real
OpenVINO sessions and compared with ONNX Runtime and the PyTorch deploy graph."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install -e .[openvino])")

import runtimes  # noqa: E402
from exporters import openvino as ov_export  # noqa: E402
from exporters.verify import verify  # noqa: E402
from runtimes.base import ModelLoadError  # noqa: E402
from runtimes.openvino import OpenVINODetector  # noqa: E402
from runtimes.parity import FP16, Thresholds, compare  # noqa: E402
from trainer.data.shapes import render  # noqa: E402

# class names with XML-special characters: rt_info is XML, the metadata must survive it
CLASSES = ["__background__", 'circle "round"', "square & <box>", "triangle"]
EXACT = Thresholds(min_matched=1.0, max_box_px=1e-3, max_score=1e-4, max_map_diff=1e-6)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Loads that use the default cache (the exporter's parity check) write under tmp_path, not ~/.cache."""
    monkeypatch.setenv("FRCNN_OPENVINO_CACHE", str(tmp_path / "default-cache"))
    return tmp_path / "default-cache"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A random tiny model (128x128 canvas), its dynamic-batch ONNX, and IRs from it: fp32 and
    fp16-weights at batch 1, fp32 at batch 2 (one ONNX export keeps the module fast)."""
    import onnx
    import torch

    from exporters.onnx import export_onnx
    from trainer.models import build_model, default_meta

    root = tmp_path_factory.mktemp("openvino")
    torch.manual_seed(0)
    # sampling_ratio 2 (torchvision's): the IR must keep it where OpenVINO's importer would default to 1
    meta = default_meta("tiny", CLASSES, (128, 128), provenance={"dataset": "shapes:train=4,val=6"},
                        arch_kwargs={"sampling_ratio": 2})
    model = build_model(meta).eval()
    onnx_path = export_onnx(model, meta, root / "model.onnx", batch=None)
    # the same graph declaring a fixed batch of 1, as a fixed-batch export would
    fixed = onnx.load(str(onnx_path))
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(fixed, str(root / "fixed.onnx"))
    return dict(root=root, model=model, meta=meta, onnx=onnx_path, fixed_onnx=root / "fixed.onnx",
                fp32=ov_export.convert(onnx_path, root / "fp32", batch=1),
                fp16=ov_export.convert(onnx_path, root / "fp16", fp16_weights=True, batch=1),
                batch2=ov_export.convert(onnx_path, root / "batch2" / "b2.xml", batch=2))


@pytest.fixture(scope="module")
def images():
    return [render(11, i)[0] for i in range(4)]


@pytest.fixture(scope="module")
def detector(artifacts, tmp_path_factory):
    return runtimes.load(artifacts["fp32"].parent, cache_dir=tmp_path_factory.mktemp("cache"))


def test_ir_keeps_roi_align_semantics_and_dynamic_ops(artifacts):
    model = ov.Core().read_model(str(artifacts["fp32"]))
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert {"NonZero", "ScatterNDUpdate", "NonMaxSuppression"} <= set(types)
    rois = [op.get_attributes() for op in model.get_ordered_ops() if op.get_type_name() == "ROIAlign"]
    assert len(rois) == 4  # one per FPN level
    for attrs in rois:
        # OpenVINO's importer would default sampling_ratio to 1; "asymmetric" = ONNX output_half_pixel (aligned=False)
        assert attrs["sampling_ratio"] == 2 and attrs["aligned_mode"] == "asymmetric" and attrs["mode"] == "avg"
    assert sorted(a["spatial_scale"] for a in rois) == [1 / 32, 1 / 16, 1 / 8, 1 / 4]


def test_metadata_round_trip_through_rt_info(artifacts, detector):
    meta = artifacts["meta"]
    assert isinstance(detector, OpenVINODetector)
    got = detector.meta
    assert got.class_names == CLASSES and got.canvas == (128, 128) and got.provenance == meta.provenance
    assert {k: v for k, v in got.to_dict().items() if k != "export"} == \
        {k: v for k, v in meta.to_dict().items() if k != "export"}
    assert got.export["format"] == "openvino" and got.export["precision"] == "fp32" and got.export["batch"] == 1
    assert detector.batch == 1 and detector.device == "CPU"  # runtimes.load passed device="cpu"


def test_parity_with_onnxruntime_and_torch(artifacts, detector, images):
    from runtimes.torch import TorchDetector

    ort = runtimes.load(artifacts["onnx"])
    report = compare(ort(images), detector(images), Thresholds(max_box_px=1e-2, max_score=1e-4))
    assert report.reference > 0 and report.passed, report.summary()
    torch_ref = TorchDetector(None, model=artifacts["model"], meta=artifacts["meta"])
    report = verify(detector, torch_ref, artifacts["meta"], images=6)
    assert report.map_test is not None and report.passed, report.summary()


def test_fp16_weights_are_fp16(artifacts, images):
    fp32, fp16 = artifacts["fp32"], artifacts["fp16"]
    ratio = fp16.with_suffix(".bin").stat().st_size / fp32.with_suffix(".bin").stat().st_size
    assert 0.45 < ratio < 0.6

    def weight_types(xml):
        ops = ov.Core().read_model(str(xml)).get_ordered_ops()
        return [op.get_element_type() for op in ops if op.get_type_name() == "Constant"
                and op.get_output_partial_shape(0).is_static and math.prod(op.get_output_shape(0)) > 1000]

    assert all(t == ov.Type.f32 for t in weight_types(fp32))
    halves = weight_types(fp16)
    assert sum(t == ov.Type.f16 for t in halves) >= 0.9 * len(halves)
    det = runtimes.load(fp16, cache_dir=None)
    assert det.meta.export["precision"] == "fp16-weights"
    assert len(det(images[0])) > 0


def test_throughput_stream_gives_latency_results_in_order(artifacts, detector, images, tmp_path):
    stream = OpenVINODetector(artifacts["fp32"], mode="throughput", cache_dir=tmp_path)
    got = list(stream.detect_stream(iter(images * 2)))
    assert len(got) == 2 * len(images)
    want = [detector(im) for im in images] * 2
    for w, g in zip(want, got):
        assert compare([w], [g], EXACT).passed


def test_batch2_ir_pads_odd_batches(artifacts, detector, images):
    det = runtimes.load(artifacts["batch2"], cache_dir=None)
    assert det.batch == 2 and det.meta.export["batch"] == 2
    want = [detector(im) for im in images[:3]]
    assert compare(want, det(images[:3]), EXACT).passed  # 3 images: one full batch, one padded
    assert compare(want, list(det.detect_stream(images[:3])), EXACT).passed


def test_virtual_device_names_pass_through(artifacts, detector, images):
    auto = runtimes.load(artifacts["fp32"], device="auto:cpu", cache_dir=None)
    assert auto.device == "AUTO:CPU"
    assert compare([detector(images[0])], [auto(images[0])], EXACT).passed


def test_cache_dir_gets_populated_and_reused(artifacts, tmp_path, images):
    cache = tmp_path / "ov-cache"
    first = OpenVINODetector(artifacts["fp32"], cache_dir=cache)
    blobs = list(cache.glob("*.blob"))
    assert len(blobs) == 1
    stamp = blobs[0].stat().st_mtime_ns
    # the second start imports the same blob, and still applies its own runtime settings
    second = OpenVINODetector(artifacts["fp32"], cache_dir=cache, threads=1)
    assert list(cache.glob("*.blob")) == blobs and blobs[0].stat().st_mtime_ns == stamp
    assert second.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert second.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert compare([first(images[0])], [second(images[0])], EXACT).passed


def test_runs_without_torch(artifacts):
    code = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
import runtimes
from runtimes.openvino import OpenVINODetector
from trainer.data.shapes import render
det = runtimes.load(sys.argv[1], cache_dir=None)
assert isinstance(det, OpenVINODetector)
dets = det(render(11, 0)[0])
assert "torch" not in sys.modules
print("detections", len(dets))
"""
    out = subprocess.run([sys.executable, "-c", code, str(artifacts["fp32"])], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("detections ")


def _bad_ir(artifacts, tmp_path, case):
    xml, ir = artifacts["fp32"], tmp_path / case
    ir.mkdir()
    text = xml.read_bytes()
    if case == "truncated-xml":
        (ir / "model.xml").write_bytes(text[: len(text) // 2])
        (ir / "model.bin").symlink_to(xml.with_suffix(".bin"))
    else:  # missing-bin
        (ir / "model.xml").write_bytes(text)
    return ir


@pytest.mark.parametrize("case, device, message", [
    ("missing-bin", "cpu", "model.bin is missing"),
    ("truncated-xml", "cpu", "not a readable OpenVINO IR"),
    ("good", "TPU", "unknown OpenVINO device 'TPU'"),
    ("good", "cuda:0", "does not run on CUDA"),
    ("good", "HETERO", "needs a device list")])
def test_bad_inputs_give_one_line(artifacts, tmp_path, case, device, message):
    path = artifacts["fp32"] if case == "good" else _bad_ir(artifacts, tmp_path, case)
    with pytest.raises(ModelLoadError) as err:
        runtimes.load(path, device=device, cache_dir=None)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_help_and_errors(artifacts, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ov_export.main(["--help"])
    assert e.value.code == 0 and "--fp16-weights" in capsys.readouterr().out
    cases = [
        (["--onnx", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "a")], "no such file"),
        (["--onnx", str(artifacts["fixed_onnx"]), "--out", str(tmp_path / "b"), "--batch", "2"], "fixed batch of 1"),
        (["--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "c")], "no checkpoint found"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            ov_export.main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("error: ") and message in err and "\n" not in err


def test_cli_parity_defaults_follow_the_precision():
    from exporters.cli import thresholds_from

    base = ["--onnx", "m.onnx", "--out", "ir"]
    for extra, want in (([], Thresholds()), (["--fp16-weights"], FP16)):
        args = ov_export.parse_args(base + extra)
        assert thresholds_from(args, args.fp16_weights) == want
    args = ov_export.parse_args(base + ["--fp16-weights", "--max-box-px", "2", "--max-map-diff", "0.01"])
    explicit = thresholds_from(args, args.fp16_weights)
    assert (explicit.max_box_px, explicit.max_map_diff, explicit.min_matched) == (2.0, 0.01, 0.95)


def test_cli_converts_and_fails_loudly_on_parity(artifacts, tmp_path, capsys, private_cache):
    out = tmp_path / "ir"
    base = ["--onnx", str(artifacts["onnx"]), "--out", str(out), "--parity-images", "2"]
    assert ov_export.main(base) == 0
    text = capsys.readouterr().out
    assert "parity reference: ONNX Runtime" in text and "parity OK" in text
    assert (out / "model.xml").is_file() and (out / "model.bin").is_file()
    assert any(private_cache.glob("*.blob"))  # the parity run used the default cache, from the environment
    # an impossible threshold must fail with a readable report and exit 1
    assert ov_export.main(base + ["--min-matched", "1.01"]) == 1
    text = capsys.readouterr().out
    assert "parity FAILED" in text and "- matched" in text
