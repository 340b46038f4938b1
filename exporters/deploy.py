"""The deploy graph: torchvision's trained Faster R-CNN modules with static-shape glue.

`DeployFasterRCNN` follows the deployed-model contract of DESIGN.md: uint8 NHWC RGB canvas
in; num_detections [B] int32, boxes [B, K, 4], scores [B, K], labels [B, K] int32 out.
Backbone+FPN, RPN head, box head and predictor are the trained modules themselves; only
the glue is re-written: anchors as constants for the fixed canvas, per-level top-k,
decoding, clipping, small-box removal as masking, NMS and multi-level RoIAlign through the
custom ops in exporters.ops, class-specific decoding and the final per-class NMS + top-K.

Semantics are torchvision's FasterRCNN post-processing. Deliberate differences:
- the image is letterboxed onto a fixed canvas instead of resized to min_size/max_size
  and padded to a multiple of 32 (torchvision pads the normalised image with 0, we pad
  the uint8 image with 0; for canvas-sized input both see the same pixels);
- removed boxes are masked (score -inf) instead of dropped, so every tensor has a fixed
  shape; padded proposals take part in no later step.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign

from runtimes.meta import ModelMeta

from . import ops

NEG_INF = -math.inf


def _gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """x [B, N, ...], idx [B, K] -> [B, K, ...]."""
    expand = idx.reshape(*idx.shape, *([1] * (x.dim() - 2))).expand(*idx.shape, *x.shape[2:])
    return torch.gather(x, 1, expand)


def _pad_to(x: Tensor, k: int, value=0) -> Tensor:
    """Pad dim 1 of x up to k entries."""
    if x.shape[1] >= k:
        return x
    pad = [0, 0] * (x.dim() - 2) + [0, k - x.shape[1]]
    return F.pad(x, pad, value=value)


class DeployFasterRCNN(nn.Module):
    def __init__(self, model: FasterRCNN, meta: ModelMeta, half: bool = False):
        super().__init__()
        model = model.eval()
        # half: the networks run in fp16 while anchors, box decoding, NMS inputs and RoI
        # coordinates stay fp32 (the mixed-precision graph TensorRT 11 builds strongly typed)
        self.fp16 = half
        self.meta = meta
        self.canvas = tuple(meta.canvas)
        self.backbone = model.backbone
        self.rpn_head = model.rpn.head
        self.box_head = model.roi_heads.box_head
        self.box_predictor = model.roi_heads.box_predictor
        self.rpn_box_coder = model.rpn.box_coder
        self.box_coder = model.roi_heads.box_coder
        self.rpn_min_size = model.rpn.min_size
        mean = torch.tensor(meta.image_mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        std = torch.tensor(meta.image_std, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

        # Anchors are constants for the fixed canvas: take them from the model's own generator.
        h, w = self.canvas
        device = next(model.parameters()).device
        blank = torch.zeros(1, 3, h, w, device=device)
        with torch.no_grad():
            named = self.backbone(blank)
            feats = list(named.values())
            anchors = model.rpn.anchor_generator(ImageList(blank, [(h, w)]), feats)[0]
        self.num_anchors = [f.shape[-2] * f.shape[-1] * self.rpn_head.cls_logits.out_channels for f in feats]
        self.register_buffer("anchors", anchors, persistent=False)
        if half:
            import copy

            # copies: the caller's fp32 model stays as it is
            for name in ("backbone", "rpn_head", "box_head", "box_predictor"):
                setattr(self, name, copy.deepcopy(getattr(self, name)).half())

        # RoIAlign levels and scales as MultiScaleRoIAlign infers them for this canvas.
        pool: MultiScaleRoIAlign = model.roi_heads.box_roi_pool
        # like MultiScaleRoIAlign, pool from those named levels the backbone has (MobileNet: two)
        self.pool_levels = [i for i, n in enumerate(named) if n in pool.featmap_names]
        scales = [2.0 ** round(math.log2(feats[i].shape[-2] / h)) for i in self.pool_levels]
        self.roi_align_args = dict(
            pooled_size=int(pool.output_size[0]), sampling_ratio=int(pool.sampling_ratio), spatial_scales=scales,
            canonical_scale=224.0, canonical_level=4, first_level=int(-math.log2(scales[0])), aligned=False)

    # ------------------------------------------------------------------ stages
    def normalize(self, images: Tensor) -> Tensor:
        """uint8 [B, H, W, 3] -> normalised float [B, 3, H, W], as torchvision's transform computes it."""
        # cast first: TensorRT's ONNX parser allows uint8 only as a network input feeding a Cast
        x = images.to(torch.float32).permute(0, 3, 1, 2).div(255)
        x = (x - self.mean) / self.std
        return x.half() if self.fp16 else x

    def clip(self, boxes: Tensor) -> Tensor:
        h, w = self.canvas
        x = boxes[..., 0::2].clamp(0, w)
        y = boxes[..., 1::2].clamp(0, h)
        return torch.stack((x, y), dim=-1).reshape(boxes.shape)

    @staticmethod
    def wide_enough(boxes: Tensor, min_size: float) -> Tensor:
        return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)

    def proposals(self, feats: list[Tensor]) -> tuple[Tensor, Tensor]:
        """RPN: per-level top-k, decode, clip, small-box removal, per-level NMS -> [B, P, 4] and count [B]."""
        meta = self.meta
        logits, deltas = self.rpn_head(feats)
        logits, deltas = [t.float() for t in logits], [t.float() for t in deltas]
        b = feats[0].shape[0]
        boxes, scores, levels = [], [], []
        offset = 0
        for level, (obj, reg, n) in enumerate(zip(logits, deltas, self.num_anchors)):
            # same layout as torchvision's concat_box_prediction_layers: (H, W, A) order
            a = obj.shape[1]
            obj = obj.reshape(b, a, 1, obj.shape[-2], obj.shape[-1]).permute(0, 3, 4, 1, 2).reshape(b, -1)
            reg = reg.reshape(b, a, 4, reg.shape[-2], reg.shape[-1]).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
            k = min(meta.rpn_pre_nms_top_n, n)
            top, idx = obj.topk(k, dim=1)
            anchors = self.anchors[offset: offset + n][idx]  # [B, k, 4]
            decoded = self.rpn_box_coder.decode_single(_gather_rows(reg, idx).reshape(-1, 4), anchors.reshape(-1, 4))
            boxes.append(decoded.reshape(b, k, 4))
            scores.append(top)
            levels.append(torch.full((b, k), level, dtype=torch.int64, device=top.device))
            offset += n
        boxes = self.clip(torch.cat(boxes, 1))
        probs = torch.sigmoid(torch.cat(scores, 1))
        keep = self.wide_enough(boxes, self.rpn_min_size) & (probs >= meta.rpn_score_thresh)
        probs = torch.where(keep, probs, torch.full_like(probs, NEG_INF))
        post = min(meta.rpn_post_nms_top_n, boxes.shape[1])
        count, idx = ops.batched_nms(boxes, probs, torch.cat(levels, 1), meta.rpn_nms_thresh, NEG_INF, post)
        proposals = _gather_rows(boxes, idx)
        valid = torch.arange(post, device=idx.device)[None] < count[:, None]
        return torch.where(valid[..., None], proposals, 0.0), valid

    def detections(self, feats: list[Tensor], proposals: Tensor, valid: Tensor) -> tuple[Tensor, ...]:
        """Box head on every proposal slot, class-specific decoding, per-class NMS, top-K."""
        meta = self.meta
        b, p = proposals.shape[:2]
        pooled = ops.multilevel_roi_align(proposals, [feats[i] for i in self.pool_levels], **self.roi_align_args)
        class_logits, box_regression = self.box_predictor(self.box_head(pooled.flatten(0, 1)))
        class_logits, box_regression = class_logits.float(), box_regression.float()
        nc = class_logits.shape[-1]
        boxes = self.box_coder.decode_single(box_regression, proposals.reshape(-1, 4))
        boxes = self.clip(boxes.reshape(b, p, nc, 4))[:, :, 1:]  # drop the background column
        scores = F.softmax(class_logits, -1).reshape(b, p, nc)[:, :, 1:]
        labels = torch.arange(1, nc, device=scores.device).expand(b, p, nc - 1)
        boxes, scores, labels = boxes.reshape(b, -1, 4), scores.reshape(b, -1), labels.reshape(b, -1)
        keep = valid.repeat_interleave(nc - 1, dim=1) & self.wide_enough(boxes, 1e-2)
        scores = torch.where(keep, scores, torch.full_like(scores, NEG_INF))
        k = min(meta.detections_per_img, boxes.shape[1])
        count, idx = ops.batched_nms(boxes, scores, labels, meta.box_nms_thresh, meta.box_score_thresh, k)
        mask = torch.arange(k, device=idx.device)[None] < count[:, None]
        out_boxes = torch.where(mask[..., None], _gather_rows(boxes, idx), 0.0)
        out_scores = torch.where(mask, torch.gather(scores, 1, idx), 0.0)
        out_labels = torch.where(mask, torch.gather(labels, 1, idx), 0).to(torch.int32)
        k_out = meta.detections_per_img
        return count, _pad_to(out_boxes, k_out), _pad_to(out_scores, k_out), _pad_to(out_labels, k_out)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        feats = list(self.backbone(self.normalize(images)).values())
        proposals, valid = self.proposals(feats)
        return self.detections(feats, proposals, valid)
