"""The TensorRT adapter shared by threads, against the stand-in tensorrt and pycuda modules of
test_tensorrt.py (no TensorRT or GPU needed; their "engine" runs the ONNX in ONNX Runtime).

The adapter has one execution context and one set of buffers; its lock lets one inference at a
time use them, so every thread gets the sequential results. Without the lock the threads
overwrite each other's input and output buffers. Real engines on a GPU: the GPU tests there."""
from __future__ import annotations

import runtimes
from exporters.trt import write_sidecar
from runtimes.meta import read_onnx_meta
from tests.test_tensorrt import _install_doubles
from tests.test_threads import check_shared_detector


def test_tensorrt_detector_shared_by_threads(tiny_onnx_dynamic, tmp_path, monkeypatch):
    engine = tmp_path / "model.engine"
    engine.write_bytes(tiny_onnx_dynamic.read_bytes())  # the doubles' serialized engine is the ONNX itself
    meta = read_onnx_meta(tiny_onnx_dynamic)
    meta.export = dict(format="tensorrt", precision="fp32", plugins="builtin", batch=None, batch_range=[1, 2, 4])
    write_sidecar(engine, meta)
    _install_doubles(tiny_onnx_dynamic, monkeypatch)
    detector = runtimes.load(engine)
    assert detector.runtime == "tensorrt" and detector.max_batch == 4
    check_shared_detector(detector)
