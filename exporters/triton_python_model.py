"""Triton Python-backend model: frcnn-deploy's ONNX Runtime or OpenVINO adapter on the artifact beside it.

python -m exporters.triton --backend python copies this file into <repo>/<name>/1/model.py. It
runs inside Triton's Python-backend stub, whose Python environment needs frcnn-deploy's runtimes
package, numpy < 2 (the stub of Triton 2.51 returns empty outputs with numpy 2) and onnxruntime
or openvino; `python -m runtimes.triton_server --setup` makes such an environment.

The dynamic batcher hands execute() several requests at once: their canvases are run as one
batch (in the artifact's fixed batch when it has one) and the outputs are split back per request.
"""
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

import runtimes
from runtimes.base import OUTPUT_NAMES

ARTIFACTS = ("model.onnx", "model.xml")  # what exporters.triton copies into the version folder


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(__file__).resolve().parent
        artifact = next((folder / name for name in ARTIFACTS if (folder / name).is_file()), None)
        if artifact is None:
            raise pb_utils.TritonModelException(f"{folder}: no {' or '.join(ARTIFACTS)} beside model.py")
        self.detector = runtimes.load(artifact)

    def execute(self, requests):
        canvases = [pb_utils.get_input_tensor_by_name(r, "images").as_numpy() for r in requests]
        try:
            out = self.detector.infer_batched(np.concatenate(canvases))
        except Exception as e:  # one failed batch fails its requests, not the server
            error = pb_utils.TritonError(f"{type(e).__name__}: {e}".splitlines()[0])
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for canvas in canvases:
            rows = slice(start, start + len(canvas))
            start += len(canvas)
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[name][rows])) for name in OUTPUT_NAMES]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
