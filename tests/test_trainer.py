"""The training loop: data pipeline, schedule, CLI errors, exact resume after SIGKILL, DDP, eval."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from safetensors.torch import load_file

from runtimes.coco import STAT_NAMES
from trainer import checkpoint
from trainer.data import build_datasets
from trainer.data.base import DetectionDataset, Sample
from trainer.loader import CanvasDataset, EpochBatchSampler, make_loader
from trainer.models import build_model, default_meta
from trainer.train import LRSchedule, main

REPO = Path(__file__).resolve().parents[1]
DATA = "shapes:train=16,val=4"
# 8 steps per epoch; states saved at steps 3, 6, 8 (epoch end), 9, 12, 15, 16
RUN_ARGS = ["--data", DATA, "--canvas", "128x128", "--batch-size", "2", "--epochs", "2", "--workers", "0",
            "--checkpoint-every", "3", "--seed", "1", "--warmup-iters", "2"]
TIMES = ("train_time_s", "eval_time_s")


def trainer_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "trainer", *map(str, args)]


def env() -> dict:
    # the repository importable for scripts started outside it (the DDP spy script)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def history(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- data pipeline

class ToyDataset(DetectionDataset):
    """One white box (class 1) and one crowd region (class 2) on a black 60x100 image; counts a skip per load."""

    def __init__(self, n: int = 4):
        super().__init__(class_names=["box", "crowd"], name="toy")
        self.n = n

    def __len__(self):
        return self.n

    def load(self, index):
        self.skip("test skips")
        image = np.zeros((60, 100, 3), np.uint8)
        image[10:20, 5:25] = 255
        boxes = np.array([[5, 10, 25, 20], [50, 30, 90, 50]], np.float32)
        return Sample(image, boxes, np.array([1, 2]), index + 1, f"{index}.png", iscrowd=np.array([False, True]))


def _white_box(image_chw: torch.Tensor) -> np.ndarray:
    ys, xs = np.nonzero(image_chw[0].numpy() > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("flip", [False, True])
def test_canvas_sample_boxes_follow_the_pixels(flip):
    item = CanvasDataset(ToyDataset(), (64, 128), train=True)[(0, flip)]
    assert item["image"].shape == (3, 64, 128) and item["image"].dtype == torch.uint8
    assert item["labels"].tolist() == [1]  # the crowd box is not a training target
    box = item["boxes"][0].numpy()
    np.testing.assert_allclose(box, _white_box(item["image"]), atol=1.5)
    assert (box[0] > 64) == flip  # flipped within the image, which stays top-left on the canvas
    assert item["image"][:, :, 107:].eq(0).all()  # letterbox padding on the right


def test_eval_samples_keep_crowd_boxes():
    item = CanvasDataset(ToyDataset(), (64, 128), train=False)[(0, False)]
    assert item["labels"].tolist() == [1, 2]


@pytest.mark.parametrize("workers", [0, 1])
def test_skip_counts_reach_the_main_process(workers):
    ds = ToyDataset(4)
    loader = make_loader(ds, (64, 128), EpochBatchSampler(4, 2, shuffle=False), train=True, workers=workers)
    for batch in loader:  # what the training loop does with each batch
        ds.skipped.update(batch["skipped"])
    assert ds.skipped == {"test skips": 4}


def test_sampler_is_a_pure_function_of_seed_epoch_position():
    s = EpochBatchSampler(10, 3, seed=7)
    s.set_epoch(2)
    full = list(s)
    assert len(full) == s.batches_per_epoch == 4 and sorted(i for b in full for i, _ in b) == list(range(10))
    s.set_epoch(2, start_batch=2)
    assert list(s) == full[2:] and len(s) == 2
    s.set_epoch(2)
    assert list(s) == full
    s.set_epoch(3)
    assert list(s) != full
    assert any(f for b in full for _, f in b) and not all(f for b in full for _, f in b)


def test_sampler_shards_like_distributed_sampler():
    shards = [EpochBatchSampler(11, 2, seed=0, rank=r, world_size=3) for r in range(3)]
    items = [[i for b in s for i, _ in b] for s in shards]
    assert {len(x) for x in items} == {4} and {len(list(s)) for s in shards} == {2}
    assert sorted(set().union(*items)) == list(range(11))  # every image, one padded repeat
    single = EpochBatchSampler(11, 12, seed=0).epoch_items(0)
    padded = single + single[:1]
    assert [list(s.epoch_items(0)) for s in shards] == [padded[r::3] for r in range(3)]


def test_lr_schedule():
    cos = LRSchedule(0.1, total_steps=100, warmup_steps=10)
    assert cos(0) == pytest.approx(0.1 * 0.001)
    assert cos(5) < cos(10) and cos(10) == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 0.1)))
    assert cos(99) < 1e-3 and all(cos(i) >= cos(i + 1) for i in range(10, 99))
    step = LRSchedule(0.1, total_steps=100, warmup_steps=0, kind="step")
    assert [step(i) for i in (0, 69, 70, 89, 90)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


# ---------------------------------------------------------------- command line

@pytest.mark.parametrize("args, message", [
    (["--arch", "bogus"], "unknown --arch"),
    (["--data", "/no/such/dataset"], "/no/such/dataset"),
    (["--amp", "--data", "shapes:train=2,val=1"], "--amp needs a CUDA device"),
    (["--device", "nonsense"], "not a torch device"),
    (["--resume", "/no/such/run"], "no training state"),
])
def test_cli_errors_are_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


@pytest.mark.parametrize("args", [["--canvas", "100x100"], ["--canvas", "big"], ["--epochs", "0"], ["--lr", "-1"]])
def test_bad_option_values_are_one_line(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0]


def test_help():
    r = subprocess.run(trainer_cmd("--help"), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--resume" in r.stdout and "torchrun" in r.stdout


# ---------------------------------------------------------------- fine-tuning

def test_fine_tune_from_torchvision_pth(tmp_path, capsys):
    torch.manual_seed(3)
    source = build_model(default_meta("tiny", ["__background__", *"abcde"], (64, 64)))
    with torch.no_grad():
        source.backbone.body.bn1.running_mean.uniform_(-1, 1)  # recognisable statistics
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "five.pth")
    run = tmp_path / "ft"
    assert main(["--weights", str(tmp_path / "five.pth"), "--data", "shapes:train=2,val=1", "--canvas", "64x64",
                 "--batch-size", "2", "--epochs", "1", "--workers", "0", "--out", str(run)]) == 0
    assert "class head re-initialised (6 classes in five.pth, 4 here)" in capsys.readouterr().out
    model, meta = checkpoint.load_checkpoint(run / "last.safetensors")  # rebuilds frozen BN from the metadata
    assert meta.arch == "tiny" and meta.arch_kwargs == {"frozen_bn": True} and meta.num_classes == 4
    # frozen: training did not move the imported statistics
    assert torch.equal(model.backbone.body.bn1.running_mean, state["backbone.body.bn1.running_mean"])

    # fine-tune again from our own checkpoint: same classes, frozen BN carried over
    run2 = tmp_path / "ft2"
    assert main(["--weights", str(run), "--data", "shapes:train=2,val=1", "--epochs", "1", "--batch-size", "2",
                 "--workers", "0", "--out", str(run2)]) == 0
    assert checkpoint.read_meta(run2).arch_kwargs == {"frozen_bn": True}
    assert checkpoint.read_meta(run2).canvas == (256, 256)

    assert main(["--weights", str(run), "--arch", "resnet50_fpn", "--data", "shapes:train=2,val=1"]) == 2
    assert "holds a tiny model, not --arch resnet50_fpn" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "five.pth"), "--arch", "mobilenet_v3_large_fpn",
                 "--data", "shapes:train=2,val=1", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit the model" in err[0]


def test_fine_tune_from_a_batchnorm_pth(tmp_path):
    """A state dict saved from a BatchNorm model (num_batches_tracked present) keeps BatchNorm."""
    torch.manual_seed(4)
    source = build_model(default_meta("tiny", ["__background__", *"abc"], (64, 64)))
    torch.save(source.state_dict(), tmp_path / "bn.pth")
    run = tmp_path / "ft"
    assert main(["--weights", str(tmp_path / "bn.pth"), "--data", "shapes:train=2,val=1", "--canvas", "64x64",
                 "--batch-size", "2", "--epochs", "1", "--workers", "0", "--out", str(run)]) == 0
    assert checkpoint.read_meta(run).arch_kwargs == {}


# ---------------------------------------------------------------- exact resume after SIGKILL

@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """An uninterrupted run: 2 epochs of 8 steps."""
    run = tmp_path_factory.mktemp("full") / "run"
    r = subprocess.run(trainer_cmd(*RUN_ARGS, "--out", run), cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return run


def test_run_dir_contents(full_run):
    for name in ("model.safetensors", "model.json", "last.safetensors", "last.json", "metrics.jsonl",
                 "loss.png", "map.png", "resume.json"):
        assert (full_run / name).is_file(), name
    assert (full_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = history(full_run)
    assert [r["epoch"] for r in records] == [1, 2] and [r["step"] for r in records] == [8, 16]
    assert all(set(STAT_NAMES) == set(r["coco"]) for r in records)
    meta = checkpoint.read_meta(full_run / "last.json")
    assert meta.category_ids == [0, 1, 2, 3] and meta.class_names[0] == "__background__"
    assert meta.provenance["dataset"] == DATA and meta.provenance["epochs"] == 2
    assert meta.provenance["toolkit_version"] and meta.provenance["date"]


def test_sigkill_mid_epoch_then_resume_is_exact(full_run, tmp_path):
    run = tmp_path / "killed"
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.Popen(trainer_cmd(*RUN_ARGS, "--out", run), cwd=REPO, stdout=log, stderr=log)
        pointer, deadline = run / "resume.json", time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if pointer.exists() and json.loads(pointer.read_text())["progress"]["step"] >= 3:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "log").read_text()[-2000:]
    killed_at = json.loads(pointer.read_text())["progress"]
    assert 0 < killed_at["batch"] < 8 and killed_at["step"] < 16  # stopped in the middle of an epoch

    r = subprocess.run(trainer_cmd("--resume", run, "--workers", "0"), cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"batch {killed_at['batch']}, step {killed_at['step']}" in r.stdout

    assert history(run) == history(full_run)
    ours, reference = load_file(run / "last.safetensors"), load_file(full_run / "last.safetensors")
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours)
    done, ref_done = json.loads(pointer.read_text()), json.loads((full_run / "resume.json").read_text())
    assert done["progress"]["step"] == ref_done["progress"]["step"] == 16
    assert done["progress"]["steps"] == ref_done["progress"]["steps"]  # loss curve too

    # a finished run resumes to nothing; changing the recipe of a run is refused
    r = subprocess.run(trainer_cmd("--resume", run, "--lr", "0.5"), cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "cannot change --lr" in r.stderr


# ---------------------------------------------------------------- evaluation CLI

def test_eval_cli_matches_pycocotools(full_run, tmp_path):
    """The printed numbers are pycocotools' on the written results JSON.

    A model trained for a few steps scores 0 on the real boxes, which would make the
    comparison empty; so the ground truth here is the val images with some of the model's
    own detections (shifted a little) added as objects, which gives numbers between 0 and 1.
    """
    from trainer.data.shapes import write_coco
    from trainer.eval import predict

    ckpt = tmp_path / "ckpt"  # keep low-score detections too
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes((full_run / "last.safetensors").read_bytes())
    meta = json.loads((full_run / "last.json").read_text())
    (ckpt / "model.json").write_text(json.dumps({**meta, "box_score_thresh": 0.001}))
    val = build_datasets(DATA)[1]
    model, meta = checkpoint.load_checkpoint(ckpt)
    detections = predict(model, val, meta, progress=False)
    gt_file = write_coco(val, tmp_path / "set", progress=False)
    gt = json.loads(gt_file.read_text())
    for image in gt["images"]:
        mine = sorted((d for d in detections if d["image_id"] == image["id"]), key=lambda d: -d["score"])
        for i, d in enumerate(mine[:8]):
            x, y, w, h = d["bbox"]
            gt["annotations"].append(dict(id=len(gt["annotations"]) + 1, image_id=image["id"],
                                          category_id=d["category_id"], bbox=[x + i % 3, y, w, h], area=w * h,
                                          iscrowd=0))
    gt_file.write_text(json.dumps(gt))

    out = tmp_path / "results.json"
    r = subprocess.run([sys.executable, "-m", "trainer.eval", "--checkpoint", str(ckpt), "--data", str(gt_file),
                        "--val-data", str(gt_file), "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    printed = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\s*(\S.*?): (-?\d+\.\d{4})$", r.stdout, re.M)}
    assert set(printed) == set(STAT_NAMES), r.stdout

    coco_gt = COCO(str(gt_file))
    ev = COCOeval(coco_gt, coco_gt.loadRes(str(out)), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert 0.05 < ev.stats[0] < 0.95  # informative numbers, not all 0 or 1
    for name, value in zip(STAT_NAMES, ev.stats):
        assert printed[name] == pytest.approx(value, abs=5e-5), name


def test_eval_cli_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "trainer.eval", "--checkpoint", str(tmp_path / "none")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no checkpoint" in r.stderr


# ---------------------------------------------------------------- DDP

SPY = """
import os, sys
log = open(sys.argv[1] + ".rank" + os.environ["RANK"], "w")
real_replace = os.replace
def replace(src, dst, *a, **k):  # every file the trainer writes lands through os.replace
    log.write(str(dst) + "\\n")
    log.flush()
    return real_replace(src, dst, *a, **k)
os.replace = replace
from trainer.train import main
raise SystemExit(main(sys.argv[2:]))
"""


def test_ddp_two_cpu_processes_only_rank0_writes(tmp_path):
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    run = tmp_path / "ddp"
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(spy),
         str(tmp_path / "writes"), "--data", "shapes:train=8,val=2", "--canvas", "128x128", "--batch-size", "2",
         "--epochs", "1", "--workers", "0", "--checkpoint-every", "1", "--out", str(run)],
        cwd=tmp_path, env={**env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("epoch 1:") == 1 and "x 2 process(es)" in r.stdout
    rank0 = (tmp_path / "writes.rank0").read_text().split()
    rank1 = (tmp_path / "writes.rank1").read_text().split()
    assert rank1 == []
    assert {Path(p).name for p in rank0} >= {"model.safetensors", "last.safetensors", "metrics.jsonl",
                                             "resume.json", "loss.png", "map.png"}
    (record,) = history(run)
    assert record["step"] == 2 and record["images"] == 8  # 8 images = 2 steps x 2 images x 2 processes
    state = json.loads((run / "resume.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert {k.split(".")[1] for k in load_file(run / state["tensors"]) if k.startswith("rng.")} == {"0", "1"}
