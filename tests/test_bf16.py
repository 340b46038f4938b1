"""bf16: the inference precision an OpenVINO IR records, what the CPU really compiles it to
(the runtime graph), the fallback to f32 on a CPU without bf16 (capability check simulated),
the mAP gate, and torch's bf16 autocast baseline. Real IRs of a random tiny model."""

import warnings

import numpy as np
import pytest

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install -e .[openvino])")

import runtimes  # noqa: E402
from exporters import gate as map_gate_module  # noqa: E402
from exporters import openvino as ov_export  # noqa: E402
from runtimes import openvino_precision as precision  # noqa: E402
from runtimes.base import Detections, Detector  # noqa: E402
from runtimes.openvino import core  # noqa: E402

NO_BF16 = "this CPU has no native bf16 (OpenVINO's CPU OPTIMIZATION_CAPABILITIES lacks BF16)"
needs_bf16 = pytest.mark.skipif(not precision.supports(core(), "CPU", "bf16"), reason=NO_BF16)


@pytest.fixture(autouse=True)
def fresh_state(tmp_path, monkeypatch):
    """Each test sees the fallback warning anew, and compiled blobs go under tmp_path."""
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setenv("FRCNN_OPENVINO_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def irs(tiny_onnx, tmp_path_factory):
    """IRs of the tiny model: recording bf16, recording f32, and recording nothing (an IR
    exported before the precision was recorded)."""
    root = tmp_path_factory.mktemp("bf16")
    model = ov.Core().read_model(str(ov_export.convert(tiny_onnx, root / "source")))
    meta = runtimes.ModelMeta.from_json(model.get_rt_info(runtimes.meta.META_KEY).astype(str))
    del meta.export["inference_precision"]
    model.set_rt_info(meta.to_json(), runtimes.meta.META_KEY)
    legacy = root / "legacy" / "model.xml"  # not over the source: its .bin is memory-mapped while read
    ov.save_model(model, str(legacy), compress_to_fp16=False)
    return dict(bf16=ov_export.convert(tiny_onnx, root / "bf16", inference_precision="bf16"),
                f32=ov_export.convert(tiny_onnx, root / "f32"), legacy=legacy)


def no_bf16_cpu(monkeypatch):
    """Simulate a CPU without bf16: OpenVINO's capability list as an AVX2-only CPU reports it."""
    monkeypatch.setattr(precision, "device_capabilities", lambda core, device: {"FP32", "INT8", "BIN", "EXPORT_IMPORT"})


def test_export_records_the_inference_precision(irs):
    assert runtimes.load(irs["bf16"], precision=None, cache_dir=None).meta.export["inference_precision"] == "bf16"
    assert runtimes.load(irs["f32"], cache_dir=None).meta.export["inference_precision"] == "f32"
    assert "inference_precision" not in runtimes.load(irs["legacy"], cache_dir=None).meta.export


def test_capabilities_come_from_openvino():
    caps = precision.device_capabilities(core(), "CPU")
    assert "FP32" in caps
    assert precision.device_capabilities(core(), "AUTO:CPU") is None  # a virtual device picks later
    assert precision.supports(core(), "CPU", "f32")


@needs_bf16
def test_recorded_bf16_runs_in_bf16_on_a_bf16_cpu(irs):
    det = runtimes.load(irs["bf16"], cache_dir=None)
    assert det.precision == "bf16" and det.inference_precision == "bf16"
    layers = precision.layer_precisions(det.compiled)
    # every convolution and fully-connected layer of the runtime graph executes in bf16, in bf16 kernels
    assert set(layers) == {"bf16"} and layers["bf16"] >= 30, layers
    assert all(k.endswith("bf16") for k in precision.kernels(det.compiled)), precision.kernels(det.compiled)
    # AUTO answers no INFERENCE_PRECISION_HINT: its runtime graph says it
    assert runtimes.load(irs["bf16"], device="auto:cpu", cache_dir=None).inference_precision == "bf16"
    # told otherwise, the same IR runs in f32
    told = runtimes.load(irs["bf16"], precision="f32", cache_dir=None)
    assert told.inference_precision == "f32" and set(precision.layer_precisions(told.compiled)) == {"f32"}
    assert all(k.endswith("f32") for k in precision.kernels(told.compiled)), precision.kernels(told.compiled)


@needs_bf16
def test_ir_recording_nothing_stays_f32_on_a_bf16_cpu(irs):
    # OpenVINO's own default here is bf16; the adapter keeps parity's f32
    assert core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
    for name in ("legacy", "f32"):
        det = runtimes.load(irs[name], cache_dir=None)
        assert det.inference_precision == "f32", name
        assert set(precision.layer_precisions(det.compiled)) == {"f32"}, name


def test_falls_back_to_f32_without_bf16_and_says_so_once(irs, monkeypatch):
    no_bf16_cpu(monkeypatch)
    with pytest.warns(RuntimeWarning, match="no native bf16.*recorded in the artifact falls back to f32"):
        det = runtimes.load(irs["bf16"], cache_dir=None)
    assert det.precision == "f32" and det.inference_precision == "f32"
    assert set(precision.layer_precisions(det.compiled)) == {"f32"}
    assert not any("bf16" in k for k in precision.kernels(det.compiled))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second load in the same process warns no more
        again = runtimes.load(irs["bf16"], precision="bf16", cache_dir=None)
    assert again.inference_precision == "f32"


def test_unknown_precision_is_one_line(irs):
    with pytest.raises(runtimes.ModelLoadError, match="unknown inference precision 'fp8'"):
        runtimes.load(irs["bf16"], precision="fp8", cache_dir=None)


# ------------------------------------------------------------------ the mAP gate
class GroundTruth(Detector):
    """Detections equal to the ground truth of the validation images (mAP 1): a reference the
    random tiny model falls far below, so the gate has a real drop to catch."""

    runtime = "ground-truth"

    def __init__(self, meta, n, spec=None):
        from exporters.verify import sample_images

        self.meta = meta
        images, gt, ids, _ = sample_images(meta, n, spec=spec)
        self.truth = {}
        for image, image_id in zip(images, ids):
            anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32)
            labels = np.array([a["category_id"] for a in anns], np.int64)
            self.truth[image.tobytes()] = Detections(boxes.reshape(-1, 4), np.ones(len(anns), np.float32), labels,
                                                     [meta.class_names[i] for i in labels])

    def __call__(self, image, threshold=None):
        return self.truth[image.tobytes()]


def test_gate_fails_on_a_drop_and_passes_within_it(irs):
    test = runtimes.load(irs["bf16"], cache_dir=None)
    truth = GroundTruth(test.meta, 6)
    low = map_gate_module.map_gate(test, truth, test.meta, "bf16", images=6)
    assert not low.passed and low.map_fp32 == pytest.approx(1.0) and low.drop > 0.5
    assert low.report.passed  # parity is reported with no thresholds: only the drop decides
    same = map_gate_module.map_gate(truth, truth, test.meta, "bf16", images=6)
    assert same.passed and same.drop == 0


def test_gate_scores_on_the_dataset_spec_it_is_given(irs, capsys):
    test = runtimes.load(irs["bf16"], cache_dir=None)
    other = "shapes:train=2,val=3,seed=5"  # not the checkpoint's own dataset (seed 0, 12 val images)
    truth = GroundTruth(test.meta, 3, spec=other)
    result = map_gate_module.map_gate(test, truth, test.meta, "bf16", images=3, spec=other)
    assert result.map_fp32 == pytest.approx(1.0) and not result.passed  # scored on `other`'s ground truth
    assert "on shapes-val (3 images)" in capsys.readouterr().out
    with pytest.raises(KeyError):  # spec=None: the checkpoint's own images, which `truth` has never seen
        map_gate_module.map_gate(test, truth, test.meta, "bf16", images=3)


def test_cli_bf16_records_reports_and_gates(tiny_onnx, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ir"
    base = ["--onnx", str(tiny_onnx), "--out", str(out), "--precision", "bf16", "--gate-images", "4"]
    assert ov_export.main(base) == 0
    text = capsys.readouterr().out
    assert runtimes.load(out, cache_dir=None).meta.export["inference_precision"] == "bf16"
    assert "bf16 inference" in text and "OpenVINO compiled it for CPU in" in text
    assert "bf16 figures (reported, not gated)" in text and "bf16 gate OK: mAP" in text
    # against a reference it falls far below, the gate fails: exit 1, naming the figure
    import exporters.verify

    monkeypatch.setattr(exporters.verify, "pick_reference", lambda model, meta, *a: GroundTruth(meta, 4))
    assert ov_export.main(base) == 1
    err = capsys.readouterr().err
    assert "bf16 gate FAILED: mAP" in err and "vs fp32 1.0000" in err and "> --max-map-drop 0.01" in err


def test_cli_on_a_cpu_without_bf16_says_what_the_gate_measured(tiny_onnx, tmp_path, capsys, monkeypatch):
    no_bf16_cpu(monkeypatch)
    with pytest.warns(RuntimeWarning, match="falls back to f32"):
        code = ov_export.main(["--onnx", str(tiny_onnx), "--out", str(tmp_path / "ir"), "--precision", "bf16",
                               "--gate-images", "2"])
    assert code == 0
    assert "note: CPU runs it in f32, so the gate below measures f32, not bf16" in capsys.readouterr().out


def test_cli_help_and_bad_gate_options(capsys):
    with pytest.raises(SystemExit) as e:
        ov_export.main(["--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "--precision {f32,bf16}" in text and "--max-map-drop" in text
    for extra in (["--gate-images", "0"], ["--max-map-drop", "-0.1"]):
        with pytest.raises(SystemExit) as e:
            ov_export.parse_args(["--onnx", "m.onnx", "--out", "ir", "--precision", "bf16", *extra])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("error: --gate-images must be") and "\n" not in err


# ------------------------------------------------------------------ torch's bf16 baseline
@pytest.mark.parametrize("runtime", ["torchvision", "torch"])
def test_torch_bf16_autocast_runs_convolutions_in_bf16(tiny_run, shapes_images, runtime):
    import torch

    det = runtimes.load(tiny_run, runtime=runtime, precision="bf16")
    dtypes = []
    conv = next(m for m in det.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    out = det.infer(det.prepare(shapes_images[:1])[0])
    assert dtypes == [torch.bfloat16]
    assert out["boxes"].dtype == np.float32 and out["scores"].dtype == np.float32  # the contract's types
    fp32 = runtimes.load(tiny_run, runtime=runtime)
    conv = next(m for m in fp32.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    fp32.infer(fp32.prepare(shapes_images[:1])[0])
    assert dtypes[-1] == torch.float32
    with pytest.raises(runtimes.ModelLoadError, match="unknown torch precision"):
        runtimes.load(tiny_run, runtime=runtime, precision="int4")


# ------------------------------------------------------------------ the benchmark's bf16 rows
def bench_rows(wanted):
    from benchmarks.run import plan

    return {row.key: row for row in plan(wanted, "cpu")}


def test_bench_plans_bf16_rows_with_openvino_only(monkeypatch):
    assert not any(key.endswith("bf16") for key in bench_rows(["onnxruntime"]))
    rows = bench_rows(["openvino"])
    assert {"torchvision-fp32", "torchvision-bf16", "torch-fp32", "openvino-fp32", "openvino-bf16"} <= set(rows)
    assert rows["torchvision-bf16"].precision == "bf16"


def test_bench_bf16_rows_are_not_available_on_a_cpu_without_bf16(monkeypatch):
    from benchmarks import system

    no_bf16_cpu(monkeypatch)
    monkeypatch.setattr(system, "reduced_precision", lambda: dict(avx512_bf16=False, amx_bf16=False))
    rows = bench_rows(["openvino"])
    assert rows["openvino-bf16"].status == ("not available: no bf16 on this CPU "
                                           "(OpenVINO's OPTIMIZATION_CAPABILITIES lacks BF16)")
    assert rows["torchvision-bf16"].status.startswith("not available: no bf16 on this CPU (neither avx512_bf16")
    assert rows["openvino-fp32"].status == rows["torchvision-fp32"].status == "ok"


def test_bench_bf16_is_map_gated_not_parity_checked():
    from benchmarks.run import gate, tolerances
    from runtimes.parity import Thresholds

    assert tolerances("bf16") == map_gate_module.REPORT_ONLY and tolerances("fp32") == Thresholds()
    rows = [dict(name="torch", precision="fp32", runtime="torch", map=0.80),
            dict(name="openvino", precision="bf16", runtime="openvino", map=0.795)]
    assert gate(rows, 0.01) == 0
    rows[1]["map"] = 0.785
    assert gate(rows, 0.01) == 1
    # torch's own bf16 autocast is a speed baseline: its drop is reported, not gated
    rows[1].update(name="torchvision", runtime="torchvision", map=0.75)
    assert gate(rows, 0.01) == 0
    rows[1]["precision"] = "fp32"
    assert gate(rows, 0.01) == 1


@needs_bf16
def test_bench_records_what_each_row_ran_in(tiny_run, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, "benchmarks/run.py", "--model", str(tiny_run), "--runtime", "openvino",
                        "--eval-images", "2", "--iters", "1", "--rounds", "1", "--warmup", "0", "--block-warmup", "0",
                        "--threads", "2", "--out", str(out)],
                       capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["system"]["reduced_precision"]["openvino_cpu"] and "avx512_bf16" in res["system"]["reduced_precision"]
    rows = {f"{row['name']}-{row['precision']}": row for row in res["rows"]}
    bf16 = rows["openvino-bf16"]
    assert bf16["status"] == "ok" and bf16["inference_precision"] == "bf16" and set(bf16["layer_precisions"]) == {"bf16"}
    assert all(k.endswith("bf16") for k in bf16["kernels"])
    assert rows["openvino-fp32"]["inference_precision"] == "f32" and set(rows["openvino-fp32"]["layer_precisions"]) == {"f32"}
    assert rows["torchvision-bf16"]["inference_precision"] == "bf16" and rows["torchvision-bf16"]["status"] == "ok"
    # bf16 parity is reported with no thresholds; "vs torchvision" is against fp32 eager
    assert bf16["parity"]["thresholds"]["min_matched"] == 0 and bf16["parity"]["passed"]
    base = rows["torchvision-fp32"]["latency_e2e"]["p50_ms"]
    assert bf16["speedup"] == pytest.approx(base / bf16["latency_e2e"]["p50_ms"])


def test_bf16_speed_prepares_an_ir_per_precision(tiny_run, tmp_path, capsys):
    from benchmarks import bf16_speed

    checkpoint, irs = bf16_speed.prepare(tmp_path, str(tiny_run))
    for recorded, xml in irs.items():
        assert runtimes.load(xml, precision=None, cache_dir=None).meta.export["inference_precision"] == recorded
    stamp = {p: xml.stat().st_mtime for p, xml in irs.items()}
    assert bf16_speed.prepare(tmp_path, str(tiny_run))[1] == irs  # reused, not converted again
    assert {p: xml.stat().st_mtime for p, xml in irs.items()} == stamp
    with pytest.raises(SystemExit) as e:
        bf16_speed.main(["--help"])
    assert e.value.code == 0 and "--threads" in capsys.readouterr().out
