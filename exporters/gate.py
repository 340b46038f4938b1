"""The mAP gate of reduced-precision artifacts (bf16 compute; INT8 follows the same rule).

Box-level parity against the fp32 deploy graph holds fp32 artifacts to 1e-4 px, but a reduced
precision moves scores a little and, where two overlapping boxes nearly tie, NMS keeps the
other one. Such an artifact is judged by what a user loses: its COCO mAP@[.5:.95] may fall at
most `max_drop` below the fp32 reference's on the same validation images. The matched fraction
and box/score deviations are still measured and printed, but never fail it.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from runtimes.parity import ParityReport, Thresholds

DEFAULT_MAX_DROP = 0.010
GATE_IMAGES = 200  # validation images the gate scores (all of shapes' validation split)
# parity of a gated artifact is reported, never checked: only the mAP drop decides
REPORT_ONLY = Thresholds(min_matched=0.0, max_box_px=math.inf, max_score=math.inf, max_map_diff=math.inf)


@dataclass
class GateResult:
    what: str  # the artifact's precision as the messages name it: "bf16", "INT8"
    passed: bool
    map_test: float | None
    map_fp32: float | None
    max_drop: float
    report: ParityReport | None = None  # the figures reported beside the verdict

    @property
    def drop(self) -> float | None:
        return None if self.map_test is None or self.map_fp32 is None else self.map_fp32 - self.map_test

    def line(self) -> str:
        if self.drop is None:
            return "no ground truth to score mAP on (the checkpoint's dataset is not readable here)"
        return (f"mAP {self.map_test:.4f} vs fp32 {self.map_fp32:.4f}: drop {self.drop:+.4f} "
                f"({'<=' if self.passed else '>'} --max-map-drop {self.max_drop})")


def map_gate(test, reference, meta, what: str, images: int = GATE_IMAGES,
             max_drop: float = DEFAULT_MAX_DROP, spec: str | None = None) -> GateResult:
    """Score `test` (the reduced-precision artifact) and `reference` (fp32) on the first `images`
    validation images of the checkpoint's dataset, or of dataset `spec` (a checkpoint whose
    provenance names no dataset, e.g. published weights, is scored on the data the user names);
    print the parity figures and the verdict. Without ground truth there is nothing to gate
    on, and the gate fails."""
    from .verify import verify

    report = verify(test, reference, meta, images, REPORT_ONLY, spec=spec)
    result = GateResult(what, False, report.map_test, report.map_reference, max_drop, report)
    result.passed = result.drop is not None and result.drop <= max_drop
    print(f"{what} figures (reported, not gated): {report.summary()}")
    if result.passed:
        print(f"{what} gate OK: {result.line()}")
    else:
        print(f"{what} gate FAILED: {result.line()}", file=sys.stderr)
    return result


def add_gate_args(p: argparse.ArgumentParser, when: str) -> None:
    """--max-map-drop and --gate-images, for the gate that applies `when` (e.g. "with --precision bf16").
    A command with two reduced precisions (--int8 and --precision bf16) calls it once for each:
    the second call names its case in the same options' group instead of adding them again."""
    title = f"mAP gate ({when})"
    for group in p._action_groups:  # argparse keeps groups only there
        if group.title and group.title.startswith("mAP gate (") and any(
                "--max-map-drop" in action.option_strings for action in group._group_actions):
            group.title = f"{group.title[:-1]}; {when})"
            return
    g = p.add_argument_group(title)
    g.add_argument("--max-map-drop", type=float, default=DEFAULT_MAX_DROP, metavar="DROP",
                   help=f"largest mAP@[.5:.95] drop against fp32 (default {DEFAULT_MAX_DROP}); matched fraction and "
                        "box/score deviations are reported, the parity thresholds do not apply")
    g.add_argument("--gate-images", type=int, default=GATE_IMAGES, metavar="N",
                   help=f"validation images the gate scores (default {GATE_IMAGES}: all of shapes' validation split)")


def check_gate_args(a: argparse.Namespace) -> None:
    """One line, before any work, for gate options that cannot work."""
    from .cli import fail

    if a.gate_images < 1 or not 0 <= a.max_map_drop < 1:
        fail("--gate-images must be at least 1 and --max-map-drop between 0 and 1")
