"""Pretrained weights and COCO by name, without internet: a loopback HTTP server serves a
generated state dict (named like torchvision's files: name-<sha256 prefix>.pth) and tiny
COCO-format zips. Each failure (hash mismatch, truncated transfer, 404, unreachable host)
must be one line and leave nothing half-written; an interrupted COCO zip must resume."""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from trainer import checkpoint, weights
from trainer.data import DatasetError, build_datasets, coco2017, validation_set
from trainer.models import build_model, default_meta
from trainer.train import StartWeights, backbone_info, load_weights, main as train_main

REPO = Path(__file__).resolve().parents[1]
MAX_REQUESTS = 60  # the server answers 503 after this many: no test can loop on it


# ---------------------------------------------------------------- the loopback server

class Handler(BaseHTTPRequestHandler):
    """GET with Range support; `truncate_once` paths send half their body once, then close."""

    timeout = 10  # a stuck client cannot hold the server

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if len(srv.requests) > MAX_REQUESTS:
            return self.send_error(503)
        body = srv.files.get(self.path)
        if body is None:
            return self.send_error(404)
        start, rng = 0, self.headers.get("Range")
        if rng and srv.ranges:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                return self.send_error(416)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.path in srv.truncate_once:
            srv.truncate_once.discard(self.path)
            payload = payload[: len(payload) // 2]  # then the connection closes: a short body
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.requests, httpd.truncate_once, httpd.ranges = {}, [], set(), True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_port}{path}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)
    assert not thread.is_alive()


def closed_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).exists() else []


def one_error_line(err: str) -> str:
    """The single `error:` line of a command's stderr (progress bars may precede it)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- weights

SOURCE_CLASSES = ["__background__", "a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """A torchvision-format state dict of the tiny arch (6 classes, FrozenBatchNorm layout)."""
    torch.manual_seed(7)
    model = build_model(default_meta("tiny", SOURCE_CLASSES, (64, 64)))
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache (TORCH_HOME), as a fresh machine has."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def serve_state(server, state, name="fasterrcnn_tiny_test", wrong_hash=False) -> str:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    digest = "deadbeef" if wrong_hash else hashlib.sha256(data).hexdigest()[:8]
    path = f"/models/{name}-{digest}.pth"
    server.files[path] = data
    return server.url(path)


def test_good_download_is_verified_cached_and_loads(server, hub, tiny_state):
    url = serve_state(server, tiny_state)
    model, meta = checkpoint.load_any(url, arch="tiny")
    assert meta.arch == "tiny" and meta.arch_kwargs == {"frozen_bn": True}
    assert meta.provenance["url"] == url and meta.provenance["imported_from"] == url.rsplit("/", 1)[1]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny_state.items())
    assert files_under(hub) == [hub / url.rsplit("/", 1)[1]]  # the file, and no temporary one
    checkpoint.load_any(url, arch="tiny")  # from the cache: checked, not fetched again
    assert len(server.requests) == 1


@pytest.mark.parametrize("case", ["hash mismatch", "truncated", "404", "unreachable"])
def test_failed_weights_download_is_one_line_and_leaves_nothing(case, server, hub, tiny_state, capsys):
    from exporters.onnx import main as export_main

    url = serve_state(server, tiny_state, wrong_hash=case == "hash mismatch")
    if case == "truncated":
        server.truncate_once.add(url.split(str(server.server_port), 1)[1])
    elif case == "404":
        url = server.url("/models/missing-0123abcd.pth")
    elif case == "unreachable":
        url = f"http://127.0.0.1:{closed_port()}/models/x-0123abcd.pth"
    with pytest.raises(SystemExit) as e:
        export_main(["--checkpoint", url, "--arch", "tiny", "--out", str(hub.parent / "x.onnx")])
    assert e.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert url in line
    expected = {"hash mismatch": "not the published deadbeef", "truncated": "stopped at",
                "404": "HTTP 404", "unreachable": "put it at " + str(hub / url.rsplit("/", 1)[1])}[case]
    assert expected in line, line
    assert files_under(hub.parent.parent) == []
    if case == "truncated":  # the next try starts over and succeeds
        assert checkpoint.load_any(url, arch="tiny")[1].arch == "tiny"


def test_a_wrong_file_put_in_the_cache_by_hand_is_refused(server, hub, tiny_state):
    url = serve_state(server, tiny_state)
    hub.mkdir(parents=True)
    (hub / url.rsplit("/", 1)[1]).write_bytes(b"not the weights")
    with pytest.raises(checkpoint.CheckpointError, match="is there but has sha256"):
        checkpoint.load_any(url, arch="tiny")
    assert server.requests == []


def test_acceptance_command_offline_fails_in_one_line(tmp_path):
    """`python -m exporters.onnx --checkpoint torchvision:resnet50_fpn` on a machine without
    internet (here forced by a proxy nobody listens on, so the test is the same everywhere)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    port = closed_port()
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy", "https_proxy")}
    env.update(TORCH_HOME=str(tmp_path / "torch"), https_proxy=f"http://127.0.0.1:{port}",
               http_proxy=f"http://127.0.0.1:{port}")
    r = subprocess.run([sys.executable, "-m", "exporters.onnx", "--checkpoint", "torchvision:resnet50_fpn"],
                       cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot download"), r.stderr
    assert FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url in lines[0]
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth") in lines[0]
    assert files_under(tmp_path) == [] and r.stdout == ""


@pytest.mark.parametrize("arch", weights.PRETRAINED_ARCHS)
def test_names_come_from_torchvisions_enums(arch):
    from torchvision.models import get_model_weights

    member = get_model_weights(f"fasterrcnn_{arch}").DEFAULT
    for spec in (f"torchvision:{arch}", f"torchvision:fasterrcnn_{arch}",
                 f"torchvision:{type(member).__name__}.{member.name}"):
        url, got_arch, names, provenance = weights.lookup(spec)
        assert (url, got_arch, names) == (member.url, arch, member.meta["categories"])
        assert provenance["published_box_map"] == member.meta["_metrics"]["COCO-val2017"]["box_map"]
    assert weights.lookup("coco", arch)[0] == member.url
    # the hash torchvision publishes: the eight hex digits after the last '-' of the file name
    assert weights.published_hash(member.url).digest == member.url.rsplit("-", 1)[1].split(".")[0]
    assert len(weights.published_hash(member.url).digest) == 8


def test_cache_follows_torch_home(hub):
    assert weights.cache_path("https://h/x/resnet50-0676ba61.pth") == hub / "resnet50-0676ba61.pth"
    assert weights.published_hash("https://h/model-v2.pth") is None


@pytest.mark.parametrize("spec, arch, message", [
    ("coco", None, "--weights coco needs --arch"),
    ("coco", "tiny", "no COCO weights for 'tiny'"),
    ("torchvision:nonsense", None, "unknown"),
    ("torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V9", None, "has no such weights"),
    ("torchvision:ResNet50_Weights.IMAGENET1K_V1", None, "pass it as --weights-backbone"),
    ("torchvision:resnet50_fpn_v2", "resnet50_fpn", "holds a resnet50_fpn_v2 model, not --arch resnet50_fpn"),
])
def test_bad_names_are_one_line(spec, arch, message):
    with pytest.raises(checkpoint.CheckpointError, match=message) as e:
        weights.lookup(spec, arch)
    assert "\n" not in str(e.value)


def test_fine_tuning_reinitialises_only_the_class_specific_layers(tiny_state):
    torch.manual_seed(1)
    model = build_model(default_meta("tiny", ["__background__", "x", "y", "z"], (64, 64)))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    note = load_weights(model, StartWeights(tiny_state, "tiny", True, SOURCE_CLASSES, "src.pth"),
                        ["__background__", "x", "y", "z"])
    assert note.startswith("class head re-initialised (6 classes in src.pth, 4 here)")
    assert "roi_heads.box_predictor.bbox_pred and roi_heads.box_predictor.cls_score" in note
    for k, v in model.state_dict().items():
        if k.startswith("roi_heads.box_predictor."):
            assert torch.equal(v, fresh[k]), k
        elif k in tiny_state:
            assert torch.equal(v, tiny_state[k]), k


def test_fine_tuning_on_a_subset_of_the_classes_keeps_their_rows(tiny_state):
    model = build_model(default_meta("tiny", ["__background__", "c", "a"], (64, 64)))
    note = load_weights(model, StartWeights(tiny_state, "tiny", True, SOURCE_CLASSES, "src.pth"),
                        ["__background__", "c", "a"])
    assert "picked by name from the 5 of src.pth" in note
    got = model.state_dict()
    rows = [0, 3, 1]
    assert torch.equal(got["roi_heads.box_predictor.cls_score.weight"],
                       tiny_state["roi_heads.box_predictor.cls_score.weight"][rows])
    boxes = tiny_state["roi_heads.box_predictor.bbox_pred.bias"].view(6, 4)[rows].reshape(-1)
    assert torch.equal(got["roi_heads.box_predictor.bbox_pred.bias"], boxes)
    assert torch.equal(got["backbone.body.conv1.weight"], tiny_state["backbone.body.conv1.weight"])


def test_trainer_fine_tunes_from_a_url_and_says_what_it_reinitialised(server, hub, tiny_state, tmp_path, capsys):
    url = serve_state(server, tiny_state)
    run = tmp_path / "ft"
    assert train_main(["--weights", url, "--arch", "tiny", "--data", "shapes:train=2,val=1", "--canvas", "64x64",
                       "--batch-size", "2", "--epochs", "1", "--workers", "0", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "class head re-initialised (6 classes in" in out and "only roi_heads.box_predictor" in out
    meta = checkpoint.read_meta(run)
    assert meta.provenance["weights"] == url and meta.arch_kwargs == {"frozen_bn": True}


def test_imagenet_backbone_by_url_fills_the_whole_backbone(server, hub):
    import torchvision

    torch.manual_seed(2)
    classifier = torchvision.models.mobilenet_v3_large().state_dict()
    url = serve_state(server, classifier, name="mobilenet_v3_large")
    start = backbone_info(url, "mobilenet_v3_large_fpn")
    assert start.frozen_bn and start.backbone_only  # torchvision freezes it when pretrained
    meta = default_meta("mobilenet_v3_large_fpn", ["__background__", "x"], arch_kwargs={"frozen_bn": True})
    model = build_model(meta)
    note = load_weights(model, start, meta.class_names)
    assert note.startswith("backbone: ") and "start from random initialisation" in note
    body = model.backbone.body.state_dict()
    assert all(torch.equal(v, classifier["features." + k]) for k, v in body.items() if "num_batches" not in k)


def test_weights_and_backbone_weights_exclude_each_other(capsys):
    assert train_main(["--weights", "coco", "--weights-backbone", "imagenet", "--arch", "resnet50_fpn"]) == 2
    assert "exclude each other" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------- COCO by name

def jpeg(seed: int, h: int, w: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def coco_categories() -> list[dict]:
    """COCO's 80 categories with their ids (torchvision's list, less its "N/A" placeholders)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    names = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    return [dict(id=i, name=n) for i, n in enumerate(names) if i and n != "N/A"]


def instances(split: str, n: int) -> dict:
    images = [dict(id=i + 1, file_name=f"{i + 1:012d}.jpg", height=48, width=64) for i in range(n)]
    anns = [dict(id=i + 1, image_id=i + 1, category_id=[1, 3][i % 2], bbox=[4.0, 6.0, 20.0, 16.0], area=320.0,
                 iscrowd=0) for i in range(n)]
    return dict(images=images, annotations=anns, categories=coco_categories())


@pytest.fixture
def coco_server(server, monkeypatch):
    """Tiny COCO 2017 zips (3 val images, 2 train) served on loopback, with their real MD5s
    standing in for the published ones."""
    archives = {
        "annotations": ("annotations/instances_", zip_bytes({
            "annotations/instances_val2017.json": json.dumps(instances("val2017", 3)).encode(),
            "annotations/instances_train2017.json": json.dumps(instances("train2017", 2)).encode(),
            "annotations/captions_val2017.json": b"{}"})),  # not extracted
        "val2017": ("val2017/", zip_bytes({f"val2017/{i + 1:012d}.jpg": jpeg(i, 48, 64) for i in range(3)})),
        "train2017": ("train2017/", zip_bytes({f"train2017/{i + 1:012d}.jpg": jpeg(9 + i, 48, 64)
                                               for i in range(2)})),
    }
    table = {}
    for key, (members, data) in archives.items():
        name = Path(coco2017.ARCHIVES[key].url).name
        server.files[f"/coco/{name}"] = data
        table[key] = coco2017.Archive(server.url(f"/coco/{name}"),
                                      coco2017.Checksum("md5", hashlib.md5(data).hexdigest()), members)
    monkeypatch.setattr(coco2017, "ARCHIVES", table)
    return server


def test_coco_val2017_downloads_verifies_and_extracts(coco_server, tmp_path, monkeypatch):
    monkeypatch.setenv("COCO_ROOT", str(tmp_path / "coco"))
    train, val = build_datasets("coco-val2017")
    assert train is val and len(val) == 3 and val.name == "coco-val2017"
    assert val.class_names[:3] == ["person", "bicycle", "car"] and val.label_category_ids()[-1] == 90
    root = tmp_path / "coco"
    assert sorted(p.relative_to(root).as_posix() for p in files_under(root)) == [
        "annotations/instances_train2017.json", "annotations/instances_val2017.json",
        *(f"val2017/{i + 1:012d}.jpg" for i in range(3))]  # zips removed, nothing half-written
    assert len(coco_server.requests) == 2
    build_datasets("coco-val2017")  # found on disk: no download
    assert len(coco_server.requests) == 2


def test_coco_train2017_validates_on_val2017(coco_server, tmp_path):
    train, val = build_datasets(f"coco-train2017:{tmp_path}")
    assert (len(train), len(val), train.name, val.name) == (2, 3, "coco-train2017", "coco-val2017")
    assert len(validation_set(f"coco-train2017:{tmp_path}")) == 3


@pytest.mark.parametrize("ranges", [True, False], ids=["server-resumes", "server-ignores-range"])
def test_interrupted_coco_download_resumes(coco_server, tmp_path, ranges):
    coco_server.ranges = ranges
    coco_server.truncate_once.add("/coco/val2017.zip")
    whole = len(coco_server.files["/coco/val2017.zip"])
    with pytest.raises(DatasetError) as e:
        build_datasets(f"coco-val2017:{tmp_path}")
    message = str(e.value)
    assert "\n" not in message and "val2017.zip stopped at" in message and "run again to resume" in message
    partial = tmp_path / "val2017.zip.partial"
    assert partial.stat().st_size == whole // 2
    assert not (tmp_path / "val2017").exists() and not (tmp_path / "val2017.zip").exists()
    _, val = build_datasets(f"coco-val2017:{tmp_path}")
    assert len(val) == 3 and not partial.exists()
    assert coco_server.requests[-1] == ("/coco/val2017.zip", f"bytes={whole // 2}-")


@pytest.mark.parametrize("case", ["md5 mismatch", "404", "unreachable"])
def test_failed_coco_download_is_one_line_and_leaves_nothing(case, coco_server, tmp_path, monkeypatch, capsys):
    from trainer.eval import main as eval_main

    a = coco2017.ARCHIVES["val2017"]
    url = {"md5 mismatch": a.url, "404": a.url.replace("val2017.zip", "nothing.zip"),
           "unreachable": f"http://127.0.0.1:{closed_port()}/coco/val2017.zip"}[case]
    checksum = coco2017.Checksum("md5", "0" * 32) if case == "md5 mismatch" else a.checksum
    monkeypatch.setitem(coco2017.ARCHIVES, "val2017", coco2017.Archive(url, checksum, a.members))
    ckpt = tmp_path / "ckpt"
    from tests.conftest import make_tiny_checkpoint

    make_tiny_checkpoint(ckpt)
    assert eval_main(["--checkpoint", str(ckpt), "--data", f"coco-val2017:{tmp_path / 'coco'}"]) == 2
    line = one_error_line(capsys.readouterr().err)
    expected = {"md5 mismatch": "not the published 0000", "404": "HTTP 404",
                "unreachable": f"put it at {tmp_path / 'coco' / 'val2017.zip'}"}[case]
    assert url in line and expected in line, line
    # the annotations came first and are complete; of the images there is no trace
    assert [p.name for p in files_under(tmp_path / "coco")] == ["instances_train2017.json",
                                                                "instances_val2017.json"]


def test_a_zip_put_there_by_hand_is_checked_and_used_offline(coco_server, tmp_path, monkeypatch):
    for key in ("annotations", "val2017"):
        a = coco2017.ARCHIVES[key]
        (tmp_path / Path(a.url).name).write_bytes(coco_server.files[f"/coco/{Path(a.url).name}"])
        monkeypatch.setitem(coco2017.ARCHIVES, key, coco2017.Archive(
            f"http://127.0.0.1:{closed_port()}/{Path(a.url).name}", a.checksum, a.members))
    assert len(build_datasets(f"coco-val2017:{tmp_path}")[1]) == 3
    assert coco_server.requests == []


def test_implicit_use_never_downloads(coco_server, tmp_path):
    """An exporter's parity images come from the checkpoint's dataset only when it is here."""
    with pytest.raises(DatasetError, match="not found"):
        validation_set(f"coco-train2017:{tmp_path}", download=False)
    assert coco_server.requests == []


def test_real_archive_table_is_what_tools_publish():
    """The URLs of images.cocodataset.org and the MD5s cited in trainer/data/coco2017.py."""
    got = {k: (a.url, a.checksum.algorithm, a.checksum.digest) for k, a in coco2017.ARCHIVES.items()}
    assert got == {
        "annotations": ("http://images.cocodataset.org/annotations/annotations_trainval2017.zip", "md5",
                        "f4bbac642086de4f52a3fdda2de5fa2c"),
        "val2017": ("http://images.cocodataset.org/zips/val2017.zip", "md5", "442b8da7639aecaf257c1dceb8ba8c80"),
        "train2017": ("http://images.cocodataset.org/zips/train2017.zip", "md5", "cced6f7f71b7629ddf16f17bbcfab6b2"),
    }


@pytest.fixture(scope="module")
def coco_tiny_state() -> dict[str, torch.Tensor]:
    """A tiny model with torchvision's 91 COCO labels (label k is COCO category k), random
    weights with "person" lifted above the score threshold."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    torch.manual_seed(5)
    model = build_model(default_meta("tiny", FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]))
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[1] = 6.0
    return {k: v for k, v in model.state_dict().items() if "num_batches" not in k}


def test_torchvision_coco_model_evaluates_on_coco_by_name(coco_server, server, hub, tmp_path, capsys,
                                                          coco_tiny_state):
    """The chain the README's reproduction runs: weights by URL (91 torchvision labels, the
    label being the COCO id) scored on COCO val2017 by name; "N/A" labels count for nothing."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    from trainer.eval import category_ids_for, main as eval_main

    names = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    url = serve_state(server, coco_tiny_state)
    out = tmp_path / "detections.json"
    assert eval_main(["--checkpoint", url, "--data", f"coco-val2017:{tmp_path / 'coco'}", "--out", str(out)]) == 0
    assert "coco-val2017: 3 images" in capsys.readouterr().out
    found = {r["category_id"] for r in json.loads(out.read_text())}
    assert 1 in found and found <= {c["id"] for c in coco_categories()} | {-1}
    # torchvision's label k is COCO category k; the "N/A" labels map to no category
    ids = category_ids_for(checkpoint.load_any(url)[1], validation_set(f"coco-val2017:{tmp_path / 'coco'}"))
    assert ids == [0] + [-1 if n == "N/A" else k for k, n in enumerate(names)][1:]


def test_benchmark_reproduction_command_on_loopback(coco_server, server, hub, tmp_path, coco_tiny_state):
    """`python benchmarks/run.py --model torchvision:... --data coco-val2017`, with the weights
    by loopback URL and the tiny COCO downloaded from loopback first: every row is scored on
    coco-val2017 and agrees with the reference."""
    coco = tmp_path / "coco"
    build_datasets(f"coco-val2017:{coco}")  # the ARCHIVES stand-ins live in this process only
    url = serve_state(server, coco_tiny_state)
    env = {**os.environ, "TORCH_HOME": str(hub.parent.parent)}
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--model", url, "--data",
                        f"coco-val2017:{coco}", "--runtime", "onnxruntime", "--precision", "fp32", "--iters", "4",
                        "--warmup", "1", "--threads", "2", "--out", str(tmp_path / "bench")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "accuracy on coco-val2017 (3 images)" in r.stdout
    rows = {row["name"]: row for row in json.loads((tmp_path / "bench" / "results.json").read_text())["rows"]}
    assert set(rows) == {"torchvision", "torch", "onnxruntime"}
    for row in rows.values():
        assert row["status"] == "ok" and row["map"] is not None, row
    assert rows["onnxruntime"]["parity"]["passed"] and rows["onnxruntime"]["parity"]["matched"] > 0
    # the named weights became a checkpoint once, named by their file
    assert (tmp_path / "runs" / "bench-models" / Path(url).stem / "model.safetensors").is_file()

    offline = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--model",
                              f"http://127.0.0.1:{closed_port()}/fasterrcnn_x-0123abcd.pth"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert offline.returncode == 2 and one_error_line(offline.stderr).startswith("error: cannot download")

    # COCO that cannot be had (the real archive URLs, behind a proxy nobody listens on): one
    # line before any export, not a silent fall-back to synthetic images
    proxy = f"http://127.0.0.1:{closed_port()}"
    no_coco = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--model", url, "--data",
                              f"coco-val2017:{tmp_path / 'empty'}"], cwd=tmp_path, capture_output=True, text=True,
                             env={**env, "http_proxy": proxy, "https_proxy": proxy, "no_proxy": ""}, timeout=300)
    line = one_error_line(no_coco.stderr)
    assert no_coco.returncode == 2 and "put it at" in line, line
    assert "http://images.cocodataset.org/annotations/annotations_trainval2017.zip" in line
