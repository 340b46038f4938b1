"""Training state under faults: damaged files give one-line errors; a failed write keeps the last checkpoint.

A real (tiny, one-step) run is damaged the ways a disk or a user damages it: the training state's
tensors truncated or gone, resume.json truncated or pointing at missing state, the weights
truncated. Each must end `python -m trainer --resume` (or loading the checkpoint) with exit 2 and
one line. A full disk (ENOSPC raised halfway through a write) while a checkpoint is written must
leave the previous checkpoint byte for byte, loadable, and the run resumable from it.
"""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch

import runtimes
from trainer import checkpoint
from trainer.train import main

RUN = ["--data", "shapes:train=2,val=1", "--canvas", "64x64", "--batch-size", "2", "--workers", "0",
       "--warmup-iters", "0"]


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "run"
    assert main([*RUN, "--epochs", "1", "--out", str(run)]) == 0
    return run


@pytest.fixture
def run(one_epoch_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(one_epoch_run, copy)
    return copy


def state_file(run: Path) -> Path:
    return run / json.loads((run / "resume.json").read_text())["tensors"]


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def edit_pointer(run: Path, **changes) -> None:
    state = json.loads((run / "resume.json").read_text())
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    (run / "resume.json").write_text(json.dumps(state))


DAMAGE = {
    "state tensors truncated": (lambda run: truncate(state_file(run)), "is unreadable"),
    "state tensors emptied": (lambda run: truncate(state_file(run), 0), "is unreadable"),
    "state tensors missing": (lambda run: state_file(run).unlink(), "is missing"),
    "state folder missing": (lambda run: shutil.rmtree(run / "state"), "is missing"),
    "pointer at missing state": (lambda run: edit_pointer(run, tensors="state/step-000000999-abcdef.safetensors"),
                                 "is missing"),
    "pointer outside the run": (lambda run: edit_pointer(run, tensors="../model.safetensors"), "under state/"),
    "pointer truncated": (lambda run: truncate(run / "resume.json"), "unreadable"),
    "pointer emptied": (lambda run: truncate(run / "resume.json", 0), "unreadable"),
    "pointer missing": (lambda run: (run / "resume.json").unlink(), "no training state to resume"),
    "pointer not an object": (lambda run: (run / "resume.json").write_text("[1, 2]"), "not a frcnn-deploy"),
    "pointer without optimizer": (lambda run: edit_pointer(run, optimizer=None), "'optimizer' is missing"),
    "pointer without config keys": (lambda run: edit_pointer(run, config={"data": "shapes"}), "config lacks"),
    "state of another model": (lambda run: shutil.copy(run / "model.safetensors", state_file(run)), "does not fit"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_training_state_is_one_line(damage, run, capsys):
    do, message = DAMAGE[damage]
    do(run)
    capsys.readouterr()
    assert main(["--resume", str(run), "--epochs", "2", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["model.safetensors", "last.safetensors"])
@pytest.mark.parametrize("keep", [0.5, 0.01, 0])
def test_truncated_weights_are_one_line(run, name, keep):
    truncate(run / name, keep)
    path = run if name == "model.safetensors" else run / name
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.load_checkpoint(path)
    assert name in str(e.value) and len(str(e.value).splitlines()) == 1
    with pytest.raises(runtimes.ModelLoadError) as e:
        runtimes.load(path)
    assert name in str(e.value) and len(str(e.value).splitlines()) == 1


def test_truncated_weights_without_their_json_are_one_line(run):
    (run / "model.json").unlink()  # the metadata then comes from the (truncated) header
    truncate(run / "model.safetensors", 0.3)
    with pytest.raises(checkpoint.CheckpointError, match="model.safetensors"):
        checkpoint.load_checkpoint(run)


# ------------------------------------------------------------------ a full disk while writing
class FullDisk:
    """Replaces a writer: it writes the first half of what it was asked to, then fails with ENOSPC."""

    def __init__(self, write):
        self.write, self.calls = write, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        self.write(*args, **kwargs)
        path = Path(args[1] if len(args) > 1 else kwargs.get("filename", args[0]))
        truncate(path)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_full_disk_while_writing_weights_keeps_the_previous_checkpoint(run, monkeypatch):
    before = snapshot(run)
    model, meta = checkpoint.load_checkpoint(run)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    monkeypatch.setattr(checkpoint, "save_file", FullDisk(checkpoint.save_file))
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device") as e:
        checkpoint.save_checkpoint(run / "model.safetensors", model, meta)
    assert "previous one is kept" in str(e.value) and len(str(e.value).splitlines()) == 1
    assert snapshot(run) == before  # no half file renamed into place, no temporary file left
    checkpoint.load_checkpoint(run)
    runtimes.load(run)


def test_full_disk_while_writing_metadata_keeps_the_weights_too(run, monkeypatch):
    """The .json is written after the .safetensors: neither is renamed into place until both are
    written, so the pair never mixes new weights with old metadata."""
    before = snapshot(run)
    model, meta = checkpoint.load_checkpoint(run)
    meta.provenance["epochs"] = 99
    real = Path.write_text

    def write_text(self, text, *a, **k):
        real(self, text[: len(text) // 2], *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device"):
        checkpoint.save_checkpoint(run / "model.safetensors", model, meta)
    monkeypatch.undo()
    assert snapshot(run) == before
    assert checkpoint.read_meta(run).provenance["epochs"] == 1


def test_full_disk_while_writing_training_state_keeps_the_previous_state(run, monkeypatch):
    saved, tensors = checkpoint.load_train_state(run)
    before = snapshot(run)
    monkeypatch.setattr(checkpoint, "save_file", FullDisk(checkpoint.save_file))
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device"):
        checkpoint.save_train_state(run, tensors, {k: v for k, v in saved.items() if k not in ("format", "tensors")})
    monkeypatch.undo()
    assert snapshot(run) == before

    # the tensors written, the pointer's write failing: the new tensors file goes, the old state stays
    real = checkpoint.atomic_write_text

    def pointer_fails(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "atomic_write_text", pointer_fails)
    with pytest.raises(checkpoint.CheckpointError, match="resume.json"):
        checkpoint.save_train_state(run, tensors, {k: v for k, v in saved.items() if k not in ("format", "tensors")})
    monkeypatch.setattr(checkpoint, "atomic_write_text", real)
    assert snapshot(run) == before
    again, _ = checkpoint.load_train_state(run)
    assert again == saved


def test_training_on_a_full_disk_stops_in_one_line_and_resumes(run, monkeypatch, capsys):
    """Epoch 2's checkpoint hits a full disk: one line, exit 2, epoch 1's files intact; once there
    is space again, --resume finishes the run."""
    before = snapshot(run)
    monkeypatch.setattr(checkpoint, "save_file", FullDisk(checkpoint.save_file))
    capsys.readouterr()
    assert main(["--resume", str(run), "--epochs", "2", "--workers", "0"]) == 2
    err = capsys.readouterr().err  # the progress bar's lines, then the error
    assert err.strip().splitlines()[-1].startswith("error: ") and err.count("error: ") == 1, err
    assert "No space left on device" in err and "previous one is kept" in err and "Traceback" not in err
    assert snapshot(run) == before  # the failed epoch wrote nothing: no half file, no temporary file
    assert checkpoint.load_train_state(run)[0]["progress"]["epoch"] == 1
    runtimes.load(run)

    monkeypatch.undo()
    assert main(["--resume", str(run), "--epochs", "2", "--workers", "0"]) == 0
    assert checkpoint.load_train_state(run)[0]["progress"]["epoch"] == 2
    assert checkpoint.read_meta(run / "last.json").provenance["epochs"] == 2
