"""What the exporter commands share: loading the source model, parity options, one-line errors."""
from __future__ import annotations

import argparse
import sys

from runtimes.parity import Thresholds


def fail(message: str, code: int = 2):
    """Print one clear line to stderr and exit."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def load_source(checkpoint: str, arch: str | None = None, canvas: tuple[int, int] | None = None):
    """(model, meta) from a run dir, .safetensors or torchvision .pth; one-line error otherwise."""
    from trainer.checkpoint import CheckpointError, load_any
    from trainer.models import set_canvas

    try:
        model, meta = load_any(checkpoint, arch=arch)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        fail(str(e).splitlines()[0])
    if canvas:
        set_canvas(model, meta, canvas)
    return model, meta


def add_verify_args(p: argparse.ArgumentParser, map_diff: float | None = Thresholds.max_map_diff,
                    map_diff_help: str | None = None) -> None:
    """Parity options; map_diff None lets the command pick the default after parsing (say how in map_diff_help)."""
    g = p.add_argument_group("parity check against PyTorch")
    g.add_argument("--no-verify", action="store_true", help="skip the parity check")
    g.add_argument("--parity-images", type=int, default=16, help="images to compare (default 16)")
    g.add_argument("--min-matched", type=float, default=Thresholds.min_matched,
                   help=f"least fraction of detections matched (default {Thresholds.min_matched})")
    g.add_argument("--max-box-px", type=float, default=Thresholds.max_box_px,
                   help=f"largest box deviation in pixels (default {Thresholds.max_box_px})")
    g.add_argument("--max-score-diff", type=float, default=Thresholds.max_score,
                   help=f"largest score deviation (default {Thresholds.max_score})")
    g.add_argument("--max-map-diff", type=float, default=map_diff,
                   help=map_diff_help or f"largest mAP difference (default {map_diff})")


def thresholds_from(a: argparse.Namespace) -> Thresholds:
    return Thresholds(min_matched=a.min_matched, max_box_px=a.max_box_px, max_score=a.max_score_diff,
                      max_map_diff=a.max_map_diff)
