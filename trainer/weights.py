"""Pretrained weights by name: torchvision's COCO detectors and ImageNet backbones.

    coco                                             the --arch's COCO weights (trainer --weights)
    torchvision:resnet50_fpn                         an architecture's COCO weights (also
                                                     torchvision's name, fasterrcnn_resnet50_fpn)
    torchvision:FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1   any torchvision weights enum member
    https://host/name-<sha256 prefix>.pth            a URL, verified when its name carries a hash
    imagenet                                         the --arch's ImageNet backbone (--weights-backbone)

URLs, hashes, class names and published box AP come from the installed torchvision's
Weights enums. Files are downloaded once into torch's hub cache (`torch.hub.get_dir()`,
which honours TORCH_HOME), the same place torchvision itself keeps them, by
trainer.download: verified against the SHA-256 prefix in the file name (the torch.hub
convention torchvision follows, e.g. fasterrcnn_resnet50_fpn_coco-258fb6c6.pth), and never
left half-written. Loading goes through trainer.checkpoint.load_pth (weights_only).
"""
from __future__ import annotations

import inspect
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch

from .checkpoint import CheckpointError
from .download import Checksum, DownloadError, fetch
from .models import ARCHS

# torchvision keeps BatchNorm2d in the v2 backbone and freezes it in the others when they
# start from pretrained weights (norm_layer in torchvision.models.detection's builders).
FROZEN_BN_WHEN_PRETRAINED = {"resnet50_fpn": True, "resnet50_fpn_v2": False,
                             "mobilenet_v3_large_fpn": True, "mobilenet_v3_large_320_fpn": True}
PRETRAINED_ARCHS = tuple(a for a in ARCHS if a in FROZEN_BN_WHEN_PRETRAINED)


@dataclass
class Pretrained:
    """A weights file in the cache (or on disk) and what its name says about it."""

    path: Path
    arch: str | None = None  # None: a plain URL or file, guessed from the keys
    class_names: list[str] | None = None
    provenance: dict = field(default_factory=dict)


def is_named(spec: str | Path) -> bool:
    """Whether `spec` names weights to fetch rather than a file or run directory here."""
    text = str(spec)
    return text == "coco" or text.startswith(("torchvision:", "http://", "https://"))


def builder(arch: str):
    from torchvision.models import detection

    return getattr(detection, f"fasterrcnn_{arch}")


def coco_weights(arch: str):
    """torchvision's COCO weights enum member for one of our architectures."""
    from torchvision.models import get_model_weights

    if arch not in PRETRAINED_ARCHS:
        raise CheckpointError(f"torchvision has no COCO weights for {arch!r}; "
                              f"choose from {', '.join(PRETRAINED_ARCHS)}")
    return get_model_weights(builder(arch)).DEFAULT


def imagenet_weights(arch: str):
    """The ImageNet backbone weights torchvision's builder defaults to (the annotated enum's
    DEFAULT where the builder defaults to none, as fasterrcnn_resnet50_fpn_v2 does)."""
    if arch not in PRETRAINED_ARCHS:
        raise CheckpointError(f"no ImageNet backbone for {arch!r}; choose from {', '.join(PRETRAINED_ARCHS)}")
    param = inspect.signature(builder(arch)).parameters["weights_backbone"]
    if param.default is not None:
        return param.default
    enum = next(t for t in typing.get_args(param.annotation) if t is not type(None))
    return enum.DEFAULT


def _arch_of_enum(member) -> str | None:
    return next((a for a in PRETRAINED_ARCHS if type(coco_weights(a)) is type(member)), None)


def _enum_member(name: str):
    from torchvision.models import get_weight

    try:
        return get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise CheckpointError(f"torchvision:{name}: torchvision {_tv_version()} has no such weights "
                              "(expected e.g. torchvision:FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1)") from None


def _tv_version() -> str:
    import torchvision

    return torchvision.__version__


def _from_enum(member) -> tuple[str, dict]:
    """(url, provenance) of a weights enum member."""
    metrics = {k: v for split in member.meta.get("_metrics", {}).values() for k, v in split.items()}
    provenance = {"weights": f"torchvision:{type(member).__name__}.{member.name}", "url": member.url,
                  "torchvision_version": _tv_version()}
    if "box_map" in metrics:
        provenance["published_box_map"] = metrics["box_map"]
    return member.url, provenance


def lookup(spec: str, arch: str | None = None) -> tuple[str, str | None, list[str] | None, dict]:
    """(url, arch, class names, provenance) that detector weights `spec` names; no download."""
    if spec == "coco":
        if arch is None:
            raise CheckpointError(f"--weights coco needs --arch: one of {', '.join(PRETRAINED_ARCHS)}")
        member = coco_weights(arch)
    elif spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        short = name.removeprefix("fasterrcnn_")
        if short in ARCHS:
            member = coco_weights(short)
        elif "." in name:
            member = _enum_member(name)
        else:
            raise CheckpointError(f"{spec}: unknown; use torchvision:ARCH ({', '.join(PRETRAINED_ARCHS)}) "
                                  "or torchvision:ENUM.MEMBER, e.g. FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1")
        own = _arch_of_enum(member)
        if own is None:
            raise CheckpointError(f"{spec}: not Faster R-CNN detector weights"
                                  + (" (a backbone: pass it as --weights-backbone)"
                                     if "categories" in member.meta and len(member.meta["categories"]) == 1000
                                     else ""))
        if arch is not None and arch != own:
            raise CheckpointError(f"{spec} holds a {own} model, not --arch {arch}")
        arch = own
    elif spec.startswith(("http://", "https://")):  # nothing known beyond its name
        return spec, arch, None, {"weights": spec, "url": spec}
    else:
        raise CheckpointError(f"{spec}: not a weights name (coco, torchvision:NAME or a URL)")
    url, provenance = _from_enum(member)
    return url, arch, list(member.meta["categories"]), provenance


def resolve(spec: str, arch: str | None = None, progress: bool = True) -> Pretrained:
    """Detector weights `spec` (see the module docstring) as a verified local file."""
    url, arch, names, provenance = lookup(str(spec), arch)
    return Pretrained(download(url, progress), arch, names, provenance)


def resolve_backbone(spec: str, arch: str, progress: bool = True) -> Pretrained:
    """ImageNet backbone weights for `arch`: `imagenet`, torchvision:ENUM.MEMBER or a URL."""
    if arch not in PRETRAINED_ARCHS:
        raise CheckpointError(f"--weights-backbone: no pretrained backbone for {arch!r}; "
                              f"choose --arch from {', '.join(PRETRAINED_ARCHS)}")
    expected = type(imagenet_weights(arch))
    if spec == "imagenet":
        member = imagenet_weights(arch)
    elif spec.startswith("torchvision:"):
        member = _enum_member(spec.split(":", 1)[1])
        if type(member) is not expected:
            raise CheckpointError(f"--weights-backbone {spec}: {arch}'s backbone takes {expected.__name__}")
    elif spec.startswith(("http://", "https://")) or Path(spec).is_file():
        path = download(spec, progress) if is_named(spec) else Path(spec)
        return Pretrained(path, arch, None, {"weights_backbone": spec})
    else:
        raise CheckpointError(f"--weights-backbone {spec}: expected imagenet, torchvision:ENUM.MEMBER, "
                              "a URL or a .pth file")
    url, provenance = _from_enum(member)
    return Pretrained(download(url, progress), arch, None, {"weights_backbone": provenance["weights"], "url": url})


def cache_path(url: str) -> Path:
    """Where `url` is kept: torch's hub cache (TORCH_HOME/hub/checkpoints), by its file name."""
    name = Path(unquote(urlparse(url).path)).name
    if not name:
        raise CheckpointError(f"{url}: the URL names no file")
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def published_hash(url: str) -> Checksum | None:
    """The SHA-256 prefix in a file name like name-258fb6c6.pth (torch.hub's convention:
    eight or more hex digits after the last '-'); None when the name carries none."""
    m = torch.hub.HASH_REGEX.search(cache_path(url).name)
    return Checksum("sha256", m.group(1)) if m and len(m.group(1)) >= 8 else None


def download(url: str, progress: bool = True) -> Path:
    """The verified local copy of `url` in torch's hub cache, downloaded when missing."""
    try:
        return fetch(url, cache_path(url), published_hash(url), progress=progress)
    except DownloadError as e:
        raise CheckpointError(str(e)) from None


def load_backbone(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> int:
    """Copy an ImageNet classifier's state dict (torchvision's resnet50 or mobilenet_v3_large
    keys) into `model.backbone.body`; every backbone tensor must come from it. Returns the count."""
    body = model.backbone.body
    own = body.state_dict()
    # mobilenet's body is the classifier's `features`; ResNet's is the classifier minus `fc`
    prefix = "features." if any(k.startswith("features.") for k in state) else ""
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):] in own}
    missing = [k for k in own if k not in picked and not k.endswith("num_batches_tracked")]
    misshapen = [k for k, v in picked.items() if v.shape != own[k].shape]
    if missing or misshapen:
        raise CheckpointError(f"{source}: does not fit the backbone (missing {missing[:3]}, other shapes "
                              f"{misshapen[:3]})")
    body.load_state_dict(picked, strict=False)  # num_batches_tracked only counts batches
    return len(picked)


def run_name(spec: str) -> str:
    """A folder name for what named weights turn into, e.g. torchvision-resnet50_fpn."""
    text = Path(urlparse(spec).path).stem if spec.startswith(("http://", "https://")) else spec
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)
