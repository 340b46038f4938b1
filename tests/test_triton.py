"""Triton model repositories and the Triton adapter, offline: every generated config.pbtxt parses
as tritonclient's ModelConfig protobuf and its dims match the artifact's I/O as the real runtime
(ONNX Runtime, OpenVINO) reads it; one-line errors for bad input, an unreachable server and a
server that never answers. The real server runs in test_triton_server.py."""

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install -e .[dev])")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

import runtimes  # noqa: E402
from exporters import triton as triton_export  # noqa: E402
from runtimes.base import ModelLoadError  # noqa: E402
from runtimes.meta import META_KEY, ModelMeta  # noqa: E402
from runtimes.tensorrt import sidecar_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DTYPE_NAMES = {"TYPE_UINT8": "uint8", "TYPE_INT32": "int32", "TYPE_FP32": "float32"}


def parse_config(model_dir: Path):
    return text_format.Parse((model_dir / "config.pbtxt").read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


# ------------------------------------------------------------------ artifacts, and their I/O as the runtimes read it
@pytest.fixture(scope="module")
def openvino_irs(tiny_onnx_dynamic, tmp_path_factory):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install -e .[openvino])")
    from exporters.openvino import convert

    root = tmp_path_factory.mktemp("triton_ir")
    return {"dynamic": convert(tiny_onnx_dynamic, root / "dynamic"), "batch2": convert(tiny_onnx_dynamic, root / "b2", batch=2)}


def fake_engine(folder: Path, batch_range, class_names=None, plugins="custom") -> Path:
    """An engine file with its metadata sidecar: what exporters.triton reads of an engine (TensorRT is not here)."""
    from trainer.models import default_meta

    folder.mkdir(parents=True, exist_ok=True)
    meta = default_meta("tiny", class_names or ["__background__", "circle", "square", "triangle"], (256, 256))
    meta.export = dict(format="tensorrt", tensorrt="10.16.0.72", precision="fp16", plugins=plugins,
                       plugin_library="/opt/frcnn/libfrcnn_trt_plugins.so", batch_range=list(batch_range),
                       batch=batch_range[0] if batch_range[0] == batch_range[-1] else None)
    engine = folder / "model.engine"
    engine.write_bytes(b"not a real engine: exporters.triton copies it as it is")
    sidecar_path(engine).write_text(meta.to_json())
    return engine


def onnx_io(path):
    """name -> (numpy dtype, shape with None for a dynamic dim), from an ONNX Runtime session."""
    import onnxruntime as ort

    types = {"tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(float)": "float32"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {t.name: (types[t.type], [d if isinstance(d, int) else None for d in t.shape])
            for t in session.get_inputs() + session.get_outputs()}


def openvino_io(xml):
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    return {p.get_any_name(): (p.get_element_type().to_dtype().name,
                               [d.get_length() if d.is_static else None for d in p.get_partial_shape()])
            for p in list(model.inputs) + list(model.outputs)}


def engine_io(engine):
    """The deployed-model contract at the sidecar's batch (None = dynamic): all an engine says without TensorRT."""
    meta = ModelMeta.from_json(sidecar_path(engine).read_text())
    b, (h, w), k = meta.export["batch"], meta.canvas, meta.detections_per_img
    return {"images": ("uint8", [b, h, w, 3]), "num_detections": ("int32", [b]), "boxes": ("float32", [b, k, 4]),
            "scores": ("float32", [b, k]), "labels": ("int32", [b, k])}


def assert_dims_match(config, io):
    """config.pbtxt's tensors are the artifact's, batch dim and num_detections' reshape included."""
    batching = config.max_batch_size > 0
    tensors = {t.name: t for t in list(config.input) + list(config.output)}
    assert sorted(tensors) == sorted(io)
    for name, (dtype, shape) in io.items():
        t = tensors[name]
        assert DTYPE_NAMES[model_config_pb2.DataType.Name(t.data_type)] == dtype, name
        # what the backend sees: the batch dim (when batching) + reshape.shape if there is one, else dims
        inner = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
        assert ([None] + inner if batching else inner) == shape, (name, shape)
    count = tensors["num_detections"]
    if batching:  # [B] in the graph: Triton needs dims [1] and a reshape to nothing
        assert list(count.dims) == [1] and count.HasField("reshape") and list(count.reshape.shape) == []
    else:
        assert not count.HasField("reshape")


@pytest.fixture(scope="module")
def cases(tiny_onnx, tiny_onnx_dynamic, openvino_irs, tmp_path_factory):
    """(artifact, backend, its I/O read by the real runtime, the max_batch_size config.pbtxt must have)."""
    engines = tmp_path_factory.mktemp("triton_engines")
    return {
        "onnx-dynamic": (tiny_onnx_dynamic, None, onnx_io(tiny_onnx_dynamic), 8),
        "onnx-batch1": (tiny_onnx, None, onnx_io(tiny_onnx), 0),
        "onnx-python": (tiny_onnx_dynamic, "python", onnx_io(tiny_onnx_dynamic), 8),
        "openvino-dynamic": (openvino_irs["dynamic"], None, openvino_io(openvino_irs["dynamic"]), 8),
        "openvino-batch2": (openvino_irs["batch2"].parent, None, openvino_io(openvino_irs["batch2"]), 0),
        "openvino-python": (openvino_irs["dynamic"], "python", openvino_io(openvino_irs["dynamic"]), 8),
        "engine-1..4": (fake_engine(engines / "dyn", [1, 2, 4]), None, engine_io(engines / "dyn" / "model.engine"), 4),
        "engine-batch2": (fake_engine(engines / "b2", [2, 2, 2]), None, engine_io(engines / "b2" / "model.engine"), 0),
    }


NATIVE = {"onnx": "onnxruntime", "openvino": "openvino", "engine": "tensorrt"}
FILES = {"onnx": ["model.onnx"], "openvino": ["model.bin", "model.xml"], "engine": ["model.plan", "model.plan.json"]}


@pytest.mark.parametrize("case", ["onnx-dynamic", "onnx-batch1", "onnx-python", "openvino-dynamic", "openvino-batch2",
                                  "openvino-python", "engine-1..4", "engine-batch2"])
def test_every_generated_config_parses_and_matches_the_artifact(cases, case, tmp_path):
    artifact, backend, io, max_batch_size = cases[case]
    family = case.split("-")[0]
    model_dir, _ = triton_export.export_repository(artifact, tmp_path / "repo", name="det", backend=backend,
                                                   instances=2, max_queue_delay_us=1500)
    config = parse_config(model_dir)
    assert config.name == "det" and config.backend == (backend or NATIVE[family])
    assert config.max_batch_size == max_batch_size
    assert_dims_match(config, io)
    # a dynamic batcher only where Triton batches; Triton refuses one on max_batch_size 0
    assert config.HasField("dynamic_batching") == (max_batch_size > 0)
    if max_batch_size:
        assert config.dynamic_batching.max_queue_delay_microseconds == 1500
    kind = "KIND_GPU" if family == "engine" else "KIND_CPU"
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [(2, kind)]
    (warmup,) = config.model_warmup
    images = warmup.inputs["images"]
    assert warmup.batch_size == 1 and images.zero_data and list(images.dims) == list(config.input[0].dims)
    assert images.data_type == config.input[0].data_type == model_config_pb2.TYPE_UINT8
    # the metadata travels whole, and readable
    meta = ModelMeta.from_json(config.parameters[META_KEY].string_value)
    assert meta.canvas == (256, 256) and meta.class_names[1:] == ["circle", "square", "triangle"]
    assert config.parameters["class_names"].string_value == "circle,square,triangle"
    assert config.parameters["canvas"].string_value == "256x256"
    assert config.parameters["box_score_thresh"].string_value == str(meta.box_score_thresh)
    # the version folder: the artifact's files under the backend's names, copied byte for byte
    expected = FILES[family] + (["model.py"] if backend == "python" else [])
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == sorted(expected)
    if backend == "python":
        assert (model_dir / "1" / "model.py").read_text() == triton_export.PYTHON_MODEL.read_text()
    source = Path(artifact)
    if source.is_dir():
        source = next(source.glob("*.xml"))
    main_file = {"onnx": "model.onnx", "openvino": "model.xml", "engine": "model.plan"}[family]
    assert (model_dir / "1" / main_file).read_bytes() == source.read_bytes()
    assert (model_dir / "README.md").exists() == (family == "engine")
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_max_batch_follows_the_option_and_an_engine_profile(cases, tmp_path):
    onnx, engine = cases["onnx-dynamic"][0], cases["engine-1..4"][0]
    dirs = [triton_export.export_repository(onnx, tmp_path, name="a", max_batch=3)[0],
            triton_export.export_repository(engine, tmp_path, name="b", max_batch=16)[0]]
    assert [parse_config(d).max_batch_size for d in dirs] == [3, 4]  # the engine's profile ends at 4


def test_metadata_with_quotes_backslashes_and_unicode_survives_the_text_format(tmp_path):
    names = ["__background__", 'say "cheese"', "back\\slash", "Ölfass 🛢", "new\nline"]
    engine = fake_engine(tmp_path / "e", [1, 1, 8], class_names=names)
    model_dir, _ = triton_export.export_repository(engine, tmp_path / "repo")
    config = parse_config(model_dir)
    assert ModelMeta.from_json(config.parameters[META_KEY].string_value).class_names == names
    assert config.name == "frcnn_tiny"  # the default name


def test_tensorrt_readme_gives_the_plugin_command_line_and_the_version_rule(tmp_path):
    model_dir, _ = triton_export.export_repository(fake_engine(tmp_path / "e", [1, 4, 8]), tmp_path / "repo",
                                                   name="trt")
    readme = (model_dir / "README.md").read_text()
    # Triton only dlopens the library: every command line turns on its registration at load time
    assert "FRCNN_TRT_REGISTER_ON_LOAD=1 tritonserver --model-repository=/models \\\n    --backend-config=tensorrt," \
           "plugins=/plugins/libfrcnn_trt_plugins.so" in readme
    assert "FRCNN_TRT_REGISTER_ON_LOAD=1 LD_PRELOAD=/plugins/libfrcnn_trt_plugins.so tritonserver " \
           "--model-repository=/models" in readme
    assert (f"-v {(tmp_path / 'repo').resolve()}:/models -v /opt/frcnn:/plugins -e FRCNN_TRT_REGISTER_ON_LOAD=1 "
            "nvcr.io/") in readme  # where it was built
    assert "does that only when FRCNN_TRT_REGISTER_ON_LOAD=1 is set" in " ".join(readme.split())
    assert "TensorRT 10.16.0.72" in readme and "built against the Triton\nrelease's own TensorRT version" in readme
    builtin_dir, _ = triton_export.export_repository(fake_engine(tmp_path / "b", [1, 4, 8], plugins="builtin"),
                                                     tmp_path / "repo", name="trt_builtin")
    builtin = (builtin_dir / "README.md").read_text()
    assert "no plugin library is needed" in builtin and "plugins=" not in builtin
    assert "FRCNN_TRT_REGISTER_ON_LOAD" not in builtin


# ------------------------------------------------------------------ one-line errors
def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        triton_export.main(list(map(str, args)))
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_unknown_artifacts_are_one_line(tiny_run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    repo = tmp_path / "repo"
    assert "unknown artifact" in run_cli(capsys, "--model", tiny_run, "--repo", repo)  # a checkpoint: export it first
    assert "unknown artifact" in run_cli(capsys, "--model", tmp_path / "notes.txt", "--repo", repo)
    assert "no such file" in run_cli(capsys, "--model", tmp_path / "missing.onnx", "--repo", repo)
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage")
    assert "not a valid ONNX file" in run_cli(capsys, "--model", tmp_path / "garbage.onnx", "--repo", repo)
    assert not repo.exists()


def test_a_trt_flavoured_onnx_is_refused(tiny_onnx, tmp_path, capsys):
    import onnx

    proto = onnx.load(str(tiny_onnx))
    meta = ModelMeta.from_json(proto.metadata_props[0].value)
    meta.export["flavor"] = "trt"
    proto.metadata_props[0].value = meta.to_json()
    onnx.save(proto, str(tmp_path / "model.trt.onnx"))
    assert "'trt'-flavoured ONNX" in run_cli(capsys, "--model", tmp_path / "model.trt.onnx", "--repo", tmp_path / "r")


def test_a_model_already_there_needs_force(tiny_onnx_dynamic, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert triton_export.main(["--model", str(tiny_onnx_dynamic), "--repo", str(repo), "--name", "m"]) == 0
    before = (repo / "m" / "config.pbtxt").read_text()
    message = run_cli(capsys, "--model", tiny_onnx_dynamic, "--repo", repo, "--name", "m", "--max-batch", "2")
    assert "already holds a model" in message and "--force" in message
    assert (repo / "m" / "config.pbtxt").read_text() == before
    assert triton_export.main(["--model", str(tiny_onnx_dynamic), "--repo", str(repo), "--name", "m",
                               "--max-batch", "2", "--force"]) == 0
    assert parse_config(repo / "m").max_batch_size == 2
    assert sorted(p.name for p in repo.iterdir()) == ["m"]


@pytest.mark.parametrize("extra, message", [
    (["--backend", "openvino"], "served by the onnxruntime backend or --backend python"),
    (["--backend", "python", "--kind", "gpu"], "runs on the CPU only"),
    (["--name", "a/b"], "model name"),
    (["--max-batch", "0"], "--max-batch must be at least 1"),
    (["--instances", "0"], "--instances must be at least 1"),
    (["--max-queue-delay-us", "-1"], "--max-queue-delay-us"),
])
def test_bad_options_are_one_line(tiny_onnx_dynamic, tmp_path, capsys, extra, message):
    assert message in run_cli(capsys, "--model", tiny_onnx_dynamic, "--repo", tmp_path / "repo", *extra)


def test_engines_run_on_a_gpu_with_the_tensorrt_backend(tmp_path, capsys):
    engine = fake_engine(tmp_path / "e", [1, 4, 8])
    assert "run on a GPU only" in run_cli(capsys, "--model", engine, "--repo", tmp_path / "r", "--kind", "cpu")
    assert "serve engines with the tensorrt backend" in run_cli(capsys, "--model", engine, "--repo", tmp_path / "r",
                                                                "--backend", "python")
    starts_at_2 = fake_engine(tmp_path / "f", [2, 4, 8])
    assert "batch range starts at 2" in run_cli(capsys, "--model", starts_at_2, "--repo", tmp_path / "r")


def test_command_line_help_and_errors_have_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "exporters.triton", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "--max-queue-delay-us" in r.stdout and "--backend" in r.stdout
    r = subprocess.run([sys.executable, "-m", "exporters.triton", "--model", str(tmp_path), "--repo",
                        str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


# ------------------------------------------------------------------ the adapter without a server
def test_triton_urls_choose_the_triton_runtime():
    assert runtimes.runtime_for("triton://127.0.0.1:8000/m") == "triton"
    assert runtimes.runtime_for("triton+grpc://127.0.0.1:8001/m") == "triton"
    assert "triton" in runtimes.RUNTIMES and runtimes.unavailable("triton") is None
    from runtimes.triton import parse_url

    assert parse_url("triton://h/m") == ("http", "h", 8000, "m")
    assert parse_url("triton+grpc://h:9/m") == ("grpc", "h", 9, "m")


@pytest.mark.parametrize("url, message", [("triton://127.0.0.1:8000/", "expected triton://host:port/model_name"),
                                          ("triton://127.0.0.1:x/m", "port is not a number"),
                                          ("triton://127.0.0.1:8000/a/b", "expected triton://host:port/model_name")])
def test_malformed_urls_are_one_line(url, message):
    with pytest.raises(ModelLoadError, match=message):
        runtimes.load(url)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize("scheme", ["triton", "triton+grpc"])
def test_an_unreachable_server_is_one_line(scheme):
    url = f"{scheme}://127.0.0.1:{closed_port()}/m"
    with pytest.raises(ModelLoadError, match="cannot be reached") as e:
        runtimes.load(url, timeout=5)
    assert "\n" not in str(e.value) and url in str(e.value)


def test_benchmark_of_an_unreachable_served_model_is_one_line(tmp_path):
    """benchmarks/run.py: --model URL with nothing listening, and --runtime triton without its URL."""
    url = f"triton://127.0.0.1:{closed_port()}/m"
    for args, message, usage in [(["--model", url], f"error: {url}: Triton server at 127.0.0.1:", False),
                                 (["--runtime", "onnxruntime,triton"], "--triton-url URL go together", True)]:
        r = subprocess.run([sys.executable, "benchmarks/run.py", *args, "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and message in lines[-1] and "Traceback" not in r.stderr, r.stderr
        assert usage or len(lines) == 1  # argparse's usage lines, else the one error line alone


def test_the_adapter_imports_no_torch():
    """The client side is an edge runtime like the others: loading a triton:// model (both
    protocols, as far as an unreachable server lets it go) leaves torch and onnx unimported."""
    code = (f"import sys, runtimes\n"
            f"for url in ('triton://127.0.0.1:{closed_port()}/m', 'triton+grpc://127.0.0.1:{closed_port()}/m'):\n"
            f"    try:\n        runtimes.load(url, timeout=5)\n"
            f"    except runtimes.ModelLoadError:\n        pass\n"
            f"assert 'tritonclient.grpc' in sys.modules and 'tritonclient.http' in sys.modules\n"
            f"print(sorted(m for m in ('torch', 'torchvision', 'onnx') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("scheme", ["triton", "triton+grpc"])
def test_a_server_that_never_answers_times_out_in_one_line(scheme):
    """A listener on loopback that accepts connections and says nothing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted = []

    def accept():
        for _ in range(4):  # bounded: a client connects once or twice
            try:
                accepted.append(listener.accept()[0])
            except OSError:  # closed at the end of the test
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with pytest.raises(ModelLoadError, match=r"did not answer within 0\.5s") as e:
            runtimes.load(f"{scheme}://127.0.0.1:{listener.getsockname()[1]}/m", timeout=0.5)
        assert "\n" not in str(e.value)
    finally:
        listener.close()
        for c in accepted:
            c.close()
        thread.join(5)
