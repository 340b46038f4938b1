"""benchmarks/gpu.py, the one-run GPU check. Without a GPU only its refusal and its torch step (on the
CPU, tiny model, --allow-cpu) can run: that keeps the script working for the day a GPU is lent. The
figures are not looked at (no unit test times anything)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the refusal does not apply")
def test_without_a_gpu_it_refuses_in_one_line(tmp_path):
    r = _run("--out", str(tmp_path / "gpu.json"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no CUDA GPU" in r.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_the_torch_step_runs_and_records_its_figures(tmp_path):
    out = tmp_path / "gpu.json"
    r = _run("--allow-cpu", "--iters", "1", "--train-steps", "1", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(out.read_text())
    step = result["steps"]["torch baselines"]
    assert step["status"] == "ok" and result["machine"]["versions"]["torch"]
    for name in ("torchvision eager fp32 (batch 1)", "deploy graph fp32 (batch 1)", "deploy graph fp16 (batch 1)",
                 "training step (batch 2)"):
        assert step[name]["iters"] >= 1 and step[name]["p50_ms"] > 0
