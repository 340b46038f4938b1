"""Triton adapter: a model served by Triton Inference Server, behind the same Detector interface. Imports no torch.

    det = runtimes.load("triton://127.0.0.1:8000/frcnn_tiny")        # HTTP
    det = runtimes.load("triton+grpc://127.0.0.1:8001/frcnn_tiny")   # gRPC
    dets = det(rgb_image)                                            # as with any other runtime

The server runs the deployed graph; this side letterboxes, sends the uint8 canvas batch, takes
the four padded outputs back (`num_detections` arrives as [B, 1] because of the config's
reshape, and is flattened) and maps boxes to the original image with the shared code. The
model's metadata comes from its config's parameters, written by exporters.triton.

Batches larger than the model's max_batch_size go in several requests; a model with
max_batch_size 0 (a fixed-batch artifact) gets exactly its batch, padded as for any fixed-batch
artifact. Each thread gets its own client, so one detector serves many threads at once and the
server's dynamic batcher sees concurrent requests.

A server that cannot be reached, a model that is not ready and a request that times out are
one-line errors: ModelLoadError while loading, TritonError once loaded.
"""
from __future__ import annotations

import threading
from urllib.parse import urlsplit

import numpy as np

from .base import OUTPUT_NAMES, Detector, ModelLoadError, first_line
from .meta import META_KEY, ModelMeta

SCHEMES = {"triton": ("http", 8000), "triton+http": ("http", 8000), "triton+grpc": ("grpc", 8001)}
INPUT_NAME = "images"


class TritonError(RuntimeError):
    """A request the server did not answer in time or answered with an error; the message is one line."""


def is_triton_url(path) -> bool:
    return str(path).split("://", 1)[0].lower() in SCHEMES and "://" in str(path)


def parse_url(url: str) -> tuple[str, str, int, str]:
    """'triton+grpc://host:8001/name' -> ('grpc', host, 8001, name); ModelLoadError when malformed."""
    parts = urlsplit(str(url))
    if parts.scheme.lower() not in SCHEMES:
        raise ModelLoadError(f"{url}: not a Triton URL (use triton://host:8000/model or triton+grpc://host:8001/model)")
    protocol, default_port = SCHEMES[parts.scheme.lower()]
    name = parts.path.strip("/")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ModelLoadError(f"{url}: the port is not a number") from None
    if not parts.hostname or not name or "/" in name:
        raise ModelLoadError(f"{url}: expected {parts.scheme}://host:port/model_name")
    return protocol, parts.hostname, port, name


def _timed_out(error: BaseException) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return "timeout" in text or "timed out" in text or "deadline" in text


class TritonDetector(Detector):
    runtime = "triton"

    def __init__(self, url: str, device: str = "cpu", timeout: float = 60.0):
        """
        url:     triton://host:port/model (HTTP, port 8000 by default) or triton+grpc://host:port/model (8001).
        device:  ignored: the server's model config decides where the model runs.
        timeout: seconds to wait for the server to connect and for each request to be answered.
        """
        self.url = str(url)
        self.protocol, self.host, self.port, self.name = parse_url(self.url)
        self._timeout = float(timeout)
        self.device = f"triton-{self.protocol}"
        self._local = threading.local()
        self._clients = []  # every thread's client, closed together
        self._lock = threading.Lock()
        config = self._load_config()
        self.meta = self._read_meta(config)
        self.max_batch_size = int(config.get("max_batch_size", 0))
        dims = [int(d) for d in next((i["dims"] for i in config.get("input", []) if i["name"] == INPUT_NAME), [])]
        h, w = self.meta.canvas
        expected = [h, w, 3] if self.max_batch_size else [None, h, w, 3]
        if len(dims) != len(expected) or any(e is not None and d != e for d, e in zip(dims, expected)):
            raise ModelLoadError(f"{self.url}: input {INPUT_NAME} has dims {dims}, the metadata's canvas needs "
                                 f"{['B' if e is None else e for e in expected]}")
        self.batch = None if self.max_batch_size else dims[0]

    @property
    def timeout(self) -> float:
        """Seconds to wait for a connection and for each answer; setting it reconnects."""
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._timeout = float(seconds)
        self.close()  # HTTP clients take their timeouts when made

    # -------------------------------------------------------------- connecting
    def _module(self):
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as module
            else:
                import tritonclient.http as module
        except Exception as e:  # a missing extra raises ImportError, a broken gevent more
            raise ModelLoadError(f"tritonclient is not installed ({first_line(e)}): "
                                 "pip install 'tritonclient[http,grpc]'") from None
        return module

    def client(self):
        """This thread's client (made on first use)."""
        client = getattr(self._local, "client", None)
        if client is None:
            module = self._module()
            address = f"{self.host}:{self.port}"
            if self.protocol == "grpc":
                client = module.InferenceServerClient(address)
            else:
                client = module.InferenceServerClient(address, connection_timeout=self.timeout,
                                                      network_timeout=self.timeout)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _call(self, method: str, *args, **kwargs):
        """A client call with the timeout, in the form each protocol takes it."""
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout
        return getattr(self.client(), method)(*args, **kwargs)

    def _load_config(self) -> dict:
        where = f"{self.url}: Triton server at {self.host}:{self.port}"
        try:
            self._call("is_server_live")
        except Exception as e:
            if _timed_out(e):
                raise ModelLoadError(f"{where} did not answer within {self.timeout:g}s") from None
            raise ModelLoadError(f"{where} cannot be reached ({first_line(e)})") from None
        try:
            ready = self._call("is_model_ready", self.name)
            if not ready:
                raise ModelLoadError(f"{self.url}: model {self.name!r} is not ready on the server "
                                     f"({self._ready_models()})")
            if self.protocol == "grpc":
                return self._call("get_model_config", self.name, as_json=True)["config"]
            return self._call("get_model_config", self.name)
        except ModelLoadError:
            raise
        except Exception as e:
            if _timed_out(e):
                raise ModelLoadError(f"{where} did not answer within {self.timeout:g}s") from None
            raise ModelLoadError(f"{self.url}: cannot read the model's config ({first_line(e)})") from None

    def _ready_models(self) -> str:
        """'ready here: a, b' for the error message (best effort)."""
        try:
            index = self._call("get_model_repository_index", **({"as_json": True} if self.protocol == "grpc" else {}))
            models = index.get("models", []) if isinstance(index, dict) else index
            ready = sorted(m["name"] for m in models if m.get("state") == "READY")
        except Exception:
            return "its model list is not available"
        return f"ready here: {', '.join(ready)}" if ready else "no model is ready"

    def _read_meta(self, config: dict) -> ModelMeta:
        value = config.get("parameters", {}).get(META_KEY, {}).get("string_value")
        if not value:
            raise ModelLoadError(f"{self.url}: the model's config has no {META_KEY} parameter (write the "
                                 "repository with python -m exporters.triton)")
        try:
            return ModelMeta.from_json(value)
        except ValueError as e:
            raise ModelLoadError(f"{self.url}: unreadable frcnn-deploy metadata ({first_line(e)})") from None

    # -------------------------------------------------------------- inference
    def infer(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        canvas = np.ascontiguousarray(canvas, np.uint8)
        if canvas.shape[1:] != (*self.canvas, 3):
            raise ValueError(f"expected a uint8 canvas batch [B, {self.canvas[0]}, {self.canvas[1]}, 3], "
                             f"got {list(canvas.shape)}")
        if self.batch is not None and len(canvas) != self.batch:
            raise ValueError(f"{self.url} has a fixed batch of {self.batch}, got {len(canvas)} images "
                             "(call the detector, which pads)")
        step = self.max_batch_size or len(canvas)
        parts = [self._request(canvas[i: i + step]) for i in range(0, len(canvas), step)]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in OUTPUT_NAMES}

    def _request(self, canvas: np.ndarray) -> dict[str, np.ndarray]:
        module = self._module()
        images = module.InferInput(INPUT_NAME, list(canvas.shape), "UINT8")
        images.set_data_from_numpy(canvas)
        outputs = [module.InferRequestedOutput(name) for name in OUTPUT_NAMES]
        try:
            result = self._call("infer", self.name, [images], outputs=outputs)
        except Exception as e:
            if _timed_out(e):
                raise TritonError(f"{self.url}: no answer within {self.timeout:g}s") from None
            raise TritonError(f"{self.url}: inference failed ({first_line(e)})") from None
        out = {name: result.as_numpy(name) for name in OUTPUT_NAMES}
        out["num_detections"] = out["num_detections"].reshape(-1)  # [B, 1] through the config's reshape
        return out

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # a connection the server dropped already
                pass
        self._local = threading.local()

    def __enter__(self) -> "TritonDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        batch = self.batch if self.batch is not None else f"1..{self.max_batch_size}"
        return f"TritonDetector({self.url}, canvas={self.canvas}, batch={batch})"
