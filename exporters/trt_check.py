"""TensorRT-readiness check: hold an ONNX graph against TensorRT's ONNX parser rules before parsing.

    python -m exporters.trt_check model.trt.onnx [other.onnx ...]

TensorRT cannot run everywhere, but the rules its parser applies are published. This check applies
them without TensorRT: the operator support matrix and its restrictions (exporters.trt_support, from
onnx-tensorrt 10.1 GA), the UINT8 rule (a uint8 tensor only as a network input feeding a Cast, or a
network output), TopK's constant K below 3840 with sorted=1, constant Slice/Squeeze/Unsqueeze axes,
the supported Resize modes, no data-dependent shapes in the plugin flavour, our plugin nodes
carrying exactly the attributes, with the ONNX types, that the creators accept (plugins.PLUGIN_FIELDS),
and explicit quantization as TensorRT builds it: Q/DQ with build-time constant, strictly positive
scales, zero points that are constant zeros, per-channel scales on weights only (trt_support.QDQ_OPS).
exporters.trt runs it before every build; a failure names the node and the rule in one line.
Exit codes: 0 every file ready, 1 a file is not, 2 a file cannot be read.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, defs, numpy_helper

from plugins import PARSER_ATTRIBUTES, PLUGIN_DOMAIN, PLUGIN_FIELDS, PLUGIN_INPUTS, ROI_ALIGN_PLUGIN
from plugins.params import MAX_LEVELS

from . import trt_support as facts

# Ops whose output shape depends on the data; the plugin flavour exists to have none.
DATA_DEPENDENT = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress"})
# Inputs that set an output's shape (by schema name); in the plugin flavour they must come from shapes and
# constants only, never from data.
SHAPE_INPUTS = {"Reshape": ("shape",), "Expand": ("shape",), "ConstantOfShape": ("input",), "Tile": ("repeats",),
                "Range": ("start", "limit", "delta"), "Slice": ("starts", "ends", "axes", "steps"),
                "Resize": ("roi", "scales", "sizes"), "Pad": ("pads", "axes"), "TopK": ("K",), "OneHot": ("depth",),
                "Split": ("split",), "Squeeze": ("axes",), "Unsqueeze": ("axes",), "Upsample": ("scales",)}


@dataclass(frozen=True)
class Problem:
    node: str
    op: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"node {self.node!r} ({self.op}): {self.rule}: {self.detail}"


class NotReadyError(ValueError):
    """The graph breaks a parser rule; the message is one line naming the first node and rule."""


def type_name(elem_type: int) -> str:
    return facts.TYPE_NAMES.get(elem_type) or TensorProto.DataType.Name(elem_type)


@lru_cache(maxsize=None)
def _schema(op_type: str, opset: int):
    try:
        return defs.get_schema(op_type, opset, "")
    except defs.SchemaError:
        return None


class Graph:
    """What the rules look up: tensor types, constants, graph inputs and outputs."""

    def __init__(self, model: onnx.ModelProto):
        self.model, g = model, model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.nodes = list(g.node)
        self.inputs = {v.name for v in g.input}
        self.outputs = {v.name for v in g.output}
        self.constants = {t.name: t for t in g.initializer}
        for node in self.nodes:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = value
        self.plugin_flavour = any(n.domain == PLUGIN_DOMAIN for n in self.nodes)
        self.producers = {o: n for n in self.nodes for o in n.output if o}
        self.types = self._types()

    def _types(self) -> dict[str, int]:
        g = self.model.graph
        types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
        types.update({name: t.data_type for name, t in self.constants.items()})
        produced = [o for n in self.nodes for o in n.output if o]
        if any(not types.get(o) for o in produced):  # fill gaps with ONNX's inference where it can see
            inferred = onnx.shape_inference.infer_shapes(self.model).graph.value_info
            types.update({v.name: v.type.tensor_type.elem_type for v in inferred if not types.get(v.name)})
        for node in self.nodes:  # plugin outputs the exporter left untyped: as getOutputDataTypes declares them
            if node.domain == PLUGIN_DOMAIN:
                kinds = [types.get(node.input[-1], 0)] if node.op_type == ROI_ALIGN_PLUGIN else [TensorProto.INT32] * 2
                for name, kind in zip(node.output, kinds):
                    types[name] = types.get(name) or kind
        return types

    def shape(self, name: str) -> list[int] | None:
        """The static dims (0 where unknown) of a constant or a typed graph tensor, None when unknown."""
        if name in self.constants:
            return list(self.constants[name].dims)
        g = self.model.graph
        for v in (*g.input, *g.output, *g.value_info):
            if v.name == name and v.type.tensor_type.HasField("shape"):
                return [d.dim_value for d in v.type.tensor_type.shape.dim]
        return None

    def schema(self, node):
        return _schema(node.op_type, self.opset) if node.domain in ("", "ai.onnx") else None

    def input_named(self, node, name: str) -> str:
        """The tensor bound to the schema input `name` ('' when absent)."""
        schema = self.schema(node)
        names = [p.name for p in schema.inputs] if schema else []
        index = names.index(name) if name in names else len(node.input)
        return node.input[index] if index < len(node.input) else ""

    def shape_derived(self) -> set[str]:
        """Tensors computed only from constants and Shape/Size outputs (nodes are in topological order)."""
        derived = set(self.constants)
        for node in self.nodes:
            inputs = [i for i in node.input if i]
            if node.op_type in ("Shape", "Size", "Constant") or (
                    node.op_type not in DATA_DEPENDENT and inputs and all(i in derived for i in inputs)):
                derived.update(o for o in node.output if o)
        return derived


def main_slots(graph: Graph, node) -> list[str]:
    """The tensors whose type the matrix's "Supported Types" restricts: those bound to the type
    variable of the op's first input, or of its first output when that input has a fixed type
    (a Resize's X, not its int64 sizes; a DequantizeLinear's x and zero point, not its float scale)."""
    schema = graph.schema(node)
    if schema is None:
        return []
    variables = {c.type_param_str for c in schema.type_constraints}
    formal_in, formal_out = [p.type_str for p in schema.inputs], [p.type_str for p in schema.outputs]
    main = next((t for t in formal_in[:1] + formal_out[:1] if t in variables), None)

    def bound(names, formal):  # a variadic parameter is the last one
        return [n for i, n in enumerate(names) if n and formal and formal[min(i, len(formal) - 1)] == main]

    return [*bound(node.input, formal_in), *bound(node.output, formal_out)] if main else []


def _attribute(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


# ------------------------------------------------------------------ rules
def rule_op(graph: Graph, node):
    if node.domain == PLUGIN_DOMAIN:
        if node.op_type not in PLUGIN_FIELDS:
            yield "plugin", f"our plugin library has no creator named {node.op_type} (it has {', '.join(PLUGIN_FIELDS)})"
    elif node.domain not in ("", "ai.onnx"):
        yield "op type", f"domain {node.domain!r} is not ONNX's, and no plugin of ours is named {node.op_type}"
    elif node.op_type not in facts.SUPPORTED:
        listed = "lists it as unsupported" if node.op_type in facts.UNSUPPORTED else "does not list it"
        yield "op type", f"the parser's support matrix ({facts.MATRIX_VERSION}) {listed}"


def rule_types(graph: Graph, node):
    for name in (*node.input, *node.output):
        kind = graph.types.get(name) if name else None
        if kind is not None and kind not in facts.TYPE_NAMES:
            yield "data type", f"tensor {name!r} is {type_name(kind)}, which TensorRT does not support"
    if node.domain in ("", "ai.onnx") and node.op_type in facts.SUPPORTED:
        allowed = facts.SUPPORTED[node.op_type].split()
        for name in main_slots(graph, node):
            kind = graph.types.get(name, 0)
            if not kind:
                yield "input types", f"the type of {name!r} is unknown (run onnx shape inference)"
            elif type_name(kind) not in allowed:
                yield "input types", f"{name!r} is {type_name(kind)}; the support matrix allows {', '.join(allowed)}"


def rule_uint8(graph: Graph, node):
    for name in node.input:
        if name in graph.inputs and graph.types.get(name) == TensorProto.UINT8 and node.op_type != "Cast":
            yield "uint8", f"network input {name!r} is uint8 and feeds {node.op_type}; a uint8 input must feed a Cast"
    for name in node.output:
        if name and graph.types.get(name) == TensorProto.UINT8 and name not in graph.outputs:
            yield "uint8", (f"intermediate tensor {name!r} is uint8; the parser allows uint8 only as a network "
                            "input or output")


def rule_constant_inputs(graph: Graph, node):
    for name in facts.CONSTANT_INPUTS.get(node.op_type, ()):
        tensor = graph.input_named(node, name)
        if tensor and tensor not in graph.constants:
            yield "constant input", f"{node.op_type}'s {name} ({tensor!r}) must be a constant (initializer or Constant)"


def rule_topk(graph: Graph, node):
    if node.op_type != "TopK":
        return
    if _attribute(node, "sorted", 1) != 1:
        yield "TopK", "sorted must be 1"
    k = graph.constants.get(graph.input_named(node, "K"))
    if k is None:
        yield "TopK", f"K must be a constant (initializer or Constant), so that K < {facts.TOPK_MAX_K} holds"
    elif int(numpy_helper.to_array(k).reshape(-1)[0]) >= facts.TOPK_MAX_K:
        yield "TopK", f"K is {int(numpy_helper.to_array(k).reshape(-1)[0])}; the parser needs K < {facts.TOPK_MAX_K}"


def rule_resize(graph: Graph, node):
    if node.op_type != "Resize":
        return
    for name, allowed in facts.RESIZE.items():
        value = _attribute(node, name, allowed[0].encode())
        value = value.decode() if isinstance(value, bytes) else value
        if value not in allowed:
            yield "Resize", f"{name}={value!r} is not supported (use one of {', '.join(allowed)})"
    if _attribute(node, "antialias", 0):
        yield "Resize", "antialiasing is not supported"
    scales, axes = graph.input_named(node, "scales"), _attribute(node, "axes")
    if scales and scales not in graph.constants and axes is not None and list(axes) != list(range(len(axes))):
        yield "Resize", f"with a tensor scales input, axes must be 0, 1, ... (all axes), got {list(axes)}"


def rule_static_shapes(graph: Graph, node, derived: set[str]):
    if not graph.plugin_flavour:
        return
    if node.op_type in DATA_DEPENDENT:
        yield "data-dependent shape", f"{node.op_type}'s output shape depends on the data (the plugin flavour has none)"
    for name in SHAPE_INPUTS.get(node.op_type, ()):
        tensor = graph.input_named(node, name)
        if tensor and tensor not in derived:
            yield "data-dependent shape", f"{node.op_type}'s {name} ({tensor!r}) is computed from data, not from shapes"


def rule_plugin(graph: Graph, node):
    if node.domain != PLUGIN_DOMAIN or node.op_type not in PLUGIN_FIELDS:
        return
    fields = PLUGIN_FIELDS[node.op_type]
    given = {a.name: AttributeProto.AttributeType.Name(a.type) for a in node.attribute}
    for name, kind in given.items():
        expected = fields.get(name) or PARSER_ATTRIBUTES.get(name)
        if expected is None:
            yield "plugin attributes", f"{name!r} is not a field the {node.op_type} creator declares"
        elif kind != expected:
            yield "plugin attributes", (f"{name!r} is {kind}; the parser would hand the creator a field of another "
                                        f"type than the {expected} it reads")
    for name in fields.keys() - given.keys():
        yield "plugin attributes", f"{name!r} is missing"
    allowed = PLUGIN_INPUTS[node.op_type]
    inputs = [i for i in node.input if i]
    fixed = len(allowed) - 1  # the last entry repeats (RoIAlign's feature maps)
    most = fixed + MAX_LEVELS if node.op_type == ROI_ALIGN_PLUGIN else len(allowed)
    if not len(allowed) <= len(inputs) <= most:
        yield "plugin inputs", f"{len(inputs)} inputs; the plugin takes {len(allowed)}" + \
            (f" to {most}" if most > len(allowed) else "")
    for i, name in enumerate(inputs):
        kinds = allowed[min(i, fixed)].split()
        if type_name(graph.types.get(name, 0)) not in kinds:
            yield "plugin inputs", f"input {i} ({name!r}) is {type_name(graph.types.get(name, 0))}; it must be " + \
                " or ".join(kinds)
    if len({graph.types.get(n) for n in inputs[fixed:]}) > 1:
        yield "plugin inputs", "the repeated inputs must all have one type"


def _weights_rooted(graph: Graph, tensor: str) -> bool:
    """Whether `tensor` is a constant, or a QuantizeLinear of one (TensorRT's "rooted at an IConstantLayer")."""
    if tensor in graph.constants:
        return True
    producer = graph.producers.get(tensor)
    return producer is not None and producer.op_type == "QuantizeLinear" and producer.input[0] in graph.constants


def rule_qdq(graph: Graph, node):
    """TensorRT's explicit quantization: symmetric (zero points build-time zeros), constant positive scales,
    per-tensor activations and per-channel weights only (trt_support.QDQ_OPS)."""
    if node.op_type not in facts.QDQ_OPS or node.domain not in ("", "ai.onnx"):
        return
    x, scale_name = node.input[0], node.input[1] if len(node.input) > 1 else ""
    zero_name = node.input[2] if len(node.input) > 2 else ""
    scale = graph.constants.get(scale_name)
    if scale is None:
        yield "Q/DQ", f"scale {scale_name!r} must be a build-time constant (initializer or Constant)"
        return
    values = numpy_helper.to_array(scale).astype("float64")
    if not (values > 0).all() or not np.isfinite(values).all():
        yield "Q/DQ", f"scale {scale_name!r} must hold strictly positive finite values (min {values.min():g})"
    if zero_name:
        zero = graph.constants.get(zero_name)
        if zero is None:
            yield "Q/DQ", f"zero point {zero_name!r} must be a build-time constant"
        elif numpy_helper.to_array(zero).any():
            yield "Q/DQ", f"zero point {zero_name!r} is not all zeros: TensorRT supports symmetric quantization only"
        elif numpy_helper.to_array(zero).size != values.size:
            yield "Q/DQ", f"zero point {zero_name!r} has {numpy_helper.to_array(zero).size} values, scale {values.size}"
    if values.size > 1:  # per-channel
        if values.ndim != 1:
            yield "Q/DQ", f"scale {scale_name!r} is {values.ndim}-D; per-channel scales are 1-D"
        rooted = x in graph.constants if node.op_type == "QuantizeLinear" else _weights_rooted(graph, x)
        if not rooted:
            yield "Q/DQ", (f"per-channel scale on {x!r}, which is not a constant: activations are quantized "
                           "per-tensor only, per-channel is for weights")
        shape = graph.shape(x)
        axis = _attribute(node, "axis", 1)
        if shape is not None and values.ndim == 1:
            if not -len(shape) <= axis < len(shape):
                yield "Q/DQ", f"axis {axis} is not an axis of {x!r} (rank {len(shape)})"
            elif shape[axis] and shape[axis] != values.size:
                yield "Q/DQ", f"{values.size} scales for axis {axis} of {x!r}, which has {shape[axis]} entries"


RULES = (rule_op, rule_uint8, rule_types, rule_constant_inputs, rule_topk, rule_resize, rule_plugin, rule_qdq)


def problems(model: onnx.ModelProto) -> list[Problem]:
    """Every rule broken, in graph order."""
    graph = Graph(model)
    found = []
    low, high = facts.OPSETS
    if not low <= graph.opset <= high:
        found.append(Problem("(model)", "opset", "opset", f"default-domain opset {graph.opset}; the matrix covers "
                                                          f"{low} to {high} (re-export with --opset {high} or lower)"))
    derived = graph.shape_derived() if graph.plugin_flavour else set()
    for node in graph.nodes:
        results = [r for rule in RULES for r in rule(graph, node)]
        results += list(rule_static_shapes(graph, node, derived))
        found += [Problem(node.name or node.output[0], node.op_type, rule, detail) for rule, detail in results]
    return found


def ensure_ready(model) -> None:
    """Raise NotReadyError (one line: the first problem, and how many more) unless `model` (a path or a
    ModelProto) passes every rule."""
    proto = onnx.load(str(model), load_external_data=False) if isinstance(model, (str, Path)) else model
    found = problems(proto)
    if found:
        more = f" (and {len(found) - 1} more: python -m exporters.trt_check lists them)" if len(found) > 1 else ""
        name = f"{Path(model).name}: " if isinstance(model, (str, Path)) else ""
        raise NotReadyError(f"{name}not TensorRT-ready: {found[0]}{more}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m exporters.trt_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", nargs="+", type=Path, help="ONNX files to check")
    a = p.parse_args(argv)
    status = 0
    for path in a.onnx:
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # a missing or corrupt file: one line, go on with the others
            from runtimes.base import first_line

            print(f"error: {path}: cannot read it as ONNX ({first_line(e)})", file=sys.stderr)
            status = max(status, 2)
            continue
        found = problems(model)
        print(f"{path}: TensorRT-ready ({len(model.graph.node)} nodes, {facts.MATRIX_VERSION})" if not found else
              f"{path}: NOT TensorRT-ready, {len(found)} problem(s):")
        for problem in found:
            print(f"  {problem}")
        status = max(status, 1 if found else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
