"""Checkpoints and training state: no pickle is ever run, writes are atomic, state round-trips."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from trainer import checkpoint
from trainer.models import build_model, default_meta

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["__background__", "circle", "square", "triangle"]


class _Payload:
    """Unpickling this runs exec(): it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _evil_pth(tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / "evil.pth"
    torch.save({"backbone.body.conv1.weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    return path


def test_evil_payload_is_live(tmp_path):
    # proves the payload used below really runs code when unpickled without weights_only
    marker = tmp_path / "ran"
    torch.load(_evil_pth(tmp_path, marker), weights_only=False)
    assert marker.exists()


def test_load_pth_refuses_pickled_code(tmp_path):
    marker = tmp_path / "ran"
    path = _evil_pth(tmp_path, marker)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load_pth(path)
    assert "refused" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_trainer_cli_refuses_pickled_code(tmp_path):
    marker = tmp_path / "ran"
    path = _evil_pth(tmp_path, marker)
    r = subprocess.run([sys.executable, "-m", "trainer", "--weights", str(path), "--data", "shapes:train=2,val=1",
                        "--out", str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "refused" in err[0], r.stderr
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


def test_load_pth_reads_a_state_dict(tmp_path):
    model = build_model(default_meta("tiny", CLASSES, (64, 64)))
    torch.save(model.state_dict(), tmp_path / "ok.pth")
    state = checkpoint.load_pth(tmp_path / "ok.pth")
    assert set(state) == set(model.state_dict())
    assert checkpoint.guess_arch(state) == "tiny"


def test_frozen_bn_is_recorded_and_rebuilt(tmp_path):
    meta = default_meta("tiny", CLASSES, (64, 64), arch_kwargs={"frozen_bn": True})
    model = build_model(meta)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.body.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.body.modules())
    checkpoint.save_checkpoint(tmp_path / "model.safetensors", model, meta)
    assert json.loads((tmp_path / "model.json").read_text())["arch_kwargs"] == {"frozen_bn": True}
    loaded, loaded_meta = checkpoint.load_checkpoint(tmp_path)  # strict load: same modules
    assert loaded_meta.arch_kwargs == {"frozen_bn": True}
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_weights_of_another_model_are_one_clear_error(tmp_path):
    from trainer.models import _tiny

    meta = default_meta("tiny", CLASSES, (64, 64))
    resnet18 = _tiny(len(CLASSES), blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512))  # not what "tiny" builds
    checkpoint.save_checkpoint(tmp_path / "model.safetensors", resnet18, meta)
    with pytest.raises(checkpoint.CheckpointError, match=r"do not fit the 'tiny' model .* e\.g\. backbone\."):
        checkpoint.load_checkpoint(tmp_path)


@pytest.mark.parametrize("opt_class", [torch.optim.SGD, torch.optim.AdamW])
def test_optimizer_state_round_trip(tmp_path, opt_class):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = opt_class(net.parameters(), lr=0.1, **({"momentum": 0.9} if opt_class is torch.optim.SGD else {}))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 4)).square().sum().backward()
        opt.step()
    tensors, plain = checkpoint.optimizer_state_to_tensors(opt.state_dict())
    checkpoint.save_tensors(tmp_path / "t.safetensors", tensors)
    plain = json.loads(json.dumps(plain))  # must survive JSON
    from safetensors.torch import load_file
    restored = checkpoint.optimizer_state_from_tensors(plain, load_file(tmp_path / "t.safetensors"))
    opt2 = opt_class(net.parameters(), lr=0.5)
    opt2.load_state_dict(restored)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == [dict(g, **({"betas": tuple(g["betas"])} if "betas" in g else {}))
                                 for g in b["param_groups"]]
    for i in a["state"]:
        for k, v in a["state"][i].items():
            assert torch.equal(v, b["state"][i][k]), (i, k)


def test_rng_state_round_trip():
    tensors, plain = checkpoint.rng_state()
    plain = json.loads(json.dumps(plain))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123), np.random.seed(5), random.seed(7)
    checkpoint.set_rng_state(tensors, plain)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def _state(step: int) -> dict:
    return {"progress": {"step": step}, "config": {}}


def test_train_state_pointer_is_the_commit_point(tmp_path, monkeypatch):
    checkpoint.save_train_state(tmp_path, {"w": torch.ones(2)}, _state(1))
    first = json.loads((tmp_path / "resume.json").read_text())["tensors"]

    # a run killed after writing the new tensors but before renaming the pointer
    def die(path, text):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "atomic_write_text", die)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_train_state(tmp_path, {"w": torch.full((2,), 2.0)}, _state(2))
    monkeypatch.undo()
    state, tensors = checkpoint.load_train_state(tmp_path)
    assert state["tensors"] == first and state["progress"]["step"] == 1
    assert torch.equal(tensors["w"], torch.ones(2))
    assert not list(tmp_path.glob("**/.*.tmp"))  # no temporary file left behind

    checkpoint.save_train_state(tmp_path, {"w": torch.full((2,), 3.0)}, _state(3))
    state, tensors = checkpoint.load_train_state(tmp_path)
    assert state["progress"]["step"] == 3 and torch.equal(tensors["w"], torch.full((2,), 3.0))
    assert [p.name for p in (tmp_path / "state").iterdir()] == [Path(state["tensors"]).name]  # old ones removed


def test_load_train_state_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no training state"):
        checkpoint.load_train_state(tmp_path)
    (tmp_path / "resume.json").write_text(json.dumps({"format": "frcnn-deploy-train/1", "tensors": "state/x"}))
    with pytest.raises(checkpoint.CheckpointError, match="state/x is missing"):
        checkpoint.load_train_state(tmp_path)
