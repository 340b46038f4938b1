"""Triton model repository: any exported artifact -> <repo>/<name>/{config.pbtxt, 1/model.*}.

    python -m exporters.triton --model runs/shapes-tiny/model.dynamic.onnx --repo model_repository/
    python -m exporters.triton --model runs/shapes-tiny/openvino --repo model_repository/ --name shapes_ov
    python -m exporters.triton --model model.engine --repo model_repository/ --kind gpu --instances 2
    python -m exporters.triton --model model.dynamic.onnx --repo model_repository/ --backend python

The artifact is copied into the version folder 1/ as Triton's backends expect it (model.onnx,
model.xml + model.bin, model.plan) and config.pbtxt is written from the artifact's own I/O and
metadata: input `images` uint8 [H, W, 3]; the four fixed-size outputs, `num_detections` as
dims [1] with `reshape: { shape: [] }` (the graph gives [B], Triton needs a non-empty dims);
max_batch_size from the artifact (--max-batch for a dynamic batch, capped by an engine's
profile; 0 with full dims for a fixed-batch artifact); dynamic batching, instance groups and a
zero-image warm-up; the frcnn-deploy metadata in `parameters`, where runtimes.triton reads it.

--backend python writes a model.py instead that runs this toolkit's ONNX Runtime or OpenVINO
adapter on the artifact inside Triton's Python backend (the server's Python environment needs
frcnn-deploy's runtimes, numpy < 2 and the runtime; runtimes.triton_server sets one up).

Engines with our plugins need the plugin library in the server: the model folder gets a
README.md with the command line (see tensorrt_readme).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runtimes.base import OUTPUT_NAMES, ModelLoadError, first_line
from runtimes.meta import META_KEY, ModelMeta

from .cli import fail

INPUT_NAME = "images"
VERSION = "1"  # the one version folder written
NATIVE_BACKEND = {"onnx": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
MODEL_FILES = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin"), "tensorrt": ("model.plan",)}
# the deployed-model contract's types (DESIGN.md), as Triton names them
TRITON_TYPES = {"uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "float32": "TYPE_FP32",
                "float16": "TYPE_FP16"}
CONTRACT_TYPES = {INPUT_NAME: "uint8", "num_detections": "int32", "boxes": "float32", "scores": "float32",
                  "labels": "int32"}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class TritonExportError(ValueError):
    """An artifact or option this exporter cannot turn into a model repository; one line."""


# ------------------------------------------------------------------ the artifact's I/O
@dataclass
class Artifact:
    """What config.pbtxt is written from: the files, the metadata and the declared I/O."""

    kind: str  # onnx | openvino | tensorrt
    files: dict[str, Path]  # name in the version folder -> source file
    meta: ModelMeta
    shapes: dict[str, list[int | None]]  # tensor -> shape with the batch first (None = dynamic)
    dtypes: dict[str, str]  # tensor -> numpy dtype name
    max_batch: int | None = None  # the largest batch a dynamic artifact takes (None: no limit)
    min_batch: int = 1

    @property
    def batch(self) -> int | None:
        """The fixed batch, or None for a dynamic one."""
        return self.shapes[INPUT_NAME][0]


def _onnx_artifact(path: Path) -> Artifact:
    import onnx

    from runtimes.meta import read_onnx_meta

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several types on garbage
        raise TritonExportError(f"{path}: not a valid ONNX file ({type(e).__name__})") from None
    meta = read_onnx_meta(proto)
    flavor = meta.export.get("flavor", "onnx")
    if flavor != "onnx":
        raise TritonExportError(f"{path}: a {flavor!r}-flavoured ONNX (plugin nodes) runs in no Triton backend; "
                                "export --flavor onnx, or build an engine with exporters.trt")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise TritonExportError(f"{path}: weights in external data files are not copied; save it as one file")
    shapes, dtypes = {}, {}
    for value in list(proto.graph.input) + list(proto.graph.output):
        tensor = value.type.tensor_type
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
        dtypes[value.name] = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    return Artifact("onnx", {"model.onnx": path}, meta, shapes, dtypes)


def _openvino_artifact(path: Path) -> Artifact:
    from runtimes.openvino import core, find_xml, ov_message, read_meta

    xml = find_xml(path)
    try:
        model = core().read_model(str(xml))
    except Exception as e:
        raise TritonExportError(f"{xml}: not a readable OpenVINO IR ({ov_message(e)})") from None
    shapes, dtypes = {}, {}
    for port in list(model.inputs) + list(model.outputs):
        name = port.get_any_name()
        shapes[name] = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        dtypes[name] = port.get_element_type().to_dtype().name
    return Artifact("openvino", {"model.xml": xml, "model.bin": xml.with_suffix(".bin")}, read_meta(model, xml),
                    shapes, dtypes)


def _engine_artifact(path: Path) -> Artifact:
    """An engine's I/O cannot be read without TensorRT: it is the contract, at the sidecar's batch range."""
    from runtimes.tensorrt import read_sidecar, sidecar_path

    meta = read_sidecar(path)
    low, _, high = meta.export.get("batch_range") or [meta.export.get("batch") or 1] * 3
    batch = low if low == high else None
    h, w = meta.canvas
    k = meta.detections_per_img
    shapes = {INPUT_NAME: [batch, h, w, 3], "num_detections": [batch], "boxes": [batch, k, 4],
              "scores": [batch, k], "labels": [batch, k]}
    return Artifact("tensorrt", {"model.plan": path, "model.plan.json": sidecar_path(path)}, meta, shapes,
                    dict(CONTRACT_TYPES), max_batch=high, min_batch=low)


def read_artifact(path) -> Artifact:
    """The artifact at `path` (.onnx, an OpenVINO .xml or its folder, an engine); TritonExportError
    or ModelLoadError, one line, for anything else."""
    import runtimes

    p = Path(path)
    if not p.exists():
        raise TritonExportError(f"{p}: no such file or directory")
    try:
        runtime = runtimes.runtime_for(p)
    except ModelLoadError:
        runtime = None
    readers = {"onnxruntime": _onnx_artifact, "openvino": _openvino_artifact, "tensorrt": _engine_artifact}
    if runtime not in readers:
        raise TritonExportError(f"{p}: unknown artifact (expected an exported .onnx, an OpenVINO .xml or its folder, "
                                "or a TensorRT engine; export a checkpoint first)")
    try:
        artifact = readers[runtime](p)
    except ValueError as e:  # read_onnx_meta and ModelMeta say what is wrong in one line
        raise TritonExportError(first_line(e)) from None
    check_contract(artifact, p)
    return artifact


def check_contract(artifact: Artifact, where) -> None:
    """The artifact's I/O is the deployed-model contract at its metadata's canvas and K."""
    h, w = artifact.meta.canvas
    k = artifact.meta.detections_per_img
    want = {INPUT_NAME: [h, w, 3], "num_detections": [], "boxes": [k, 4], "scores": [k], "labels": [k]}
    if set(artifact.shapes) != set(want):
        raise TritonExportError(f"{where}: I/O {sorted(artifact.shapes)} is not the deployed-model contract "
                                f"({INPUT_NAME} -> {', '.join(OUTPUT_NAMES)})")
    batch = artifact.batch
    for name, dims in want.items():
        shape, dtype = artifact.shapes[name], artifact.dtypes[name]
        if shape != [batch, *dims] or dtype != CONTRACT_TYPES[name]:
            raise TritonExportError(f"{where}: {name} is {dtype} {shape}, the contract says "
                                    f"{CONTRACT_TYPES[name]} {[batch, *dims]}")


# ------------------------------------------------------------------ config.pbtxt
class Word(str):
    """An enum value or other bare word in protobuf text format (TYPE_UINT8, KIND_CPU)."""


def quote(text: str) -> str:
    """A protobuf text-format string literal (UTF-8 kept as it is)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_pbtxt(message: dict, indent: int = 0) -> str:
    """Protobuf text format of a message given as a dict: dict = message, list of dicts =
    repeated message, list of scalars = repeated scalar, Word = enum."""
    pad = "  " * indent
    lines = []
    for key, value in message.items():
        if isinstance(value, dict):
            lines += [f"{pad}{key} {{", to_pbtxt(value, indent + 1), f"{pad}}}"]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines += [f"{pad}{key} {{", to_pbtxt(item, indent + 1), f"{pad}}}"]
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _scalar(value) -> str:
    if isinstance(value, Word):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    return str(value)


def metadata_parameters(meta: ModelMeta) -> dict[str, str]:
    """The metadata as config parameters: the whole of it under META_KEY (what runtimes.triton
    reads) and the few fields a person looks for, readable."""
    h, w = meta.canvas
    return {META_KEY: json.dumps(meta.to_dict(), ensure_ascii=False, separators=(",", ":")),
            "class_names": ",".join(meta.class_names[1:]), "canvas": f"{h}x{w}",
            "box_score_thresh": str(meta.box_score_thresh), "box_nms_thresh": str(meta.box_nms_thresh),
            "detections_per_img": str(meta.detections_per_img)}


def model_config(artifact: Artifact, name: str, backend: str, max_batch: int = 8, instances: int = 1,
                 kind: str = "cpu", max_queue_delay_us: int = 2000) -> dict:
    """The ModelConfig of `artifact` as a dict for to_pbtxt (see the module docstring)."""
    batching = artifact.batch is None
    if batching and artifact.max_batch is not None:
        max_batch = min(max_batch, artifact.max_batch)

    def dims(name: str) -> list[int]:
        shape = artifact.shapes[name]
        return shape[1:] if batching else shape

    outputs = []
    for out in OUTPUT_NAMES:
        entry = {"name": out, "data_type": Word(TRITON_TYPES[artifact.dtypes[out]]), "dims": dims(out)}
        if out == "num_detections" and batching:
            entry["dims"], entry["reshape"] = [1], {"shape": []}  # [B] in the graph, [B, 1] to clients
        outputs.append(entry)
    images = {"data_type": Word(TRITON_TYPES[artifact.dtypes[INPUT_NAME]]), "dims": dims(INPUT_NAME)}
    config = {"name": name, "backend": backend, "max_batch_size": max_batch if batching else 0,
              "input": [{"name": INPUT_NAME, **images}], "output": outputs}
    if batching:  # Triton refuses a dynamic batcher on a model that does not batch
        config["dynamic_batching"] = {"max_queue_delay_microseconds": max_queue_delay_us}
    config["instance_group"] = [{"count": instances, "kind": Word(f"KIND_{kind.upper()}")}]
    config["model_warmup"] = [{"name": "blank_canvas", "batch_size": 1,
                               "inputs": {"key": INPUT_NAME, "value": {**images, "zero_data": True}}}]
    config["parameters"] = [{"key": k, "value": {"string_value": v}}
                            for k, v in metadata_parameters(artifact.meta).items()]
    return config


# ------------------------------------------------------------------ the repository
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")  # copied as 1/model.py for --backend python


def choose_backend(artifact: Artifact, backend: str | None, kind: str | None) -> tuple[str, str]:
    """(backend, instance kind) for the artifact; TritonExportError on a combination Triton cannot serve."""
    native = NATIVE_BACKEND[artifact.kind]
    backend = backend or native
    if backend not in (native, "python"):
        raise TritonExportError(f"a {artifact.kind} artifact is served by the {native} backend or --backend python, "
                                f"not {backend}")
    if backend == "python" and artifact.kind == "tensorrt":
        raise TritonExportError("--backend python runs the ONNX Runtime or OpenVINO adapter; serve engines with "
                                "the tensorrt backend")
    kind = kind or ("gpu" if artifact.kind == "tensorrt" else "cpu")
    if backend == "tensorrt" and kind != "gpu":
        raise TritonExportError("TensorRT engines run on a GPU only: use --kind gpu")
    if backend in ("openvino", "python") and kind != "cpu":
        raise TritonExportError(f"the {backend} backend model written here runs on the CPU only: use --kind cpu")
    return backend, kind


def export_repository(artifact_path, repo, name: str | None = None, max_batch: int = 8, instances: int = 1,
                      kind: str | None = None, max_queue_delay_us: int = 2000, backend: str | None = None,
                      force: bool = False) -> tuple[Path, dict]:
    """Write <repo>/<name>/ for the artifact; returns the model folder and its config (as for
    to_pbtxt). TritonExportError, one line, on bad input. The folder is assembled beside its final place and renamed into it, so a server
    polling the repository never sees half a model."""
    artifact = read_artifact(artifact_path)
    backend, kind = choose_backend(artifact, backend, kind)
    name = name or f"frcnn_{artifact.meta.arch}"
    if not NAME_PATTERN.fullmatch(name):
        raise TritonExportError(f"model name {name!r}: use letters, digits, '_', '-' and '.'")
    for option, value in (("--max-batch", max_batch), ("--instances", instances)):
        if value < 1:
            raise TritonExportError(f"{option} must be at least 1")
    if max_queue_delay_us < 0:
        raise TritonExportError("--max-queue-delay-us must be 0 or more")
    if artifact.batch is None and artifact.min_batch > 1:
        raise TritonExportError(f"{artifact_path}: the engine's batch range starts at {artifact.min_batch}; Triton "
                                "sends batches from 1 (rebuild it with exporters.trt --max-batch)")
    repo = Path(repo)
    target = repo / name
    if target.exists() and not force:
        raise TritonExportError(f"{target} already holds a model (use --force to replace it)")
    repo.mkdir(parents=True, exist_ok=True)
    config = model_config(artifact, name, backend, max_batch, instances, kind, max_queue_delay_us)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    try:
        version = staging / VERSION
        version.mkdir()
        for file_name, source in artifact.files.items():
            shutil.copyfile(source, version / file_name)
        if backend == "python":
            shutil.copyfile(PYTHON_MODEL, version / "model.py")
        (staging / "config.pbtxt").write_text(to_pbtxt(config) + "\n", encoding="utf-8")
        if artifact.kind == "tensorrt":
            (staging / "README.md").write_text(tensorrt_readme(artifact, repo, name), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, config


def tensorrt_readme(artifact: Artifact, repo: Path, name: str) -> str:
    """How to serve this engine: the TensorRT version rule and the plugin library's command line."""
    export = artifact.meta.export
    version, plugins = export.get("tensorrt", "unknown"), export.get("plugins", "custom")
    built = Path(export.get("plugin_library") or "plugins/build/libfrcnn_trt_plugins.so")
    library = built.name
    docker = (f"docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -v {repo.resolve()}:/models"
              + (f" -v {built.parent}:/plugins -e FRCNN_TRT_REGISTER_ON_LOAD=1" if plugins == "custom" else "")
              + " nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\")
    lines = [f"# Serving {name} (a TensorRT engine) with Triton", "",
             f"Built with TensorRT {version} ({export.get('precision', 'fp32')}, plugins: {plugins}). An engine runs",
             "only under the TensorRT version and on the GPU model it was built with: serve it with the Triton",
             f"release whose own TensorRT is {version} (NVIDIA's support matrix lists each release's TensorRT), or",
             "rebuild it inside that release's container with python -m exporters.trt.", ""]
    if plugins == "custom":
        lines += [
            f"It needs our plugin library, {library}, and that library must be built against the Triton",
            "release's own TensorRT version (python -m plugins.build against that exact version's headers",
            "and libnvinfer): one built for another version fails to load or breaks the engine's",
            "deserialization.", "",
            "Triton's TensorRT backend only dlopens a plugin library (its plugins= option calls dlopen and",
            "nothing else; LD_PRELOAD is a dlopen too), so the library must register its plugins while it",
            f"loads. {library} does that only when FRCNN_TRT_REGISTER_ON_LOAD=1 is set in the server's",
            "environment: it then looks up getPluginRegistry in libnvinfer.so.<major> (the TensorRT major",
            "version it was built against; loaded if it is not loaded yet) and registers each of its",
            "creators that is not registered already. Without the variable nothing registers and the",
            "engine fails to load with a missing plugin creator; with it but no such libnvinfer, the",
            "library prints one line (frcnn plugins: FRCNN_TRT_REGISTER_ON_LOAD=1 but ...) to stderr.",
            "Leave it unset where the library goes through IPluginRegistry::loadLibrary (python -m",
            "exporters.trt, runtimes.load(engine), trtexec --dynamicPlugins): that registers the",
            "creators itself.", "",
            "The TensorRT backend loads it from the command line:", "", "```",
            "FRCNN_TRT_REGISTER_ON_LOAD=1 tritonserver --model-repository=/models \\",
            f"    --backend-config=tensorrt,plugins=/plugins/{library}", "```", "",
            "or the server process preloads it (libnvinfer.so.<major> must then be on the loader's path):",
            "", "```",
            f"FRCNN_TRT_REGISTER_ON_LOAD=1 LD_PRELOAD=/plugins/{library} tritonserver --model-repository=/models",
            "```", "",
            "in NVIDIA's container, with the repository and the library mounted:", "", "```", docker,
            f"    tritonserver --model-repository=/models --backend-config=tensorrt,plugins=/plugins/{library}",
            "```", "",
            "Not executed here (no GPU, no TensorRT): the backend's loading is read from its sources and",
            "the registration was tested against a stand-in libnvinfer (plugins/README.md).", ""]
    else:
        lines += ["It uses TensorRT's own plugins (ROIAlign_TRT) and its native NMS layer, which the TensorRT",
                  "backend registers by itself: no plugin library is needed.", "", "```",
                  "tritonserver --model-repository=/models", "```", "", "in NVIDIA's container:", "", "```",
                  docker, "    tritonserver --model-repository=/models", "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ command line
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m exporters.triton", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="exported artifact: .onnx (standard flavour), OpenVINO .xml or its folder, TensorRT engine")
    p.add_argument("--repo", type=Path, required=True, help="model repository folder (made if missing)")
    p.add_argument("--name", help="model name in the repository (default frcnn_<arch>)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="max_batch_size of a dynamic-batch artifact (default 8; a fixed batch gives 0)")
    p.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    p.add_argument("--kind", choices=["cpu", "gpu"],
                   help="instance kind (default gpu for an engine, cpu otherwise)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="how long the dynamic batcher waits to fill a batch, in microseconds (default 2000)")
    p.add_argument("--backend", choices=["onnxruntime", "openvino", "tensorrt", "python"],
                   help="Triton backend (default: the artifact's own; python runs this toolkit's adapter)")
    p.add_argument("--force", action="store_true", help="replace a model of that name already in the repository")
    a = p.parse_args(argv)
    try:
        target, config = export_repository(a.model, a.repo, a.name, a.max_batch, a.instances, a.kind,
                                           a.max_queue_delay_us, a.backend, a.force)
    except (TritonExportError, ModelLoadError) as e:
        fail(first_line(e))
    print(f"wrote {target}/ (backend {config['backend']}, max_batch_size {config['max_batch_size']}): "
          f"{', '.join(sorted(f.name for f in (target / VERSION).iterdir()))}")
    if (target / "README.md").exists():
        print(f"how to serve it: {target / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
