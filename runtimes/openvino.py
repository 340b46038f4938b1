"""OpenVINO adapter: an IR (model.xml + model.bin) on CPU, GPU, NPU or AUTO/HETERO/MULTI. Imports no torch.

    det = OpenVINODetector("runs/shapes-tiny/openvino")          # LATENCY hint, batch 1
    det = OpenVINODetector("model.xml", mode="throughput")       # streams + AsyncInferQueue
    for dets in det.detect_stream(images): ...                   # results in input order

Inference precision is pinned (INFERENCE_PRECISION_HINT=f32 by default): CPUs with bf16
units otherwise run an fp32 IR in bf16, and parity against PyTorch would measure that
instead of the export. Compiled models are cached (CACHE_DIR), so a second start imports
the compiled blob instead of compiling again (on CPU compiling is short; GPUs compile kernels).

Threads: one detector may be called from several threads at once. An OpenVINO infer request
runs one inference at a time ("Infer Request is busy" otherwise), so the detector keeps a pool
of them: a call takes a free request, or makes one when every request is in use, and puts it
back after copying its outputs; a stream (infer_stream, detect_stream) takes an AsyncInferQueue
from a pool the same way. The pools grow to the number of threads that ever call at once.
"""
from __future__ import annotations

import contextlib
import functools
import os
import queue
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .base import OUTPUT_NAMES, Detections, Detector, ModelLoadError, check_threshold, is_dir, is_file, pad_batch
from .meta import META_KEY, ModelMeta

MODES = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
PRECISIONS = ("f32", "bf16", "f16")
# device names OpenVINO may know; the ones usable here are those whose plugin loads
VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")


@functools.lru_cache(maxsize=None)
def core():
    """One ov.Core per process, as OpenVINO recommends: device plugins load once and are shared."""
    import openvino as ov

    return ov.Core()


CACHE_ENV = "FRCNN_OPENVINO_CACHE"  # overrides the default cache folder; empty or "none" disables it


def default_cache_dir() -> Path | None:
    """$FRCNN_OPENVINO_CACHE, else ~/.cache/frcnn-deploy/openvino (XDG_CACHE_HOME respected)."""
    if CACHE_ENV in os.environ:
        value = os.environ[CACHE_ENV].strip()
        return None if value.lower() in ("", "none") else Path(value)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "frcnn-deploy" / "openvino"


def find_xml(path) -> Path:
    """The IR's .xml: `path` itself or the one .xml in a folder; its .bin must lie beside it."""
    p = Path(path)
    if is_dir(p):
        found = sorted(p.glob("*.xml"))
        if len(found) != 1:
            what = "no .xml" if not found else f"{len(found)} .xml files ({', '.join(f.name for f in found)})"
            raise ModelLoadError(f"{p}: expected one OpenVINO IR .xml in the folder, found {what}")
        p = found[0]
    if not is_file(p):
        raise ModelLoadError(f"{p}: no such model file")
    if not is_file(p.with_suffix(".bin")):
        raise ModelLoadError(f"{p}: its weights file {p.with_suffix('.bin').name} is missing")
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise ModelLoadError(f"{p}: cannot read ({e.strerror or e})") from None
    if b"<net" not in head:  # spares OpenVINO's other frontends (and their log lines) files that are no IR
        raise ModelLoadError(f"{p}: not an OpenVINO IR (no <net> element at the start)")
    return p


def ov_message(error: Exception) -> str:
    """The useful line of an OpenVINO exception (the rest is 'Exception from src/...' frames)."""
    lines = [l.strip() for l in str(error).splitlines() if l.strip()]
    useful = [l for l in lines if not l.startswith(("Exception from ", "Check '"))]
    return (useful or lines or [type(error).__name__])[-1]


def read_meta(model, where) -> ModelMeta:
    """The frcnn-deploy metadata stored in an ov.Model's rt_info by exporters.openvino."""
    if not model.has_rt_info(META_KEY):
        raise ModelLoadError(f"{where}: no frcnn-deploy metadata in rt_info (convert it with python -m exporters.openvino)")
    try:
        return ModelMeta.from_json(model.get_rt_info(META_KEY).astype(str))
    except ValueError as e:
        raise ModelLoadError(f"{where}: unreadable frcnn-deploy metadata ({e})") from None


def device_list(core) -> str:
    """The devices OpenVINO finds here, for error messages only: listing them loads every plugin."""
    return ", ".join(core.available_devices + list(VIRTUAL_DEVICES))


def normalize_device(core, device: str) -> str:
    """Upper-case `device` (runtimes.load passes "cpu") and check every named device is one OpenVINO knows."""
    name = device.strip().upper()
    if name.startswith("CUDA"):
        raise ModelLoadError(f"OpenVINO does not run on CUDA devices ({device!r}); use CPU, GPU (Intel), NPU or AUTO")
    head, _, rest = name.partition(":")
    names = [head] if head not in VIRTUAL_DEVICES else [head] + [d for d in rest.split(",") if d]
    if head in ("HETERO", "MULTI") and len(names) == 1:
        raise ModelLoadError(f"OpenVINO device {head} needs a device list, e.g. {head}:GPU,CPU")
    for d in names:
        base = d.split(".")[0]
        try:
            known = bool(base) and bool(core.get_versions(base))
        except RuntimeError as e:  # a known plugin that cannot load here, e.g. GPU without OpenCL
            raise ModelLoadError(f"OpenVINO device {d} is not usable here ({ov_message(e)}); "
                                 f"available: {device_list(core)}") from None
        if not known:
            raise ModelLoadError(f"unknown OpenVINO device {device!r} (available here: {device_list(core)}; "
                                 "virtual devices take a list, e.g. AUTO:GPU,CPU)")
    return name


class Pool:
    """Objects that serve one caller at a time, shared by threads: `with pool.take() as item`
    hands out a free one, made by `make()` when none is free, and takes it back afterwards."""

    def __init__(self, make):
        self.make, self.free = make, queue.SimpleQueue()

    @contextlib.contextmanager
    def take(self):
        try:
            item = self.free.get_nowait()
        except queue.Empty:
            item = self.make()
        try:
            yield item
        finally:
            self.free.put(item)


class OpenVINODetector(Detector):
    runtime = "openvino"

    def __init__(self, path, device: str = "CPU", mode: str = "latency", precision: str | None = "f32",
                 threads: int | None = None, cache_dir="auto", requests: int | None = None):
        """
        path:      the IR's .xml, or a folder holding one (its .bin beside it).
        device:    CPU (default, "cpu" accepted), GPU, GPU.1, NPU, AUTO, AUTO:GPU,CPU, HETERO:..., MULTI:...
        mode:      "latency" (one request at a time) or "throughput" (several streams; use
                   detect_stream / infer_stream to keep them busy).
        precision: INFERENCE_PRECISION_HINT, "f32" by default so results match PyTorch;
                   "bf16"/"f16" trade accuracy for speed where the device has them; None = device default.
        threads:   INFERENCE_NUM_THREADS (CPU); None = OpenVINO's choice.
        cache_dir: compiled-model cache: "auto" = $FRCNN_OPENVINO_CACHE or ~/.cache/frcnn-deploy/openvino,
                   a folder, or None to disable. Blobs are never pruned (OpenVINO keeps no index).
        requests:  infer requests in the stream queue (default: the device's optimal number).
        """
        if mode not in MODES:
            raise ModelLoadError(f"unknown mode {mode!r}; use {' or '.join(MODES)}")
        if precision is not None and precision not in PRECISIONS:
            raise ModelLoadError(f"unknown inference precision {precision!r}; use {', '.join(PRECISIONS)} or None")
        self.path = find_xml(path)
        self.mode, self.precision, self.threads = mode, precision, threads
        self.cache_dir = default_cache_dir() if cache_dir == "auto" else (Path(cache_dir) if cache_dir else None)
        ov_core = core()
        self.device = normalize_device(ov_core, device)
        try:
            model = ov_core.read_model(str(self.path))
        except Exception as e:  # OpenVINO raises RuntimeError; keep any other parser error one line too
            raise ModelLoadError(f"{self.path}: not a readable OpenVINO IR ({ov_message(e)})") from None
        self.meta = read_meta(model, self.path)
        names = {o.get_any_name() for o in model.outputs}
        if set(OUTPUT_NAMES) - names or [i.get_any_name() for i in model.inputs] != ["images"]:
            raise ModelLoadError(f"{self.path}: inputs/outputs are not the deployed-model contract "
                                 f"(images -> {', '.join(OUTPUT_NAMES)})")
        self.batch = self._check_input(model)

        config = {"PERFORMANCE_HINT": MODES[mode]}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if self.cache_dir:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(self.cache_dir)
        try:
            # compiled from the ov.Model, not the path: the cache key then hashes the weights too, so
            # an IR re-exported in place never picks up a stale blob (a path key is the path alone)
            self.compiled = ov_core.compile_model(model, self.device, config)
        except RuntimeError as e:
            raise ModelLoadError(f"{self.path}: OpenVINO cannot compile it for {self.device} ({ov_message(e)}; "
                                 f"devices available here: {device_list(ov_core)})") from None
        self.outputs = {name: self.compiled.output(name) for name in OUTPUT_NAMES}
        self.requests = requests or self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        self._requests = Pool(self.compiled.create_infer_request)
        with self._requests.take():  # the first request now: a failure to make one shows at load
            pass
        self._queues = Pool(self._make_queue)  # AsyncInferQueues, made by the first infer_stream

    def _check_input(self, model) -> int | None:
        """The IR's fixed batch (None when dynamic), once its input is found to be uint8 [B, H, W, 3]
        at the metadata's canvas."""
        port = model.input(0)
        shape = port.get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else []
        if port.get_element_type().get_type_name() != "u8" or len(dims) != 4 or dims[1:] != [*self.meta.canvas, 3]:
            raise ModelLoadError(f"{self.path}: its input is {port.get_element_type().get_type_name()} {shape}, not "
                                 f"the deployed-model contract at its metadata's canvas (u8 [B, {self.meta.canvas[0]}, "
                                 f"{self.meta.canvas[1]}, 3])")
        return dims[0] if dims[0] and dims[0] > 0 else None

    def _make_queue(self):
        import openvino as ov

        return ov.AsyncInferQueue(self.compiled, self.requests)

    def infer(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        with self._requests.take() as request:
            # infer() copies the outputs out of the request (share_outputs=False), so the
            # request can serve another thread as soon as it is back in the pool
            try:
                result = request.infer({0: np.ascontiguousarray(canvas, np.uint8)})
            except RuntimeError as e:  # a damaged IR can compile and still fail here
                raise ModelLoadError(f"{self.path}: OpenVINO cannot run the model ({ov_message(e)})") from None
            return {name: result[port] for name, port in self.outputs.items()}

    def infer_stream(self, canvases: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Raw outputs of a stream of canvas batches, in input order, keeping `self.requests`
        requests in flight (OpenVINO's AsyncInferQueue): the throughput mode's way in. Queues
        are made once and reused; streams in several threads at once each get their own."""
        with self._queues.take() as queue:
            try:
                yield from self._stream(queue, canvases)
            finally:
                queue.wait_all()  # a stream left early: no callback may land in the next one

    def _stream(self, queue, canvases: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        done: dict[int, dict[str, np.ndarray]] = {}

        def collect(request, index):  # runs on an OpenVINO thread; copies before the request is reused
            done[index] = {name: request.get_tensor(port).data.copy() for name, port in self.outputs.items()}

        queue.set_callback(collect)
        next_out = 0
        for index, canvas in enumerate(canvases):
            queue.start_async({0: np.ascontiguousarray(canvas, np.uint8)}, index)  # waits for a free request
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
        queue.wait_all()
        while next_out in done:
            yield done.pop(next_out)
            next_out += 1

    def detect_stream(self, images: Iterable[np.ndarray], threshold: float | None = None) -> Iterator[Detections]:
        """Detections of each image of a stream, in input order (see infer_stream)."""
        threshold = check_threshold(threshold)
        per_request = self.batch or 1
        pending: deque = deque()  # letterboxes of the batches in flight, oldest first

        def canvases():
            chunk = []
            for image in images:
                chunk.append(image)
                if len(chunk) == per_request:
                    yield self._stage(chunk, pending)
                    chunk = []
            if chunk:
                yield self._stage(chunk, pending)

        for out in self.infer_stream(canvases()):
            boxes = pending.popleft()
            yield from self.postprocess({k: v[: len(boxes)] for k, v in out.items()}, boxes, threshold)

    def _stage(self, images: list[np.ndarray], pending: deque) -> np.ndarray:
        canvas, boxes = self.prepare(images)
        pending.append(boxes)
        return pad_batch(canvas, self.batch) if self.batch else canvas  # a fixed-batch IR: pad the last batch

    def __repr__(self) -> str:
        return (f"OpenVINODetector({self.path}, device={self.device}, mode={self.mode}, precision={self.precision}, "
                f"canvas={self.canvas}, batch={self.batch})")
