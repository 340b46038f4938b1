"""Model builders: torchvision's Faster R-CNN definitions plus a tiny CPU model.

Every builder returns a plain torchvision `FasterRCNN`, configured from a `ModelMeta`
so that a checkpoint's metadata alone rebuilds the same module tree.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.models.detection import (
    FasterRCNN,
    fasterrcnn_mobilenet_v3_large_320_fpn,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign, misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from runtimes.meta import ModelMeta


def resnet_body(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)) -> ResNet:
    """A ResNet of BasicBlocks with the given stage widths and depths (ResNet18 by default)."""
    body = ResNet(BasicBlock, list(blocks), norm_layer=nn.BatchNorm2d)
    if tuple(widths) != (64, 128, 256, 512):
        body.inplanes = widths[0]
        body.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        body.bn1 = nn.BatchNorm2d(widths[0])
        for i, (w, n) in enumerate(zip(widths, blocks)):
            setattr(body, f"layer{i + 1}", body._make_layer(BasicBlock, w, n, stride=1 if i == 0 else 2))
        for m in body.modules():  # ResNet's own initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return body


def _tiny(num_classes: int, fpn_channels: int = 64, representation: int = 256,
          anchor_sizes=(16, 32, 64, 128, 256), blocks=(1, 1, 1, 1), widths=(32, 64, 128, 256),
          sampling_ratio: int = 1, **kwargs) -> FasterRCNN:
    """A half-width ResNet10-FPN with narrow FPN channels and a small box head: learns `shapes`
    in minutes on a CPU. blocks=(2, 2, 2, 2) and widths=(64, 128, 256, 512) give ResNet18.

    sampling_ratio is the box RoIAlign's (1: one sample per bin; on shapes, 0.9x the step time
    of 2 on 2 CPU cores, mAP within 0.005 after 1300 steps).
    """
    backbone = BackboneWithFPN(
        resnet_body(widths, blocks),
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=list(widths),
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    return FasterRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(fpn_channels, anchors.num_anchors_per_location()[0]),
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, sampling_ratio),
        box_head=TwoMLPHead(fpn_channels * 7 * 7, representation),
        box_predictor=FastRCNNPredictor(representation, num_classes),
        **kwargs,
    )


def _torchvision(fn, num_classes: int, **kwargs) -> FasterRCNN:
    # weights are loaded by the trainer (`--weights`), never downloaded here
    return fn(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)


ARCHS = {
    "resnet50_fpn": partial(_torchvision, fasterrcnn_resnet50_fpn),
    "resnet50_fpn_v2": partial(_torchvision, fasterrcnn_resnet50_fpn_v2),
    "mobilenet_v3_large_fpn": partial(_torchvision, fasterrcnn_mobilenet_v3_large_fpn),
    "mobilenet_v3_large_320_fpn": partial(_torchvision, fasterrcnn_mobilenet_v3_large_320_fpn),
    "tiny": _tiny,
}

# Canvas (H, W) per architecture, following torchvision's min_size/max_size, rounded to /32.
DEFAULT_CANVAS = {
    "resnet50_fpn": (800, 1344),
    "resnet50_fpn_v2": (800, 1344),
    "mobilenet_v3_large_fpn": (800, 1344),
    "mobilenet_v3_large_320_fpn": (320, 640),
    "tiny": (256, 256),
}

# Post-processing defaults that differ from torchvision's per architecture.
ARCH_DEFAULTS = {
    "mobilenet_v3_large_fpn": dict(rpn_pre_nms_top_n=1000, rpn_post_nms_top_n=1000, rpn_score_thresh=0.05),
    "mobilenet_v3_large_320_fpn": dict(rpn_pre_nms_top_n=150, rpn_post_nms_top_n=150, rpn_score_thresh=0.05),
    "tiny": dict(rpn_pre_nms_top_n=300, rpn_post_nms_top_n=100),
}

# Training-time sampling for the tiny model: few objects per image, so fewer samples suffice.
TRAIN_KWARGS = {
    "tiny": dict(rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
                 rpn_batch_size_per_image=128, box_batch_size_per_image=128),
}


def default_meta(arch: str, class_names: list[str], canvas: tuple[int, int] | None = None, **overrides) -> ModelMeta:
    """Metadata for a new model: class_names[0] must be the background."""
    if arch not in ARCHS:
        raise ValueError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHS)}")
    kw = dict(ARCH_DEFAULTS.get(arch, {}))
    kw.update(overrides)
    return ModelMeta(arch=arch, class_names=list(class_names), canvas=tuple(canvas or DEFAULT_CANVAS[arch]), **kw)


def build_model(meta: ModelMeta, frozen_bn: bool = False) -> FasterRCNN:
    """The torchvision FasterRCNN that `meta` describes, randomly initialised.

    The internal transform is set to the canvas so that a letterboxed canvas passes
    through unresized; post-processing thresholds come from `meta`.
    `frozen_bn` (or `meta.arch_kwargs["frozen_bn"]`) swaps the backbone's BatchNorm for
    FrozenBatchNorm2d (fine-tuning from pretrained weights with small batches), which
    computes the same in eval mode.
    """
    if meta.arch not in ARCHS:
        raise ValueError(f"unknown architecture {meta.arch!r}; choose from {', '.join(ARCHS)}")
    h, w = meta.canvas
    if h % 32 or w % 32:
        raise ValueError(f"canvas {h}x{w} must be a multiple of 32 on both sides")
    kwargs = dict(meta.arch_kwargs)
    # recorded by the trainer when it fine-tunes from torchvision weights, so that a
    # checkpoint rebuilds the same modules (FrozenBatchNorm2d has no num_batches_tracked)
    frozen_bn = bool(kwargs.pop("frozen_bn", False)) or frozen_bn
    kwargs.update(TRAIN_KWARGS.get(meta.arch, {}))
    model = ARCHS[meta.arch](
        meta.num_classes,
        min_size=min(h, w),
        max_size=max(h, w),
        image_mean=list(meta.image_mean),
        image_std=list(meta.image_std),
        rpn_pre_nms_top_n_test=meta.rpn_pre_nms_top_n,
        rpn_post_nms_top_n_test=meta.rpn_post_nms_top_n,
        rpn_nms_thresh=meta.rpn_nms_thresh,
        rpn_score_thresh=meta.rpn_score_thresh,
        box_score_thresh=meta.box_score_thresh,
        box_nms_thresh=meta.box_nms_thresh,
        box_detections_per_img=meta.detections_per_img,
        **kwargs,
    )
    if frozen_bn:
        freeze_batchnorm(model.backbone.body)
    return model


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d under `module` by a FrozenBatchNorm2d with the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = misc_nn_ops.FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def parse_canvas(text: str) -> tuple[int, int]:
    """'HxW' (or 'S' for SxS) -> (H, W), both positive multiples of 32; an argparse type."""
    import argparse
    import re

    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad canvas {text!r}: expected HxW, e.g. 256x256")
    h, w = int(m.group(1)), int(m.group(2) or m.group(1))
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f"bad canvas {text!r}: both sides must be positive multiples of 32")
    return h, w


def set_canvas(model: FasterRCNN, meta: ModelMeta, canvas: tuple[int, int]) -> ModelMeta:
    """Run `model` on another canvas: its transform passes that canvas through unresized."""
    meta.canvas = tuple(canvas)
    model.transform.min_size = (min(canvas),)
    model.transform.max_size = max(canvas)
    return meta


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def canvas_forward(model: FasterRCNN, canvas_batch: torch.Tensor) -> list[dict]:
    """torchvision's eager forward on uint8 NHWC canvas images (the reference for parity)."""
    images = canvas_batch.permute(0, 3, 1, 2).float().div(255)
    return model(list(images))
