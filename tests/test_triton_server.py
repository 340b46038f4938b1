"""End to end against a real Triton server: the tritonserver 2.51 that nvidia-pytriton bundles, on
127.0.0.1, serving repositories written by exporters.triton --backend python (our ONNX Runtime
and OpenVINO adapters inside Triton's Python backend). Detections over HTTP and gRPC equal the
direct adapter's, concurrent requests are batched by the dynamic batcher, and errors are one line.

The server runs in its own environment (runtimes.triton_server: numpy < 2 for the stub); .ci/run
makes it, and this module makes it when it is missing. It skips only when that install fails
outside CI; in CI (CI=true) a missing server is a failure."""

import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (pip install -e .[dev])")

import runtimes  # noqa: E402
from exporters.triton import export_repository  # noqa: E402
from runtimes.base import ModelLoadError  # noqa: E402
from runtimes.triton import TritonDetector, TritonError  # noqa: E402
from runtimes.triton_server import (ENV_VARIABLE, SOURCE, TritonServer, TritonServerError, env_problem,  # noqa: E402
                                    setup_env)

THREADS, REQUESTS_PER_THREAD = 8, 2  # bounded load: 16 one-image requests per protocol
MAX_BATCH = 4


@pytest.fixture(scope="module", autouse=True)
def private_openvino_cache(tmp_path_factory):
    """The direct OpenVINO adapter and the one inside the server compile into a temporary cache, not ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRCNN_OPENVINO_CACHE", str(tmp_path_factory.mktemp("openvino_cache")))
        yield


@pytest.fixture(scope="module")
def server_env():
    env = Path(os.environ.get(ENV_VARIABLE) or SOURCE / ".triton-env")
    if env_problem(env):
        try:
            setup_env(env, log=lambda *_: None)
        except (subprocess.CalledProcessError, OSError, TritonServerError) as e:
            reason = f"the Triton server environment cannot be installed here ({e})"
            if os.environ.get("CI"):
                pytest.fail(reason + "; .ci/run must install it (python -m runtimes.triton_server --setup)")
            pytest.skip(reason)
    return env


@pytest.fixture(scope="module")
def server(server_env, tiny_onnx_dynamic, tiny_onnx, openvino_ir, tmp_path_factory):
    """One server for the module: a dynamic-batch ONNX model, a fixed-batch one, an OpenVINO one."""
    repo = tmp_path_factory.mktemp("triton_repo")
    # a queue delay long enough that concurrent one-image requests meet in one batch
    export_repository(tiny_onnx_dynamic, repo, "onnx_dynamic", max_batch=MAX_BATCH, backend="python",
                      max_queue_delay_us=20000)
    export_repository(tiny_onnx, repo, "onnx_batch1", backend="python")
    export_repository(openvino_ir, repo, "openvino_dynamic", max_batch=MAX_BATCH, backend="python")
    log = repo.parent / "tritonserver.log"
    with TritonServer(repo, server_env, log_file=log, start_timeout=300) as s:
        pid = s.process.pid
        yield s
    # stopped by its PID: the process is gone, and so are the Python-backend stubs it started
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    stubs = subprocess.run(["pgrep", "-s", str(pid)], capture_output=True, text=True).stdout.split()
    assert not stubs, f"processes left in the server's session: {stubs}"


@pytest.fixture(scope="module")
def direct(tiny_onnx_dynamic, tiny_onnx, openvino_ir):
    return {"onnx_dynamic": runtimes.load(tiny_onnx_dynamic), "onnx_batch1": runtimes.load(tiny_onnx),
            "openvino_dynamic": runtimes.load(openvino_ir)}


@pytest.fixture(scope="module")
def images():
    """Synthetic photos of several sizes (letterboxing differs per image)."""
    import cv2

    from trainer.data.shapes import render

    sizes = [(240, 320), (256, 256), (300, 180), (128, 200), (256, 256), (90, 400)]
    return [cv2.resize(render(3, i)[0], (w, h)) for i, (h, w) in enumerate(sizes)]


def assert_same_detections(served, expected):
    assert len(served) == len(expected) and sum(map(len, expected)) > 0
    for a, b in zip(served, expected):
        assert len(a) == len(b)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.boxes, b.boxes, rtol=0, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-5)
        assert a.names == b.names


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["onnx_dynamic", "onnx_batch1", "openvino_dynamic"])
def test_served_detections_equal_the_direct_adapter(server, direct, images, model, protocol):
    with runtimes.load(server.url(model, protocol)) as detector:
        assert isinstance(detector, TritonDetector)
        assert detector.meta == direct[model].meta  # read back from the config's parameters
        assert detector.batch == (1 if model == "onnx_batch1" else None)
        # six images: more than max_batch_size, so the adapter splits them over two requests
        assert_same_detections(detector(images), direct[model](images))
        raw = detector.infer_batched(detector.prepare(images[:2])[0])
    assert raw["num_detections"].shape == (2,) and raw["boxes"].shape == (2, 100, 4)


def batch_sizes(server, model) -> dict[int, int]:
    """Executions per batch size, from the server's statistics."""
    import tritonclient.http as http

    client = http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    stats = client.get_inference_statistics(model)["model_stats"][0]
    client.close()
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_concurrent_requests_are_batched_and_answered_right(server, direct, images, protocol):
    detector = runtimes.load(server.url("onnx_dynamic", protocol))
    before = batch_sizes(server, "onnx_dynamic")
    results, errors = {}, []

    def client(thread: int):
        try:
            for r in range(REQUESTS_PER_THREAD):
                index = (thread * REQUESTS_PER_THREAD + r) % len(images)
                results[(thread, r)] = (index, detector(images[index]))  # one image per request
        except Exception as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(THREADS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        detector.close()
    assert not errors and len(results) == THREADS * REQUESTS_PER_THREAD, errors
    expected = direct["onnx_dynamic"](images)
    indices = [index for index, _ in results.values()]
    assert_same_detections([served for _, served in results.values()], [expected[i] for i in indices])
    after = batch_sizes(server, "onnx_dynamic")
    new = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(size * count for size, count in new.items()) == THREADS * REQUESTS_PER_THREAD
    assert any(size > 1 and count > 0 for size, count in new.items()), f"no batch larger than 1: {new}"
    assert max(new) <= MAX_BATCH


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_model_that_is_not_ready_is_one_line(server, protocol):
    with pytest.raises(ModelLoadError, match="model 'missing' is not ready") as e:
        runtimes.load(server.url("missing", protocol))
    message = str(e.value)
    assert "\n" not in message and "onnx_dynamic" in message  # it names the models that are ready


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_request_that_takes_too_long_is_one_line(server, images, protocol):
    """A batch of four canvases cannot cross the server's Python backend and ONNX Runtime in 1 ms on any
    CPU (each image alone is several milliseconds of model); 50 ms was once answered in time."""
    with TritonDetector(server.url("onnx_dynamic", protocol)) as detector:
        detector.timeout = 0.001  # after loading, which must not time out
        with pytest.raises(TritonError, match=r"no answer within 0\.001s") as e:
            detector(images[:MAX_BATCH])
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ benchmarks/run.py on a served model
def run_benchmark(args: list, tmp_path, block_torch: bool = False) -> dict:
    """benchmarks/run.py on the server's model; its results.json. Nothing here asserts a timing."""
    import json
    import sys

    from tests.test_edge_app import NO_TORCH

    out = tmp_path / "bench"
    wrapper = ["-c", NO_TORCH] if block_torch else []
    r = subprocess.run([sys.executable, *wrapper, "benchmarks/run.py", *map(str, args), "--iters", "2", "--rounds",
                        "2", "--warmup", "1", "--concurrent-calls", "1", "--out", str(out)],
                       capture_output=True, text=True, cwd=SOURCE, timeout=600,
                       env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "concurrent one-image clients" in r.stdout
    return json.loads((out / "results.json").read_text())


def assert_concurrent_clients_measured(row: dict) -> None:
    assert set(row["concurrent"]) == {"1", "4", "16"}
    for clients, block in row["concurrent"].items():
        assert block["images_per_s"] > 0 and block["n"] == int(clients) * block["calls"]


def test_benchmark_measures_the_served_model_beside_the_direct_adapter(server, tiny_run, tmp_path):
    """--runtime onnxruntime,triton --triton-url: the served model (the same checkpoint's dynamic-batch
    ONNX) gets mAP, parity against the deploy graph and latency like the direct adapter, then both
    get the 1/4/16 concurrent-clients throughput."""
    url = server.url("onnx_dynamic")
    res = run_benchmark(["--model", tiny_run, "--runtime", "onnxruntime,triton", "--triton-url", url,
                         "--eval-images", "6", "--precision", "fp32"], tmp_path)  # the served model is fp32
    rows = {r["name"]: r for r in res["rows"]}
    assert set(rows) == {"torchvision", "torch", "onnxruntime", "triton"}
    served, direct = rows["triton"], rows["onnxruntime"]
    assert served["status"] == "ok" and served["artifact"] == url and res["settings"]["triton_url"] == url
    assert served["parity"]["matched_fraction"] >= 0.99 and abs(served["map"] - direct["map"]) < 1e-3
    assert served["latency_model"]["n"] == 2 and served["startup_s"] > 0 and "size_mb" not in served
    for row in (served, direct):
        assert_concurrent_clients_measured(row)
    assert "concurrent" not in rows["torch"]  # not a detector that serves many threads


def test_benchmark_of_a_served_model_alone_imports_no_torch(server, tmp_path):
    """--model triton+grpc://...: the served model alone, mAP on the dataset its metadata names."""
    res = run_benchmark(["--model", server.url("onnx_dynamic", "grpc"), "--eval-images", "4"], tmp_path,
                        block_torch=True)
    [row] = res["rows"]
    assert row["runtime"] == "triton" and row["status"] == "ok" and row["map"] is not None
    assert res["settings"]["dataset"] == "shapes:train=8,val=12" and "parity" not in row
    assert_concurrent_clients_measured(row)


def test_server_log_and_ports_are_loopback_only(server):
    text = server.log_file.read_text(errors="replace")
    assert f"Started GRPCInferenceService at 127.0.0.1:{server.grpc_port}" in text
    assert f"Started HTTPService at 127.0.0.1:{server.http_port}" in text
    assert "Started Metrics Service" not in text
