"""One detector shared by several threads returns what sequential calls return.

Edge apps and web servers call one detector from many threads. Each test starts 4-8 threads at
once (a barrier), each making several calls on its own images, and compares every result with
the same call made sequentially beforehand: real ONNX Runtime and OpenVINO sessions and the
torch adapter (TensorRT, with the doubles of test_tensorrt.py, is in test_tensorrt_threads.py).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import runtimes
from trainer.data.shapes import render

THREADS, CALLS = 8, 3  # calls per thread


def images(n: int, seed: int = 40) -> list[np.ndarray]:
    return [render(seed, i)[0] for i in range(n)]


def same(a, b) -> None:
    """Detections (or lists of them) equal; inference of the same input is deterministic here."""
    a, b = (a, b) if isinstance(a, list) else ([a], [b])
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.scores, y.scores)
        np.testing.assert_array_equal(x.labels, y.labels)
        assert x.names == y.names


def run_together(work, threads: int = THREADS) -> list:
    """work(thread_index) in `threads` threads released at the same moment; their results in order."""
    barrier = threading.Barrier(threads)

    def start(k):
        barrier.wait()
        return work(k)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(start, range(threads)))


def check_shared_detector(detector, threads: int = THREADS) -> None:
    inputs = images(threads * CALLS)
    # singles and batches of two, so fixed-batch artifacts chunk and pad under load too
    calls = [inputs[i] if i % 3 else inputs[i: i + 2] for i in range(len(inputs))]
    expected = [detector(c) for c in calls]
    assert any(len(d) for d in expected if not isinstance(d, list))  # something to compare

    got = run_together(lambda k: [detector(calls[k * CALLS + j]) for j in range(CALLS)], threads)
    for k, results in enumerate(got):
        for j, result in enumerate(results):
            same(result, expected[k * CALLS + j])


@pytest.mark.parametrize("artifact", ["tiny_onnx", "tiny_onnx_dynamic"])
def test_onnxruntime_detector_shared_by_threads(artifact, request):
    check_shared_detector(runtimes.load(request.getfixturevalue(artifact)))


@pytest.mark.parametrize("mode", ["latency", "throughput"])
def test_openvino_detector_shared_by_threads(openvino_ir, mode, tmp_path):
    detector = runtimes.load(openvino_ir, mode=mode, cache_dir=tmp_path / "cache")
    check_shared_detector(detector)
    # the pool grew to serve the threads at once, one request each; it never grows past them
    assert 1 <= detector._requests.free.qsize() <= THREADS


def test_openvino_streams_in_several_threads(openvino_ir, tmp_path):
    detector = runtimes.load(openvino_ir, mode="throughput", cache_dir=tmp_path / "cache")
    per_thread = [images(5, seed=60 + k) for k in range(4)]
    expected = [[detector(im) for im in ims] for ims in per_thread]
    got = run_together(lambda k: list(detector.detect_stream(per_thread[k])), threads=4)
    for want, have in zip(expected, got):
        same(have, want)


def test_torch_detector_shared_by_threads(tiny_run):
    check_shared_detector(runtimes.load(tiny_run), threads=4)
