"""What the exporter commands share: loading the source model, parity options, one-line errors."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from runtimes.base import first_line
from runtimes.parity import FP16, Thresholds


def fail(message: str, code: int = 2):
    """Print one clear line to stderr and exit."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


CHECKPOINT_HELP = ("run directory, .safetensors checkpoint, torchvision .pth state dict, or named weights "
                   "(downloaded once, verified): torchvision:ARCH for its COCO weights (resnet50_fpn, "
                   "resnet50_fpn_v2, mobilenet_v3_large_fpn, mobilenet_v3_large_320_fpn), "
                   "torchvision:ENUM.MEMBER, or a URL")


def load_source(checkpoint: str, arch: str | None = None, canvas: tuple[int, int] | None = None):
    """(model, meta) from a run dir, .safetensors, torchvision .pth or named weights (see
    trainer.weights); one-line error otherwise."""
    from trainer.checkpoint import CheckpointError, load_any
    from trainer.models import set_canvas

    try:
        model, meta = load_any(checkpoint, arch=arch)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        fail(first_line(e))
    if canvas:
        set_canvas(model, meta, canvas)
    return model, meta


_OPTIONS = (("--min-matched", "min_matched", "least fraction of detections matched"),
            ("--max-box-px", "max_box_px", "largest box deviation in pixels"),
            ("--max-score-diff", "max_score", "largest score deviation"),
            ("--max-map-diff", "max_map_diff", "largest mAP difference"))


def add_verify_args(p: argparse.ArgumentParser, fp16_flag: str | None = None, onnx_source: bool = False) -> None:
    """Parity options. Defaults are runtimes.parity.Thresholds, or parity.FP16 when the command's
    `fp16_flag` is given (see thresholds_from). `onnx_source`: the command also builds from
    --onnx, so it takes --reference-checkpoint (see check_reference_arg)."""
    g = p.add_argument_group("parity check against PyTorch")
    g.add_argument("--no-verify", action="store_true", help="skip the parity check")
    if onnx_source:
        g.add_argument("--reference-checkpoint",
                       help="with --onnx: check parity against this checkpoint in PyTorch instead of ONNX Runtime")
    g.add_argument("--parity-images", type=int, default=16, help="images to compare (default 16)")
    for option, field, text in _OPTIONS:
        default = getattr(Thresholds, field)
        fp16 = f", {getattr(FP16, field)} with {fp16_flag}" if fp16_flag else ""
        g.add_argument(option, type=float, dest=field, metavar=option[2:].upper().replace("-", "_"),
                       help=f"{text} (default {default}{fp16})")


def check_reference_arg(a: argparse.Namespace) -> None:
    """One line, before any work, when --reference-checkpoint comes without --onnx."""
    if a.reference_checkpoint and not a.onnx:
        fail("--reference-checkpoint goes with --onnx (with --checkpoint that checkpoint is the reference)")


def thresholds_from(a: argparse.Namespace, fp16: bool = False) -> Thresholds:
    """The thresholds the options ask for, the others from the fp32 or fp16 defaults."""
    base = FP16 if fp16 else Thresholds()
    return replace(base, **{f: getattr(a, f) for _, f, _ in _OPTIONS if getattr(a, f, None) is not None})
