"""Checkpoints: safetensors weights + JSON metadata, written atomically, loaded without pickle.

A run directory holds
    model.safetensors + model.json   best weights so far (what exporters read by default)
    last.safetensors  + last.json    weights of the last finished epoch
    resume.json -> state/step-N.safetensors   everything `--resume` needs

Each file is written to a temporary name and renamed into place, so a killed run never
leaves a half-written file; resume.json is renamed last and is the commit point of a
training-state checkpoint. torchvision `.pth` state dicts import with
`torch.load(weights_only=True)`, which refuses pickled code.
"""
from __future__ import annotations

import json
import os
import pickle
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from runtimes.meta import ModelMeta

from .models import ARCHS, build_model, default_meta


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and the reason."""


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def save_checkpoint(path: Path, model: torch.nn.Module, meta: ModelMeta) -> Path:
    """Write `path` (.safetensors) and its .json sidecar; the metadata is also in the header."""
    path = Path(path).with_suffix(".safetensors")
    text = meta.to_json()
    save_tensors(path, model.state_dict(), {"frcnn_deploy_meta": text})
    atomic_write_text(path.with_suffix(".json"), text)
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run directory (its model.safetensors), a .safetensors file, or a .json sidecar."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    elif p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.exists():
        raise CheckpointError(f"{path}: no checkpoint found (expected a run directory or a .safetensors file)")
    return p


def read_meta(path: str | os.PathLike) -> ModelMeta:
    """Metadata of a checkpoint: the .json sidecar if present (users may edit thresholds there), else the header."""
    p = resolve_checkpoint(path)
    side = p.with_suffix(".json")
    try:
        if side.exists():
            return ModelMeta.from_json(side.read_text())
        with safe_open(str(p), framework="pt") as f:
            header = (f.metadata() or {}).get("frcnn_deploy_meta")
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{p}: unreadable checkpoint metadata ({e})") from None
    if header is None:
        raise CheckpointError(f"{p}: no metadata (no {side.name} and none in the file header)")
    return ModelMeta.from_json(header)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, ModelMeta]:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    p = resolve_checkpoint(path)
    meta = read_meta(p)
    try:
        state = load_file(str(p), device=device)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{p}: unreadable safetensors file ({e})") from None
    model = build_model(meta)
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def load_pth(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A torchvision-format state dict. weights_only=True: a pickle carrying code is refused, never run."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported pickle content"
        raise CheckpointError(f"{path}: refused to load, the file holds more than tensors ({first})") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable .pth file ({str(e).splitlines()[0]})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # torchvision reference-script checkpoints
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return obj


def guess_arch(state: dict[str, torch.Tensor]) -> str:
    """Which torchvision architecture a state dict belongs to, from its keys."""
    if "backbone.body.layer1.0.conv1.weight" in state:
        if "backbone.body.layer4.0.conv3.weight" not in state:
            return "tiny"
        return "resnet50_fpn_v2" if "rpn.head.conv.1.0.weight" in state else "resnet50_fpn"
    if any(k.startswith("backbone.body.0.") for k in state):
        return "mobilenet_v3_large_fpn"
    raise CheckpointError("cannot tell the architecture from the state dict keys; pass --arch")


def import_pth(path: str | os.PathLike, arch: str | None = None, class_names: list[str] | None = None,
               canvas: tuple[int, int] | None = None) -> tuple[torch.nn.Module, ModelMeta]:
    """A torchvision `.pth` (e.g. fasterrcnn_resnet50_fpn's COCO weights) as our model + metadata."""
    from torchvision.models._meta import _COCO_CATEGORIES

    state = load_pth(path)
    arch = arch or guess_arch(state)
    if arch not in ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    n = state["roi_heads.box_predictor.cls_score.weight"].shape[0]
    if class_names is None:
        class_names = list(_COCO_CATEGORIES) if n == len(_COCO_CATEGORIES) else \
            ["__background__"] + [f"class_{i}" for i in range(1, n)]
    meta = default_meta(arch, class_names, canvas, provenance={"imported_from": Path(path).name})
    model = build_model(meta)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # torchvision's pretrained weights use FrozenBatchNorm2d, which has no num_batches_tracked
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not fit {arch} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), meta


def load_any(path: str | os.PathLike, device: str = "cpu", arch: str | None = None):
    """Our checkpoint (run dir, .safetensors, .json) or a torchvision .pth -> (model, meta)."""
    if str(path).endswith((".pth", ".pt")):
        model, meta = import_pth(path, arch)
        return model.to(device), meta
    return load_checkpoint(path, device)
