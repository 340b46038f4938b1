"""TensorRT adapter: a serialized engine (model.engine) on an NVIDIA GPU. Imports no torch.

    det = TensorRTDetector("model.engine")                 # cuda:0; metadata from model.engine.json
    det = TensorRTDetector("model.engine", device="cuda:1", plugins="libfrcnn_trt_plugins.so")

Metadata travels in a JSON sidecar beside the engine (`model.engine.json`: the ModelMeta of the
checkpoint, its `export` entry saying precision, plugins, TensorRT version and batch range),
written by exporters.trt. A plain file keeps the engine exactly what TensorRT serialized, so
trtexec and other tools read it as it is.

Engines with our plugins (`export.plugins == "custom"`) need libfrcnn_trt_plugins.so loaded
before deserializing. It is looked up in this order: the `plugins` argument, $FRCNN_TRT_PLUGINS,
the path recorded at build time, plugins/build/ of this checkout. (TensorRT can also embed
plugin libraries in "version-compatible" engines, but those are restricted to the lean runtime;
loading the library by path keeps the engine a normal one.)

Device memory and a CUDA stream come from pycuda on the device's primary context (the one the
CUDA runtime, hence TensorRT, uses). I/O buffers are allocated once and reused; they grow only
when a bigger batch comes. Outputs land in pinned host memory.

Threads: the detector has one execution context and one set of buffers, so a lock lets one
inference at a time use them; calls from several threads wait their turn and get the results
a sequential run gives (for concurrent inference on one GPU, load one detector per thread).

Where TensorRT, pycuda or a GPU is missing, loading raises ModelLoadError with one line saying
what is missing and how to install it.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np

from plugins import NMS_PLUGIN, PLUGIN_VERSION

from .base import OUTPUT_NAMES, Detector, ModelLoadError, first_line, is_file
from .meta import ModelMeta

INPUT_NAME = "images"
PLUGIN_LIBRARY_ENV = "FRCNN_TRT_PLUGINS"
INSTALL_TENSORRT = "pip install tensorrt (TensorRT 10 or 11; needs an NVIDIA GPU with a CUDA driver)"
INSTALL_PYCUDA = "pip install pycuda (needs the CUDA toolkit and an NVIDIA GPU)"
PLUGIN_LIBRARY_MISSING = ("the frcnn TensorRT plugin library is not built: run python -m plugins.build "
                          f"(or point ${PLUGIN_LIBRARY_ENV} at libfrcnn_trt_plugins.so)")


# ------------------------------------------------------------------ what must be installed
def import_tensorrt():
    """The tensorrt module, or ModelLoadError with one line saying how to get it."""
    try:
        import tensorrt
    except Exception as e:  # bindings without libnvinfer raise ImportError/OSError with the missing .so
        raise ModelLoadError(f"TensorRT is not installed or incomplete ({first_line(e)}): "
                             f"{INSTALL_TENSORRT}") from None
    return tensorrt


def import_cuda():
    """pycuda.driver, or ModelLoadError with one line saying how to get it."""
    try:
        import pycuda.driver as cuda
    except Exception as e:
        raise ModelLoadError(f"pycuda is not installed ({first_line(e)}): {INSTALL_PYCUDA}") from None
    return cuda


def version_tuple(version: str) -> tuple[int, int]:
    """'10.8.0.43' -> (10, 8)."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(version))
    if not m:
        raise ValueError(f"unreadable TensorRT version {version!r}")
    return int(m.group(1)), int(m.group(2))


def device_index(device: str | None) -> int:
    """GPU index of 'cuda', 'cuda:N' or 'gpu'. 'cpu' (runtimes.load's default) means cuda:0:
    an engine only ever runs on a GPU."""
    name = (device or "cuda").strip().lower()
    if name in ("cpu", "cuda", "gpu"):
        return 0
    m = re.fullmatch(r"(?:cuda|gpu):(\d+)", name)
    if not m:
        raise ModelLoadError(f"unknown device {device!r} for TensorRT (use cuda or cuda:N)")
    return int(m.group(1))


def find_gpu(cuda, index: int) -> None:
    """ModelLoadError with one line when GPU `index` is not there or not usable."""
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as e:
        raise ModelLoadError(f"no usable CUDA GPU for TensorRT ({first_line(e)})") from None
    if count == 0:
        raise ModelLoadError("no CUDA GPU found: TensorRT engines run on an NVIDIA GPU")
    if index >= count:
        raise ModelLoadError(f"device cuda:{index} does not exist ({count} CUDA GPU(s) here)")


def open_gpu(cuda, index: int):
    """Retain the primary context of GPU `index`; ModelLoadError when there is no usable GPU."""
    find_gpu(cuda, index)
    device = cuda.Device(index)
    return device, device.retain_primary_context()


def make_logger(trt, echo: str | None = None):
    """A TensorRT logger that keeps the error messages (for one-line exceptions) and prints
    messages at or above `echo` ('error', 'warning', 'info'; None prints nothing)."""
    severity = trt.ILogger.Severity
    echo_level = {None: -1, "error": int(severity.ERROR), "warning": int(severity.WARNING),
                  "info": int(severity.INFO)}[echo]

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level, message):
            if int(level) <= int(severity.ERROR):
                self.errors.append(message)
            if int(level) <= echo_level:
                print(f"[TensorRT] {message}", flush=True)

        def last_error(self, default: str = "no message from TensorRT") -> str:
            return (self.errors[-1].strip().splitlines() or [default])[0] if self.errors else default

    return Logger()


# ------------------------------------------------------------------ plugins
def default_plugin_library() -> Path | None:
    """plugins/build/libfrcnn_trt_plugins.so of this checkout, when the plugins package is here."""
    try:
        from plugins.build import PLUGIN_LIBRARY
    except ImportError:  # an edge install ships runtimes/ without plugins/
        return None
    return PLUGIN_LIBRARY


def find_plugin_library(explicit=None, recorded=None) -> Path:
    """The plugin library to load: `explicit`, $FRCNN_TRT_PLUGINS, the path recorded at build
    time, then plugins/build/. An explicit or environment path must exist; ModelLoadError if none does."""
    for given, what in ((explicit, "plugin library"), (os.environ.get(PLUGIN_LIBRARY_ENV), f"${PLUGIN_LIBRARY_ENV}")):
        if given:
            if not Path(given).is_file():
                raise ModelLoadError(f"{what} {given}: no such file")
            return Path(given).resolve()
    for candidate in (recorded, default_plugin_library()):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    raise ModelLoadError(PLUGIN_LIBRARY_MISSING)


_loaded_libraries: dict[str, object] = {}  # resolved path -> handle; TensorRT refuses a second load


def load_plugins(trt, logger, plugins: str, library: Path | None = None) -> None:
    """Register the plugins an engine needs: TensorRT's own (ROIAlign_TRT of the builtin flavour)
    and, for plugins == 'custom', our library."""
    trt.init_libnvinfer_plugins(logger, "")
    if plugins != "custom":
        return
    key = str(Path(library).resolve())
    if key in _loaded_libraries:
        return
    handle = trt.get_plugin_registry().load_library(key)
    if handle is None:  # also None when its plugins were registered already, e.g. by another loader
        registry = trt.get_plugin_registry()
        get_creator = getattr(registry, "get_creator", None)
        if get_creator is None or get_creator(NMS_PLUGIN, PLUGIN_VERSION, "") is None:
            raise ModelLoadError(f"TensorRT could not load the plugin library {key} ({logger.last_error()}); "
                                 "rebuild it with python -m plugins.build")
    _loaded_libraries[key] = handle


# ------------------------------------------------------------------ sidecar metadata
def sidecar_path(engine) -> Path:
    """model.engine -> model.engine.json"""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine) -> ModelMeta:
    path = sidecar_path(engine)
    if not is_file(path):
        raise ModelLoadError(f"{engine}: its metadata file {path.name} is missing (build engines with "
                             "python -m exporters.trt, which writes both)")
    try:
        meta = ModelMeta.from_json(path.read_text())
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise ModelLoadError(f"{path}: unreadable frcnn-deploy metadata ({first_line(e)})") from None
    if meta.export.get("format") != "tensorrt":
        raise ModelLoadError(f"{path}: not the metadata of a TensorRT engine (format {meta.export.get('format')!r})")
    return meta


# ------------------------------------------------------------------ the adapter
class TensorRTDetector(Detector):
    runtime = "tensorrt"

    def __init__(self, path, device: str = "cuda:0", plugins=None):
        """
        path:    the serialized engine; its metadata sidecar (path + '.json') must lie beside it.
        device:  cuda or cuda:N (runtimes.load's default 'cpu' means cuda:0).
        plugins: path of libfrcnn_trt_plugins.so for engines built with our plugins
                 (default: $FRCNN_TRT_PLUGINS, the path recorded at build time, plugins/build/).
        """
        self.path = Path(path)
        self._lock = threading.Lock()  # one inference at a time on the context and buffers
        if not is_file(self.path):
            raise ModelLoadError(f"{self.path}: no such engine file")
        trt, cuda = import_tensorrt(), import_cuda()
        self.meta = read_sidecar(self.path)
        index = device_index(device)
        self.device = f"cuda:{index}"
        self._cuda = cuda
        self._gpu, self._cuda_context = open_gpu(cuda, index)
        self._cuda_context.push()
        try:
            self._load(trt, plugins)
        finally:
            self._cuda_context.pop()

    def _load(self, trt, plugins) -> None:
        export = self.meta.export
        self.logger = make_logger(trt)
        kind = export.get("plugins", "custom")
        library = find_plugin_library(plugins, export.get("plugin_library")) if kind == "custom" else None
        load_plugins(trt, self.logger, kind, library)
        self._runtime = trt.Runtime(self.logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            built, here = export.get("tensorrt"), trt.__version__
            hint = (f"built with TensorRT {built}, this is {here}: rebuild it here with python -m exporters.trt"
                    if built and built != here else "rebuild it on this GPU with python -m exporters.trt")
            raise ModelLoadError(f"{self.path}: TensorRT cannot deserialize the engine ({self.logger.last_error()}); "
                                 f"{hint}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [INPUT_NAME] or set(OUTPUT_NAMES) - set(names):
            raise ModelLoadError(f"{self.path}: inputs/outputs {names} are not the deployed-model contract "
                                 f"({INPUT_NAME} -> {', '.join(OUTPUT_NAMES)})")
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in (INPUT_NAME, *OUTPUT_NAMES)}
        shape = tuple(self.engine.get_tensor_shape(INPUT_NAME))
        if shape[0] >= 0:
            self.batch = self.min_batch = self.max_batch = shape[0]
        else:  # dynamic batch: the range of optimization profile 0; a one-value range is a fixed batch
            low, _, high = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
            self.min_batch, self.max_batch = low[0], high[0]
            self.batch = low[0] if low[0] == high[0] else None
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ModelLoadError(f"{self.path}: TensorRT cannot create an execution context "
                                 f"({self.logger.last_error()})")
        self.stream = self._cuda.Stream()
        self._capacity = 0  # images the buffers hold
        self._set_batch = 0  # batch the context's input shape is set to
        self._host, self._device = {}, {}

    # -------------------------------------------------------------- buffers
    def _set_input_batch(self, n: int) -> None:
        if n != self._set_batch:
            h, w = self.canvas
            if not self.context.set_input_shape(INPUT_NAME, (n, h, w, 3)):
                raise ValueError(f"{self.path}: batch {n} is outside the engine's range "
                                 f"({self.logger.last_error()})")
            self._set_batch = n

    def _shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(name))

    def _reserve(self, n: int) -> None:
        """Device buffers and pinned host buffers for `n` images; bound to the context once."""
        if n <= self._capacity:
            return
        self._set_input_batch(n)
        self._host, self._device = {}, {}  # old allocations are freed here, the stream is idle
        for name in (INPUT_NAME, *OUTPUT_NAMES):
            host = self._cuda.pagelocked_empty(self._shape(name), self.dtypes[name])
            self._host[name] = host
            self._device[name] = self._cuda.mem_alloc(max(host.nbytes, 1))
            self.context.set_tensor_address(name, int(self._device[name]))
        self._capacity = n

    # -------------------------------------------------------------- inference
    def infer(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        canvas = np.ascontiguousarray(canvas, np.uint8)
        n = len(canvas)
        if canvas.shape[1:] != (*self.canvas, 3):
            raise ValueError(f"expected a uint8 canvas batch [B, {self.canvas[0]}, {self.canvas[1]}, 3], "
                             f"got {list(canvas.shape)}")
        if self.batch is not None and n != self.batch:
            raise ValueError(f"{self.path} has a fixed batch of {self.batch}, got {n} images "
                             "(call the detector, which pads, or build with --max-batch)")
        if n > self.max_batch:  # a dynamic engine's profile ends at max_batch: run it in chunks
            parts = [self.infer(canvas[i: i + self.max_batch]) for i in range(0, n, self.max_batch)]
            return {k: np.concatenate([p[k] for p in parts]) for k in OUTPUT_NAMES}
        cuda, stream = self._cuda, self.stream
        with self._lock:
            return self._infer_locked(canvas, n, cuda, stream)

    def _infer_locked(self, canvas: np.ndarray, n: int, cuda, stream) -> dict[str, np.ndarray]:
        self._cuda_context.push()
        try:
            self._reserve(n)
            self._set_input_batch(n)
            host_in = self._host[INPUT_NAME][:n]
            host_in[...] = canvas
            cuda.memcpy_htod_async(self._device[INPUT_NAME], host_in, stream)
            if not self.context.execute_async_v3(stream.handle):
                raise ModelLoadError(f"{self.path}: TensorRT inference failed ({self.logger.last_error()})")
            out = {}
            for name in OUTPUT_NAMES:
                out[name] = self._host[name][:n]  # outputs are [B, ...]: the first n rows are contiguous
                cuda.memcpy_dtoh_async(out[name], self._device[name], stream)
            stream.synchronize()
        finally:
            self._cuda_context.pop()
        return {name: value.copy() for name, value in out.items()}  # the pinned buffers are reused

    def close(self) -> None:
        """Free the GPU buffers, the engine and the context now instead of at garbage collection."""
        context = getattr(self, "_cuda_context", None)
        if context is None:
            return
        context.push()
        try:
            self._host, self._device = {}, {}
            for name in ("context", "engine", "_runtime", "stream"):
                if hasattr(self, name):
                    delattr(self, name)
        finally:
            context.pop()
            context.detach()
            self._cuda_context = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: CUDA may be gone already
            pass

    def __repr__(self) -> str:
        batch = self.batch if self.batch is not None else f"{self.min_batch}..{self.max_batch}"
        return (f"TensorRTDetector({self.path}, device={self.device}, precision={self.meta.export.get('precision')}, "
                f"canvas={self.canvas}, batch={batch})")
