"""benchmarks/run.py end to end on a small model (checkpoint and artifact alone, torch blocked);
--cross-check with the runtimes' own tools; the report's flags and plots; compare.py; the mAP gate;
train_throughput's results file. Nothing here is timed: the latency figures are produced but only
what follows from the method is asserted on."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    r = subprocess.run([sys.executable, "benchmarks/run.py", "--model", str(tiny_run), "--runtime", "onnxruntime,tensorrt",
                        "--eval-images", "6", "--iters", "2", "--rounds", "2", "--warmup", "1", "--cross-check",
                        "--calib-images", "8", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout, json.loads((out / "results.json").read_text())


def test_outputs_and_rows(bench):
    out, stdout, res = bench
    assert (out / "latency_vs_map.png").stat().st_size > 1000 and (out / "speedup.png").stat().st_size > 1000
    assert "![latency vs map](latency_vs_map.png)" in (out / "report.md").read_text()
    assert "![speedup](speedup.png)" in (out / "report.md").read_text()
    rows = {r["name"]: r for r in res["rows"] if r["precision"] != "int8"}
    assert set(rows) == {"torchvision", "torch", "onnxruntime", "tensorrt"}
    int8 = [r for r in res["rows"] if r["precision"] == "int8"]
    assert [r["name"] for r in int8] == ["onnxruntime"]  # --runtime onnxruntime,tensorrt: ONNX Runtime's int8 row
    assert int8[0]["status"] == "ok" and int8[0]["artifact"].endswith(".int8-c8.onnx"), int8[0]["status"]
    assert int8[0]["map"] is not None and "matched_fraction" in int8[0]["parity"]  # parity reported, mAP gated
    assert rows["tensorrt"]["status"].startswith("not available:")
    for name in ("torchvision", "torch", "onnxruntime"):
        r = rows[name]
        assert r["status"] == "ok", r["status"]
        assert r["size_mb"] > 1 and r["startup_s"] > 0 and r["peak_mb"] > 50
        for kind in ("latency_model", "latency_e2e"):
            assert r[kind]["n"] == 2 and r[kind]["p50_ms"] <= r[kind]["p99_ms"] and r[kind]["cv"] >= 0
        # model only is timed inside the end-to-end calls: never longer, at any percentile
        assert all(r["latency_model"][p] <= r["latency_e2e"][p] for p in ("p50_ms", "p90_ms", "p99_ms"))
        assert "e2e < model" not in r["flags"]
    assert rows["onnxruntime"]["parity"]["matched_fraction"] >= 0.99
    assert res["system"]["cores"] >= 1 and res["system"]["versions"]["onnxruntime"]
    assert res["settings"]["eval_images"] == 6
    # scored against the evaluated images' ground truth only (the split has 12)
    gt = json.loads((out / "ground_truth.json").read_text())
    seen = {d["image_id"] for d in json.loads((out / rows["torch"]["detections_file"]).read_text())}
    assert len(gt["images"]) == 6 and seen <= {im["id"] for im in gt["images"]}
    assert "onnxruntime" in stdout and "not available" in stdout
    assert res["settings"]["rounds"] == 2 and res["settings"]["block_warmup"] == 1


def test_cross_check_runs_the_runtimes_tools(bench):
    out, stdout, res = bench
    checks = {c["runtime"]: c for c in res["cross_check"]}
    assert set(checks) == {"onnxruntime", "tensorrt"}
    ort = checks["onnxruntime"]
    assert ort["tool"] == "onnxruntime profiler" and ort["status"] == "ok", ort
    assert ort["tool_ms"] > 0 and ort["alone_ms"] > 0 and ort["ratio"] == pytest.approx(ort["ours_ms"] / ort["tool_ms"])
    assert checks["tensorrt"]["status"].startswith("not available:") and checks["tensorrt"]["tool"] == "trtexec"
    assert "cross-check" in stdout and "onnxruntime profiler" in stdout
    assert "onnxruntime profiler" in (out / "report.md").read_text()


def test_reported_map_equals_pycocotools(bench):
    """The mAP in results.json is what pycocotools gives on the saved detections."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out, _, res = bench
    for row in res["rows"]:
        if row["status"] != "ok":
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(out / "ground_truth.json"))
            dets = json.loads((out / row["detections_file"]).read_text())
            if not dets:
                assert row["map"] == 0
                continue
            ev = COCOeval(gt, gt.loadRes(str(out / row["detections_file"])), "bbox")
            ev.evaluate(), ev.accumulate(), ev.summarize()
        assert row["map"] == pytest.approx(ev.stats[0], abs=1e-9)
        assert row["ap50"] == pytest.approx(ev.stats[1], abs=1e-9)


def test_int8_rows_are_made_from_one_calibration_and_picked_by_precision(tiny_run, tmp_path):
    """The int8 rows' artifacts (their kinds' make), without timing: ONNX Runtime's Q/DQ and
    OpenVINO's NNCF IR, both INT8 by their metadata and calibrated on the same images."""
    pytest.importorskip("nncf", reason="nncf is not installed (pip install -e .[train])")
    sys.path.insert(0, str(ROOT))
    from benchmarks.run import ROWS, Artifacts, plan, tolerances
    from exporters.cli import load_source
    from exporters.gate import REPORT_ONLY

    import runtimes

    model, meta = load_source(str(tiny_run))
    art = Artifacts(tiny_run, model, meta, tmp_path, 1, calib_images=8)
    kinds = {k.runtime: k for k in ROWS if k.precision == "int8"}
    assert set(kinds) == {"onnxruntime", "openvino"} and tolerances("int8") is REPORT_ONLY
    for runtime, kind in kinds.items():
        det = runtimes.load(kind.make(art, kind), runtime=runtime)
        q = det.meta.export["quantization"]
        assert det.meta.export["precision"] == "int8" and q["calibration"]["images"] == 8, runtime
    assert art.calibration() is art.calibration()  # decoded once, shared by both rows
    picked = [(r.name, r.precision) for r in plan(["onnxruntime", "openvino"], "cpu", ["int8"])]
    assert picked == [("torchvision", "fp32"), ("torch", "fp32"), ("onnxruntime", "int8"), ("openvino", "int8")]
    r = subprocess.run([sys.executable, "benchmarks/run.py", "--precision", "int4"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "unknown precision(s) int4" in r.stderr.strip().splitlines()[-1]


def test_map_of_a_few_images_is_scored_on_their_ground_truth(tmp_path):
    """--eval-images N: perfect detections of N images score mAP 1, not N/len(split)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from benchmarks.run import Row, RowKind, accuracy
    from runtimes.base import Detections
    from trainer.data import validation_set

    val = validation_set("shapes:train=2,val=6")
    gt, n = val.coco_dict(), 2
    samples = [val.load(i) for i in range(n)]

    def perfect(images):  # each image's ground truth, as a runtime would return its detections
        found = [next(s for s in samples if s.image is im) for im in images]
        return [Detections(s.boxes.astype(np.float32), np.ones(len(s.boxes), np.float32), s.labels.astype(np.int64),
                           [""] * len(s.boxes)) for s in found]

    row = Row(RowKind("perfect", "onnxruntime"), detector=perfect)
    meta = type("Meta", (), {"category_ids": val.label_category_ids()})()
    accuracy([row], [s.image for s in samples], gt, [s.image_id for s in samples], meta, 1, tmp_path)
    assert row.result["map"] == pytest.approx(1.0) and row.result["ap50"] == pytest.approx(1.0)


def test_compare_merges_machines(bench, tmp_path):
    out, _, res = bench
    other = dict(res, system=dict(res["system"], hostname="edge-box"))
    (tmp_path / "b.json").write_text(json.dumps(other))
    r = subprocess.run([sys.executable, "benchmarks/compare.py", str(out / "results.json"), str(tmp_path / "b.json"),
                        "--out", str(tmp_path / "cmp")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "edge-box" in r.stdout and (tmp_path / "cmp" / "latency_vs_map.png").exists()
    assert "edge-box" in (tmp_path / "cmp" / "report.md").read_text()


def test_gate_exits_nonzero_on_map_drop():
    sys.path.insert(0, str(ROOT))
    from benchmarks.run import gate

    rows = [dict(name="torch", precision="fp32", runtime="torch", map=0.80),
            dict(name="onnxruntime", precision="fp32", runtime="onnxruntime", map=0.795),
            dict(name="openvino", precision="fp16-weights", runtime="openvino", map=0.70)]
    assert gate(rows, 0.01) == 1
    assert gate(rows[:2], 0.01) == 0
    assert gate(rows, 0.2) == 0


def test_bad_arguments_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/run.py", "--runtime", "caffe"], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2 and "unknown runtime" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "benchmarks/run.py", "--model", "/nonexistent", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "no such model" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()  # a refused run leaves nothing behind


# ------------------------------------------------------------------ an artifact alone, torch blocked
def run_blocked(args: list, tmp_path) -> subprocess.CompletedProcess:
    """benchmarks/run.py with every import of torch failing (tests/test_edge_app.py's wrapper)."""
    from tests.test_edge_app import NO_TORCH

    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-c", NO_TORCH, "benchmarks/run.py", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("artifact", ["onnx", "openvino"])
def test_artifact_alone_without_torch(artifact, request, tmp_path):
    """--model ARTIFACT benchmarks that artifact alone, mAP on the dataset its metadata names, no torch."""
    model = request.getfixturevalue("tiny_onnx" if artifact == "onnx" else "tiny_ir")
    out = tmp_path / "out"
    r = run_blocked(["--model", model, "--eval-images", "4", "--iters", "3", "--rounds", "3", "--warmup", "1",
                     "--cross-check", "--out", out], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    runtime = "onnxruntime" if artifact == "onnx" else "openvino"
    [row] = res["rows"]
    assert row["runtime"] == runtime and row["status"] == "ok" and row["precision"] == "fp32"
    assert row["map"] is not None and res["settings"]["eval_images"] == 4
    assert res["settings"]["dataset"] == "shapes:train=8,val=12"  # from the artifact's own metadata
    assert row["latency_model"]["n"] == 3 and "speedup" not in row and "parity" not in row
    [check] = res["cross_check"]
    assert check["status"] == "ok" and check["tool"] == ("benchmark_app" if artifact == "openvino"
                                                         else "onnxruntime profiler"), check
    assert check["tool_ms"] > 0
    assert (out / "speedup.png").exists()  # says there is no baseline


def test_artifact_data_option_overrides_the_metadata(tiny_onnx, tmp_path):
    r = run_blocked(["--model", tiny_onnx, "--data", "shapes:train=4,val=5", "--iters", "1", "--rounds", "1",
                     "--warmup", "0", "--out", tmp_path / "o"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["settings"]["dataset"] == "shapes:train=4,val=5" and res["settings"]["eval_images"] == 5


def test_bad_artifact_is_one_line(tmp_path):
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not a model")
    r = run_blocked(["--model", garbage, "--out", tmp_path / "o"], tmp_path)
    # without the onnx package, as on an edge box, onnxruntime's own parser says so (after a note that it is missing)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"error: {garbage}: not a valid ONNX file (protobuf parsing failed)"
    assert "Traceback" not in r.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    r = run_blocked(["--model", notes], tmp_path)
    assert r.returncode == 2 and "unknown model type" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ the runtimes' own tools
def test_benchmark_app_output_is_parsed(tiny_ir, tmp_path):
    """A real benchmark_app run on the tiny IR: the JSON report and the printed lines give the same figures."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import crosscheck

    cmd = crosscheck.benchmark_app_command()
    assert cmd, "benchmark_app not found although openvino is installed"
    r = subprocess.run(cmd + ["-m", str(tiny_ir), "-d", "CPU", "-hint", "none", "-nstreams", "1", "-nthreads", "1",
                              "-api", "sync", "-niter", "3", "-json_stats", "-report_type", "no_counters",
                              "-report_folder", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    from_json = crosscheck.parse_benchmark_app(r.stdout, tmp_path / "benchmark_report.json")
    printed = crosscheck.parse_benchmark_app(r.stdout)
    assert from_json["n"] == printed["n"] == 3
    assert from_json["min_ms"] <= from_json["median_ms"] <= from_json["max_ms"]
    assert printed["median_ms"] == pytest.approx(from_json["median_ms"], abs=0.006)  # printed to 2 decimals
    with pytest.raises(ValueError):
        crosscheck.parse_benchmark_app("[ INFO ] Count: 3 iterations\n")


def test_trtexec_summary_is_parsed():
    """The performance-summary lines trtexec prints (their format, made-up numbers)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks import crosscheck

    text = """[12/01/2026-10:00:00] [I] === Performance summary ===
[12/01/2026-10:00:00] [I] Throughput: 410.2 qps
[12/01/2026-10:00:00] [I] Latency: min = 2.31 ms, max = 3.9 ms, mean = 2.44 ms, median = 2.42 ms, percentile(90%) = 2.5 ms, percentile(95%) = 2.6 ms, percentile(99%) = 3.1 ms
[12/01/2026-10:00:00] [I] Enqueue Time: min = 0.1 ms, max = 0.3 ms, mean = 0.12 ms, median = 0.11 ms, percentile(90%) = 0.13 ms, percentile(95%) = 0.14 ms, percentile(99%) = 0.2 ms
[12/01/2026-10:00:00] [I] GPU Compute Time: min = 2.01 ms, max = 3.5 ms, mean = 2.12 ms, median = 2.1 ms, percentile(90%) = 2.2 ms, percentile(95%) = 2.3 ms, percentile(99%) = 2.8 ms
[12/01/2026-10:00:00] [W] * GPU compute time is unstable, with coefficient of variance = 3.2%.
"""
    assert crosscheck.parse_trtexec(text) == dict(latency_median_ms=2.42, latency_mean_ms=2.44,
                                                  gpu_compute_median_ms=2.1, gpu_compute_mean_ms=2.12)
    with pytest.raises(ValueError):
        crosscheck.parse_trtexec("&&&& FAILED TensorRT.trtexec")


# ------------------------------------------------------------------ the report
def fake_rows(n: int, same_map: bool = True) -> list[dict]:
    """Rows as run.py writes them, for the report's layout (no figure here is a measurement)."""
    rows = []
    for i in range(n):
        lat = dict(p50_ms=10.0 + i * 0.4, p90_ms=11.0 + i, p99_ms=12.0 + i, mean_ms=10.5 + i, cv=0.01, n=10)
        rows.append(dict(name=f"runtime{i}", precision="fp32", runtime="onnxruntime", status="ok",
                         map=0.82 if same_map else 0.80 + i * 0.001, latency_model=lat, latency_e2e=dict(lat),
                         flags=[], speedup_e2e=1 + i, speedup_model=1 + i))
    return rows


@pytest.mark.parametrize("same_map", [True, False])
def test_plot_labels_never_overlap(same_map):
    sys.path.insert(0, str(ROOT))
    from benchmarks import report

    results = [dict(system=dict(hostname=h), settings={}, rows=fake_rows(9, same_map)) for h in ("a", "b")]
    fig = report.latency_map_figure(results, "t")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if " ms, mAP " in t.get_text()]
    assert len(labels) == 18
    boxes = [t.get_window_extent(renderer) for t in labels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), "two labels overlap"
    low, high = ax.get_ylim()
    assert high - low >= report.MIN_MAP_SPAN - 1e-12 and 0 <= low


def test_spread_keeps_order_and_gap():
    sys.path.insert(0, str(ROOT))
    from benchmarks.report import spread

    ys = spread([0.5, 0.5, 0.5, 0.9, 0.1], 0.1)
    assert min(b - a for a, b in zip(sorted(ys), sorted(ys)[1:])) >= 0.1 - 1e-9
    assert ys[4] < ys[0] < ys[1] < ys[2] < ys[3]  # ties keep their input order
    top = spread([1.0, 1.0, 1.0], 0.2)
    assert max(top) <= 1.0 and top == sorted(top)


def test_labels_of_points_at_one_height_go_top_down_left_to_right():
    """So that their leader lines, all running right to the label column, never cross."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.report import label_order

    # (log latency, height): three nearly tied points, one well above them
    heights = label_order([(3.0, 0.50), (1.0, 0.501), (2.0, 0.499), (1.5, 0.9)], gap=0.05)
    assert heights[1] > heights[2] > heights[0]  # left to right, top down
    assert heights[3] == pytest.approx(0.9) and abs(heights[0] - 0.5) < 1e-6


def test_table_flags_unstable_rows_and_e2e_below_model():
    sys.path.insert(0, str(ROOT))
    from benchmarks import report
    from benchmarks.run import timing_flags

    rows = fake_rows(2)
    shaky = dict(rows[0]["latency_model"], cv=0.2)
    rows[0]["flags"] = timing_flags(shaky, rows[0]["latency_e2e"], 0.05)
    rows[1]["flags"] = timing_flags(rows[1]["latency_model"], dict(rows[1]["latency_e2e"], p90_ms=1.0), 0.05)
    assert rows[0]["flags"] == ["unstable: coefficient of variation 20.0% model only, 1.0% end to end"]
    assert rows[1]["flags"] == ["e2e < model"]
    text = report.table(rows)
    assert "runtime0 fp32: unstable: coefficient of variation 20.0%" in text and "runtime1 fp32: e2e < model" in text
    first, second = text.splitlines()[2:4]
    assert first.rstrip().endswith("unstable") and second.rstrip().endswith("e2e < model")
    assert timing_flags(rows[1]["latency_model"], rows[1]["latency_model"], 0.05) == []


# ------------------------------------------------------------------ training speed
def test_train_throughput_writes_a_results_file_compare_merges(tmp_path):
    out = tmp_path / "train" / "results.json"
    r = subprocess.run([sys.executable, "benchmarks/train_throughput.py", "--arch", "tiny", "--batch", "2",
                        "--canvas", "128x128", "--rounds", "2", "--steps", "1", "--warmup", "0", "--device", "cpu",
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ms/step median" in r.stdout and "ratio ours/plain" in r.stdout
    res = json.loads(out.read_text())
    assert [t["name"] for t in res["training"]] == ["ours", "plain"]
    for t in res["training"]:
        assert t["batch"] == 2 and t["canvas"] == [128, 128] and t["steps"] == 2 and t["ms_per_step"] > 0
    assert res["system"]["cpu"] and res["rows"] == []
    r = subprocess.run([sys.executable, "benchmarks/compare.py", str(out), "--out", str(tmp_path / "cmp")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "training speed" in r.stdout and "ours" in r.stdout
    assert "ms/step p50" in (tmp_path / "cmp" / "report.md").read_text()
