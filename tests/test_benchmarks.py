"""benchmarks/run.py end to end on a small model; compare.py; the mAP gate. Nothing here is timed:
the latency figures are produced but never asserted on."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    r = subprocess.run([sys.executable, "benchmarks/run.py", "--model", str(tiny_run), "--runtime", "onnxruntime,tensorrt",
                        "--eval-images", "6", "--iters", "2", "--warmup", "1", "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout, json.loads((out / "results.json").read_text())


def test_outputs_and_rows(bench):
    out, stdout, res = bench
    assert (out / "report.md").exists() and (out / "latency_vs_map.png").stat().st_size > 1000
    rows = {r["name"]: r for r in res["rows"]}
    assert set(rows) == {"torchvision", "torch", "onnxruntime", "tensorrt"}
    assert rows["tensorrt"]["status"].startswith("not available:")
    for name in ("torchvision", "torch", "onnxruntime"):
        r = rows[name]
        assert r["status"] == "ok", r["status"]
        assert r["size_mb"] > 1 and r["startup_s"] > 0 and r["peak_mb"] > 50
        for kind in ("latency_model", "latency_e2e"):
            assert r[kind]["n"] == 2 and r[kind]["p50_ms"] <= r[kind]["p99_ms"]
    assert rows["onnxruntime"]["parity"]["matched_fraction"] >= 0.99
    assert res["system"]["cores"] >= 1 and res["system"]["versions"]["onnxruntime"]
    assert res["settings"]["eval_images"] == 6
    assert "onnxruntime" in stdout and "not available" in stdout


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
