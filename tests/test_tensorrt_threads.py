"""The TensorRT adapter shared by threads, against the TensorRT stand-ins of tests/trt_standins.py
(only the names the real 10.16 / 11.1 bindings have; pycuda free-written; their "engine" runs
the ONNX in ONNX Runtime). No TensorRT or GPU needed.

The adapter has one execution context and one set of buffers; its lock lets one inference at a
time use them, so every thread gets the sequential results. Without the lock the threads
overwrite each other's input and output buffers. Real engines on a GPU: not run here."""
from __future__ import annotations

import pytest

import runtimes
from exporters.trt import write_sidecar
from runtimes.meta import read_onnx_meta
from tests.test_threads import check_shared_detector
from tests.trt_standins import VERSIONS, install


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_tensorrt_detector_shared_by_threads(tiny_onnx_dynamic, tmp_path, monkeypatch, version):
    engine = tmp_path / "model.engine"
    engine.write_bytes(tiny_onnx_dynamic.read_bytes())  # the stand-ins' serialized engine is the ONNX itself
    meta = read_onnx_meta(tiny_onnx_dynamic)
    meta.export = dict(format="tensorrt", precision="fp32", plugins="builtin", batch=None, batch_range=[1, 2, 4])
    write_sidecar(engine, meta)
    install(monkeypatch, version, tiny_onnx_dynamic)
    detector = runtimes.load(engine)
    assert detector.runtime == "tensorrt" and detector.max_batch == 4
    check_shared_detector(detector)
