"""Checkpoints: safetensors weights + JSON metadata, written atomically, loaded without pickle.

A run directory holds
    model.safetensors + model.json   best weights so far (what exporters read by default)
    last.safetensors  + last.json    weights of the last finished epoch
    resume.json -> state/step-N.safetensors   everything `--resume` needs

Each file is written to a temporary name and renamed into place, so a killed run never
leaves a half-written file; resume.json is renamed last and is the commit point of a
training-state checkpoint. A checkpoint's two files are both written before either is
renamed, so a write that fails (a full disk) leaves the previous pair as it was; the
failure is a one-line CheckpointError. torchvision `.pth` state dicts import with
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

from runtimes.base import first_line, is_dir, is_file
from runtimes.errors import one_line
from runtimes.meta import ModelMeta

from .models import ARCHS, build_model, default_meta


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or written; one line naming the file and the reason."""

    def __init__(self, message: str = ""):
        super().__init__(one_line(message))


def atomic_write_all(writes) -> None:
    """For each (path, write) pair call write(tmp_path) and fsync; only when every file is
    written, rename each onto its path. A failing write leaves every path as it was."""
    tmps = []
    try:
        for path, write in writes:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmps.append((tmp, path))
            write(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        for tmp, path in tmps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename onto `path`."""
    atomic_write_all([(path, write)])


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def tensors_writer(tensors: dict[str, torch.Tensor], header: dict[str, str] | None = None):
    """write(tmp_path) of a safetensors file, for atomic_write."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return lambda tmp: save_file(tensors, str(tmp), metadata=header)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str] | None = None) -> None:
    atomic_write(path, tensors_writer(tensors, header))


def cannot_write(path, error: OSError) -> CheckpointError:
    return CheckpointError(f"{path}: cannot write the checkpoint ({error.strerror or first_line(error)}); "
                           "the previous one is kept")


def save_checkpoint(path: Path, model: torch.nn.Module, meta: ModelMeta) -> Path:
    """Write `path` (.safetensors) and its .json sidecar, both or neither; the metadata is also in
    the header. CheckpointError when they cannot be written (the previous pair stays)."""
    path = Path(path).with_suffix(".safetensors")
    text = meta.to_json()
    try:
        atomic_write_all([(path, tensors_writer(model.state_dict(), {"frcnn_deploy_meta": text})),
                          (path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))])
    except OSError as e:
        raise cannot_write(path, e) from None
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run directory (its model.safetensors), a .safetensors file, or a .json sidecar."""
    p = Path(path)
    if is_dir(p):
        p = p / "model.safetensors"
    elif p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not is_file(p):
        raise CheckpointError(f"{path}: no checkpoint found (expected a run directory or a .safetensors file)")
    return p


def read_meta(path: str | os.PathLike) -> ModelMeta:
    """Metadata of a checkpoint: the .json sidecar if present (users may edit thresholds there), else the header."""
    p = resolve_checkpoint(path)
    side = p.with_suffix(".json")
    try:
        if is_file(side):
            return ModelMeta.from_json(side.read_text())
        with safe_open(str(p), framework="pt") as f:
            header = (f.metadata() or {}).get("frcnn_deploy_meta")
        if header is None:
            raise CheckpointError(f"{p}: no metadata (no {side.name} and none in the file header)")
        return ModelMeta.from_json(header)
    except CheckpointError:
        raise
    except Exception as e:  # ValueError, OSError and safetensors' own error types
        raise CheckpointError(f"{p}: unreadable checkpoint metadata ({first_line(e)})") from None


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, ModelMeta]:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    p = resolve_checkpoint(path)
    meta = read_meta(p)
    try:
        state = load_file(str(p), device=device)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{p}: unreadable safetensors file ({first_line(e)})") from None
    try:
        model = build_model(meta)
    except (ValueError, TypeError, KeyError) as e:  # the metadata names no model this version builds
        raise CheckpointError(f"{p}: its metadata describes no model this version builds ({first_line(e)})") from None
    bad = [k for keys in state_mismatch(model, state) for k in keys]
    if bad:
        raise CheckpointError(f"{p}: the weights do not fit the {meta.arch!r} model this version builds "
                              f"({len(bad)} tensors missing, extra or misshapen, e.g. {bad[0]}); "
                              "retrain or re-import it")
    model.load_state_dict(state, strict=False)  # everything fits; see state_mismatch
    return model.to(device).eval(), meta


def load_pth(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A torchvision-format state dict. weights_only=True: a pickle carrying code is refused, never run."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported pickle content"
        raise CheckpointError(f"{path}: refused to load, the file holds more than tensors ({first})") from None
    except Exception as e:  # garbage makes zipfile, pickle and torch raise many types
        raise CheckpointError(f"{path}: not a readable .pth file ({first_line(e)})") from None
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
               canvas: tuple[int, int] | None = None,
               provenance: dict | None = None) -> tuple[torch.nn.Module, ModelMeta]:
    """A torchvision `.pth` (e.g. fasterrcnn_resnet50_fpn's COCO weights) as our model + metadata;
    `provenance` (where the weights came from) is added to the metadata's."""
    from torchvision.models._meta import _COCO_CATEGORIES

    state = load_pth(path)
    arch = arch or guess_arch(state)
    if arch not in ARCHS:
        raise CheckpointError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    head = state.get("roi_heads.box_predictor.cls_score.weight")
    if head is None or head.ndim != 2:
        raise CheckpointError(f"{path}: no class head (roi_heads.box_predictor.cls_score.weight) in the state dict")
    n = head.shape[0]
    if class_names is None:
        class_names = list(_COCO_CATEGORIES) if n == len(_COCO_CATEGORIES) else \
            ["__background__"] + [f"class_{i}" for i in range(1, n)]
    meta = default_meta(arch, class_names, canvas, provenance={"imported_from": Path(path).name, **(provenance or {})},
                        arch_kwargs={"frozen_bn": True} if pth_frozen_bn(state) else {})
    model = build_model(meta)
    missing, unexpected, misshapen = state_mismatch(model, state)
    if missing or unexpected or misshapen:
        raise CheckpointError(f"{path}: does not fit {arch} (missing {missing[:3]}, unexpected {unexpected[:3]}, "
                              f"other shapes {misshapen[:3]})")
    model.load_state_dict(state, strict=False)  # strict would ask for num_batches_tracked (see state_mismatch)
    return model.eval(), meta


def pth_frozen_bn(state: dict[str, torch.Tensor]) -> bool:
    """Whether a torchvision state dict comes from a FrozenBatchNorm2d backbone, as torchvision's
    pretrained weights do: it then has no num_batches_tracked there. Rebuild the same modules."""
    return not any(k.startswith("backbone.body.") and k.endswith("num_batches_tracked") for k in state)


def state_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[list, list, list]:
    """(missing, unexpected, misshapen) keys of `state` against `model`. A missing BatchNorm
    num_batches_tracked is not counted: it only counts batches, and pretrained files lack it."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in state if k in own and own[k].shape != state[k].shape]
    return missing, unexpected, misshapen


def load_any(path: str | os.PathLike, device: str = "cpu", arch: str | None = None):
    """Our checkpoint (run dir, .safetensors, .json), a torchvision .pth, or named weights
    (torchvision:NAME or a URL, downloaded and verified: see trainer.weights) -> (model, meta)."""
    from . import weights

    if weights.is_named(path):
        pretrained = weights.resolve(str(path), arch)
        model, meta = import_pth(pretrained.path, pretrained.arch or arch, pretrained.class_names,
                                 provenance=pretrained.provenance)
        return model.to(device), meta
    if str(path).endswith((".pth", ".pt")):
        model, meta = import_pth(path, arch)
        return model.to(device), meta
    return load_checkpoint(path, device)


# ---- training state for --resume: tensors in safetensors, everything else in JSON ----

RESUME_POINTER = "resume.json"
STATE_FORMAT = "frcnn-deploy-train/1"


def save_train_state(run_dir: str | os.PathLike, tensors: dict[str, torch.Tensor], state: dict) -> Path:
    """Write state/step-*.safetensors, then resume.json pointing at it (the commit point).

    A run killed at any moment leaves resume.json naming a complete tensors file: the new
    tensors are fully on disk before the pointer is renamed over the old one, and the old
    tensors file is removed only after that.
    """
    run_dir = Path(run_dir)
    name = f"state/step-{state['progress']['step']:09d}-{uuid.uuid4().hex[:6]}.safetensors"
    try:
        save_tensors(run_dir / name, tensors)
    except OSError as e:
        raise cannot_write(run_dir / name, e) from None
    try:
        atomic_write_text(run_dir / RESUME_POINTER, json.dumps({**state, "format": STATE_FORMAT, "tensors": name}))
    except OSError as e:
        (run_dir / name).unlink(missing_ok=True)  # never committed: the previous state stays the one
        raise cannot_write(run_dir / RESUME_POINTER, e) from None
    for old in (run_dir / "state").glob("step-*.safetensors"):
        if old.name != Path(name).name:
            old.unlink(missing_ok=True)
    return run_dir / RESUME_POINTER


def load_train_state(run_dir: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(the JSON state, its tensors) of the last committed training-state checkpoint. Never unpickles."""
    pointer = Path(run_dir) / RESUME_POINTER
    if not is_file(pointer):
        raise CheckpointError(f"{run_dir}: no training state to resume (no {RESUME_POINTER})")
    try:
        state = json.loads(pointer.read_text())
    except (ValueError, OSError, RecursionError) as e:
        raise CheckpointError(f"{pointer}: unreadable ({first_line(e)})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{pointer}: not a frcnn-deploy training state (format={found!r})")
    name = state.get("tensors")
    if not (isinstance(name, str) and name.startswith("state/") and ".." not in Path(name).parts):
        raise CheckpointError(f"{pointer}: 'tensors' must name a file under state/, got {name!r}")
    path = Path(run_dir) / name
    if not is_file(path):
        raise CheckpointError(f"{pointer}: its tensors file {name} is missing")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{pointer}: its tensors file {name} is unreadable ({first_line(e)})") from None
    return state, tensors


def optimizer_state_to_tensors(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors ("optimizer.<param>.<key>") and JSON."""
    tensors, per_param = {}, {}
    for index, values in sd["state"].items():
        plain = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                plain[key] = value
        per_param[str(index)] = plain
    return tensors, {"state": per_param, "param_groups": sd["param_groups"]}


def optimizer_state_from_tensors(plain: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """Inverse of optimizer_state_to_tensors."""
    state = {int(i): dict(v) for i, v in plain["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """This process's torch (CPU and CUDA), numpy and python RNG states as (tensors, JSON)."""
    import random

    import numpy as np

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    return tensors, {"numpy": [kind, int(pos), int(has_gauss), float(cached)],
                     "python": [version, list(internal), gauss_next]}


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict) -> None:
    """Inverse of rng_state."""
    import random

    import numpy as np

    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = plain["python"]
    random.setstate((version, tuple(internal), gauss_next))
