"""The edge-app example runs exported models (ONNX, OpenVINO IR) on a video with torch unimportable,
and in the documented edge install itself: a fresh venv holding only numpy, OpenCV and one runtime."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

import runtimes
from runtimes.draw import class_colour
from trainer.data.shapes import render

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "runtimes" / "examples" / "edge_app.py"
SIZE, FPS, FRAMES = (240, 240), 6.0, 8

# Runs the app as `python edge_app.py ...` would, after making every import of torch, torchvision
# or the ONNX toolchain fail, the way it fails on an edge device without them.
NO_TORCH = textwrap.dedent("""
    import runpy, sys

    BLOCKED = ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime_extensions")

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked: the edge app must not need it)")

    sys.meta_path.insert(0, NoTorch())
    for name in [m for m in sys.modules if m.partition(".")[0] in BLOCKED]:
        del sys.modules[name]
    app, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(app, run_name="__main__")
""")


def run_app(*args, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-c", NO_TORCH, str(APP), *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("edge") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    for i in range(FRAMES):
        writer.write(cv2.resize(cv2.cvtColor(render(21, i)[0], cv2.COLOR_RGB2BGR), SIZE))
    writer.release()
    return path


def first_frame_threshold(detector, video: Path) -> tuple[float, np.ndarray]:
    """A threshold that keeps only the best box of the first frame (and that frame)."""
    ok, frame = cv2.VideoCapture(str(video)).read()
    scores = np.sort(detector(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).scores)[::-1]
    assert ok and len(scores) >= 2 and scores[0] - scores[1] > 1e-3
    return float(scores[0] + scores[1]) / 2, frame


def check_output(result, out: Path, detector, frame: np.ndarray, threshold: float) -> None:
    assert result.returncode == 0, result.stderr
    assert f"done: {FRAMES} frames" in result.stdout and " fps" in result.stdout
    assert "cannot open a window" in result.stdout  # --show on headless OpenCV: said once, then on
    drawn = cv2.VideoCapture(str(out))
    assert drawn.get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES and drawn.get(cv2.CAP_PROP_FPS) == FPS
    assert (drawn.get(cv2.CAP_PROP_FRAME_WIDTH), drawn.get(cv2.CAP_PROP_FRAME_HEIGHT)) == SIZE
    # the first frame's one box is drawn where the model finds it (mp4v is lossy: compare colours)
    dets = detector(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), threshold=threshold)
    assert len(dets) == 1
    x1, y1, x2, y2 = np.clip(np.round(dets.boxes[0]).astype(int), 0, SIZE[0] - 1)
    assert x2 - x1 >= 8 and y2 - y1 >= 8
    rows = np.r_[np.full(x2 - x1, y1), np.full(x2 - x1, y2), np.arange(y1, y2), np.arange(y1, y2)]
    cols = np.r_[np.arange(x1, x2), np.arange(x1, x2), np.full(y2 - y1, x1), np.full(y2 - y1, x2)]
    colour = np.float32(class_colour(dets.labels[0]))
    ok, out_frame = drawn.read()
    err_out = np.abs(out_frame[rows, cols].astype(np.float32) - colour).mean()
    err_in = np.abs(frame[rows, cols].astype(np.float32) - colour).mean()
    assert ok and err_out < 40 and err_in > 2 * err_out, (err_out, err_in)


@pytest.mark.parametrize("artifact", ["onnx", "openvino"])
def test_edge_app_runs_without_torch(artifact, request, video, tmp_path):
    model = request.getfixturevalue("tiny_onnx_dynamic" if artifact == "onnx" else "openvino_ir")
    # in this process too, keep OpenVINO's compiled-model cache out of the home folder
    detector = runtimes.load(model, **({"cache_dir": tmp_path / "cache"} if artifact == "openvino" else {}))
    threshold, frame = first_frame_threshold(detector, video)
    out = tmp_path / "drawn.mp4"
    r = run_app("--model", model, "--source", video, "--out", out, "--threshold", threshold, "--show",
                tmp_path=tmp_path)
    assert f"{'onnxruntime' if artifact == 'onnx' else 'openvino'} model" in r.stdout
    check_output(r, out, detector, frame, threshold)


def test_blocked_torch_really_fails_to_import(tmp_path):
    """The wrapper must make torch unimportable, or the two tests above prove nothing."""
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\n")
    r = subprocess.run([sys.executable, "-c", NO_TORCH, str(probe)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "blocked: the edge app must not need it" in r.stderr


def test_edge_app_bad_model_is_one_line(video, tmp_path):
    r = run_app("--model", tmp_path / "missing.onnx", "--source", video, tmp_path=tmp_path)
    assert r.returncode != 0 and r.stderr.strip() == f"error: {tmp_path / 'missing.onnx'}: no such file or directory"


# ------------------------------------------------------------------ the documented edge install, for real
EDGE_INSTALLS = {  # what README says is enough on the device, and how the project gets there
    "onnx": (["numpy", "opencv-python-headless", "onnxruntime"], ["--no-deps", str(REPO)]),
    "openvino": ([], [f"{REPO}[openvino]"]),  # the extra: numpy, OpenCV, tqdm and OpenVINO, no torch
}


def pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=900, env=clean_env())


def clean_env() -> dict:
    """This environment minus what would let the venv see this checkout or these packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(scope="module", params=sorted(EDGE_INSTALLS))
def edge_venv(request, tmp_path_factory):
    """(artifact kind, the python of a fresh venv holding exactly the documented edge install)."""
    import venv

    kind = request.param
    packages, project = EDGE_INSTALLS[kind]
    root = tmp_path_factory.mktemp(f"edge_venv_{kind}")
    venv.create(root / "venv", with_pip=True, clear=True)
    python = root / "venv" / "bin" / "python"
    if packages:
        r = pip(python, *packages)
        if r.returncode != 0:  # no package index reachable: nothing of ours has been tried yet
            pytest.skip(f"cannot install {' '.join(packages)} from the package index here: "
                        f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
    r = pip(python, *project)
    if r.returncode != 0 and "Could not find a version" in r.stderr + r.stdout and not packages:
        pytest.skip(f"cannot reach the package index for {kind}'s dependencies: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    return kind, python


def test_documented_edge_install_runs_the_edge_app(edge_venv, request, video, tmp_path):
    kind, python = edge_venv
    probe = subprocess.run([str(python), "-c", textwrap.dedent("""
        import importlib.util, pathlib, runtimes
        print(pathlib.Path(runtimes.__file__).parent)
        print(*sorted(m for m in ("torch", "torchvision", "onnx", "onnxruntime", "openvino")
                      if importlib.util.find_spec(m)))
    """)], capture_output=True, text=True, cwd=tmp_path, env=clean_env())
    assert probe.returncode == 0, probe.stderr
    installed, modules = probe.stdout.splitlines()
    assert "site-packages" in installed  # the installed copy, not this checkout
    assert modules == ("onnxruntime" if kind == "onnx" else "openvino")  # no torch, no onnx: only the runtime

    model = request.getfixturevalue("tiny_onnx_dynamic" if kind == "onnx" else "openvino_ir")
    app = Path(installed) / "examples" / "edge_app.py"  # as installed with the package
    out = tmp_path / "drawn.mp4"
    env = dict(clean_env(), XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run([str(python), str(app), "--model", str(model), "--source", str(video), "--out", str(out)],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"done: {FRAMES} frames" in r.stdout
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT) == FRAMES
    if kind == "onnx":  # the Winograd rewrite needs onnx: said once, on stderr
        assert r.stderr.count("the onnx package is not installed") == 1, r.stderr
