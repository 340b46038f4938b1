"""Model metadata: the one description of a detector that travels with every artifact.

The trainer writes it next to the weights (model.json); exporters embed it in ONNX
`metadata_props`, OpenVINO `rt_info` and engine sidecars, so `runtimes.load(path)`
needs nothing else. Plain JSON, no torch.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

FORMAT = "frcnn-deploy/1"
META_KEY = "frcnn_deploy_meta"  # key under which exporters embed the JSON
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelMeta:
    arch: str
    # class_names[label] is the name of model label `label`; label 0 is the background.
    class_names: list[str]
    canvas: tuple[int, int]  # (H, W) of the fixed input canvas the image is letterboxed onto
    image_mean: tuple[float, float, float] = IMAGENET_MEAN  # on the 0..1 scale
    image_std: tuple[float, float, float] = IMAGENET_STD
    # COCO category id of each label (same length as class_names); None means id == label.
    category_ids: list[int] | None = None
    rpn_pre_nms_top_n: int = 1000
    rpn_post_nms_top_n: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_score_thresh: float = 0.0
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    arch_kwargs: dict = field(default_factory=dict)  # extra builder arguments (anchors, widths, ...)
    provenance: dict = field(default_factory=dict)  # dataset, epochs, mAP, toolkit version, ...
    export: dict = field(default_factory=dict)  # filled by exporters: batch, flavor, precision, ...
    format: str = FORMAT

    @property
    def num_classes(self) -> int:
        """Number of model classes, background included (torchvision's num_classes)."""
        return len(self.class_names)

    def category_id(self, label: int) -> int:
        return int(self.category_ids[label]) if self.category_ids else int(label)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["canvas"] = list(self.canvas)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMeta":
        """Metadata from its JSON form; ValueError, one line, for anything it cannot describe (every
        field is checked here, so an edited or corrupt file fails at load, not mid-inference)."""
        if not isinstance(d, dict):
            raise ValueError(f"metadata must be a JSON object, got {type(d).__name__}")
        fmt = d.get("format", FORMAT)
        if not str(fmt).startswith("frcnn-deploy/"):
            raise ValueError(f"not frcnn-deploy metadata (format={fmt!r})")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {"arch", "class_names", "canvas"} - d.keys()
        if missing:
            raise ValueError(f"metadata lacks {sorted(missing)}")
        kw = {k: v for k, v in d.items() if k in known}
        for k, v in kw.items():
            kw[k] = _checked(k, v, len(d["class_names"]) if isinstance(d["class_names"], list) else 0)
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        try:
            d = json.loads(text)
        except RecursionError:  # nesting deeper than the parser's stack
            raise ValueError("metadata JSON nested too deeply") from None
        return cls.from_dict(d)


MAX_CANVAS_SIDE = 16384  # px; a canvas batch is allocated as B x H x W x 3 bytes
MAX_TOP_N = 100_000  # proposals or detections per image: outputs are padded to this many


def _is_int(v) -> bool:
    return type(v) is int  # not bool


def is_finite_number(v) -> bool:
    """A finite int or float from JSON (not a bool; json gives inf and nan for 1e400 and NaN, and
    an int may be too big for any float). Exact type checks: fast over a million annotations."""
    if type(v) is float:
        return math.isfinite(v)
    return type(v) is int and -1e300 < v < 1e300


def _checked(key: str, value, num_classes: int):
    """`value` of metadata field `key` in the type the field needs; ValueError naming the field."""
    def bad(expected: str):
        text = repr(value)
        return ValueError(f"metadata {key!r} must be {expected}, got {text[:80] + '...' if len(text) > 80 else text}")

    if key in ("arch", "format"):
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
    elif key == "class_names":
        if not (isinstance(value, list) and value and all(isinstance(n, str) for n in value)):
            raise bad("a non-empty list of names")
    elif key == "canvas":
        if not (isinstance(value, (list, tuple)) and len(value) == 2
                and all(_is_int(v) and 0 < v <= MAX_CANVAS_SIDE for v in value)):
            raise bad(f"[height, width], integers in 1..{MAX_CANVAS_SIDE}")
        return tuple(value)
    elif key in ("image_mean", "image_std"):
        if not (isinstance(value, (list, tuple)) and len(value) == 3 and all(map(is_finite_number, value))
                and (key == "image_mean" or all(v > 0 for v in value))):
            raise bad("three finite numbers" + (", above 0" if key == "image_std" else ""))
        return tuple(float(v) for v in value)
    elif key == "category_ids":
        if value is not None and not (isinstance(value, list) and len(value) == num_classes
                                      and all(map(_is_int, value))):
            raise bad("null or one integer per class name")
    elif key in ("rpn_pre_nms_top_n", "rpn_post_nms_top_n", "detections_per_img"):
        if not (_is_int(value) and 0 < value <= MAX_TOP_N):
            raise bad(f"an integer in 1..{MAX_TOP_N}")
    elif key in ("rpn_nms_thresh", "rpn_score_thresh", "box_score_thresh", "box_nms_thresh"):
        if not (is_finite_number(value) and 0 <= value <= 1):
            raise bad("a number in [0, 1]")
    elif key in ("arch_kwargs", "provenance", "export"):
        if not isinstance(value, dict):
            raise bad("a JSON object")
    return value


def read_onnx_meta(source) -> ModelMeta:
    """The metadata inside an ONNX model (a path, read without its weights, or a ModelProto).
    ValueError, one line naming the file, when it is not an ONNX file or carries none."""
    import onnx

    proto = source
    if not isinstance(source, onnx.ModelProto):
        try:
            proto = onnx.load(str(source), load_external_data=False)
        except Exception as e:  # protobuf raises several types on garbage
            raise ValueError(f"{source}: not a valid ONNX file ({type(e).__name__})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        where = "the model" if isinstance(source, onnx.ModelProto) else source
        raise ValueError(f"{where}: no frcnn-deploy metadata (export it with python -m exporters.onnx)")
    return ModelMeta.from_json(props[META_KEY])
