"""Winograd F(4x4, 3x3) rewrite of an ONNX graph's 3x3 convolutions, for ONNX Runtime on the CPU.

ONNX Runtime's fp32 convolutions already run near this CPU's peak (~205 GFLOP/s on 2 cores), so
the way to a faster R50-FPN is fewer multiplies. Winograd's minimal filtering (Lavin & Gray, 2016)
computes a 4x4 output tile of a 3x3 convolution with 36 multiplies per channel pair instead of 144:

    Y = A^T [ (G g G^T) * (B^T d B) ] A      per 6x6 input tile d (stride 4) and 3x3 filter g

In standard ONNX ops (no custom domain, nothing dynamic but the batch):
    Conv (depthwise, fixed 6x6 kernels, stride 4)   input tiles -> B^T d B      [N, 36C, th, tw]
    Reshape + Transpose                                                          [N, 36, C, T]
    MatMul with U = G g G^T (folded here, in float64)                            [N, 36, O, T]
    MatMul with A^T (x) A^T, DepthToSpace                                        [N, O, 4th, 4tw]
    Add bias, Slice when H or W is not a multiple of 4.

The transforms' coefficients (up to 8) cost some precision: about 1e-5 of the output's range in
fp32, far inside the parity thresholds. Only convolutions big enough to gain are rewritten (the
transforms are memory-bound); `MIN_CHANNELS` and `MIN_TILES` come from the per-convolution
speed-ups that `python -m benchmarks.winograd` measures.

Imports no torch; needs onnx and numpy, which the ONNX Runtime adapter already uses.
"""
from __future__ import annotations

import numpy as np

BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)

MIN_CHANNELS = 256  # input and output channels
MIN_TILES = 64      # 4x4 output tiles per image


def candidates(model, min_channels: int | None = None, min_tiles: int | None = None) -> list[tuple]:
    """(node, weight, bias or None, (C, H, W)) for every Conv of `model` that the rewrite handles
    (3x3, stride 1, pad 1, no groups or dilation, constant fp32 weights, static C, H, W) and
    that is big enough: at least `min_channels` in and out and `min_tiles` 4x4 output tiles
    (default: MIN_CHANNELS, MIN_TILES). An INT8 convolution's weight is a DequantizeLinear's
    output, not an initializer: quantized convolutions are left alone (they run as QLinearConv)."""
    from onnx import TensorProto, helper, numpy_helper

    min_channels = MIN_CHANNELS if min_channels is None else min_channels
    min_tiles = MIN_TILES if min_tiles is None else min_tiles
    inits = {i.name: i for i in model.graph.initializer}
    shapes = None
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in inits:
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        weight, bias = inits[node.input[1]], node.input[2] if len(node.input) > 2 and node.input[2] else None
        if (a.get("group", 1) != 1 or list(a.get("strides", [1, 1])) != [1, 1]
                or list(a.get("dilations", [1, 1])) != [1, 1] or list(a.get("pads", [0] * 4)) != [1, 1, 1, 1]
                or a.get("auto_pad", b"NOTSET") != b"NOTSET" or list(weight.dims[2:]) != [3, 3]
                or weight.data_type != TensorProto.FLOAT or min(weight.dims[:2]) < min_channels
                or (bias is not None and bias not in inits)):
            continue
        shapes = shapes if shapes is not None else static_shapes(model)
        shape = shapes.get(node.input[0])
        if shape is None or len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            continue
        c, h, w = shape[1:]
        if -(-h // 4) * -(-w // 4) >= min_tiles:
            found.append((node, numpy_helper.to_array(weight),
                          None if bias is None else numpy_helper.to_array(inits[bias]), (c, h, w)))
    return found


def winograd_nodes(node, w: np.ndarray, bias, chw) -> tuple[list, list]:
    """The nodes and initializers that compute `node` (a 3x3 Conv, stride 1, pad 1) the Winograd way."""
    from onnx import helper, numpy_helper

    o, (c, h, wd) = w.shape[0], chw
    th, tw = -(-h // 4), -(-wd // 4)
    x, y, p = node.input[0], node.output[0], f"{node.name or node.output[0]}_wino"
    t = lambda s: f"{p}_{s}"  # noqa: E731
    # kron(M, M)[i*m + j, a*n + b] = M[i, a] * M[j, b] for M of m x n: each 2-D transform as one matrix
    u = np.kron(G, G) @ w.reshape(o * c, 9).T.astype(np.float64)  # U[k] = (G g G^T)[k] for each (o, c)
    inits = {
        # depthwise: input channel c -> output channels c*36 ... c*36 + 35
        t("kin"): np.tile(np.kron(BT, BT).reshape(36, 1, 6, 6), (c, 1, 1, 1)).astype(np.float32),
        t("u"): u.astype(np.float32).reshape(36, o, c),
        t("a"): np.kron(AT, AT).astype(np.float32),
        t("s1"): np.array([0, c, 36, th * tw], np.int64),
        t("s2"): np.array([0, 36, o * th * tw], np.int64),
        t("s3"): np.array([0, 16 * o, th, tw], np.int64),
    }
    # tiles start 1 px above/left of the image (the conv's pad) and must cover 4*th + 2 rows
    pads = [1, 1, 4 * th + 1 - h, 4 * tw + 1 - wd]
    crop = (th * 4, tw * 4) != (h, wd)
    last = t("full") if crop else y
    nodes = [
        helper.make_node("Conv", [x, t("kin")], [t("v")], name=t("tiles"), group=c, kernel_shape=[6, 6],
                         strides=[4, 4], pads=pads),
        helper.make_node("Reshape", [t("v"), t("s1")], [t("v1")], name=t("r1")),
        helper.make_node("Transpose", [t("v1")], [t("v2")], name=t("tr"), perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", [t("u"), t("v2")], [t("m")], name=t("gemm")),
        helper.make_node("Reshape", [t("m"), t("s2")], [t("m1")], name=t("r2")),
        helper.make_node("MatMul", [t("a"), t("m1")], [t("y")], name=t("out")),
        helper.make_node("Reshape", [t("y"), t("s3")], [t("y1")], name=t("r3")),
        helper.make_node("DepthToSpace", [t("y1")], [t("y2") if bias is not None else last], name=t("d2s"),
                         blocksize=4, mode="DCR"),
    ]
    if bias is not None:
        inits[t("b")] = bias.reshape(1, o, 1, 1).astype(np.float32)
        nodes.append(helper.make_node("Add", [t("y2"), t("b")], [last], name=t("bias")))
    if crop:
        inits[t("end")] = np.array([h, wd], np.int64)
        inits[t("start")] = np.array([0, 0], np.int64)
        inits[t("axes")] = np.array([2, 3], np.int64)
        nodes.append(helper.make_node("Slice", [last, t("start"), t("end"), t("axes")], [y], name=t("crop")))
    return nodes, [numpy_helper.from_array(v, k) for k, v in inits.items()]


def static_shapes(model) -> dict:
    """name -> shape (ints, a str for a symbolic dimension) of the tensors ONNX shape inference can see.

    Inference runs on a copy whose big initializers keep their dims but not their data (0.01 s
    instead of 1 s for R50-FPN); only small ones (shapes, indices) are read for their values."""
    from onnx import ModelProto, TensorProto, shape_inference

    light = ModelProto(ir_version=model.ir_version, opset_import=model.opset_import)
    g = light.graph
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    for init in model.graph.initializer:
        big = len(init.raw_data) > 4096
        g.initializer.append(TensorProto(name=init.name, data_type=init.data_type, dims=init.dims) if big else init)
    g = shape_inference.infer_shapes(light).graph
    return {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in [*g.value_info, *g.input, *g.output] if v.type.tensor_type.HasField("shape")}


def rewrite(model, min_channels: int | None = None, min_tiles: int | None = None) -> int:
    """Rewrite the `candidates` of `model` (an onnx.ModelProto, changed in place); returns how many."""
    g = model.graph
    replaced, used = {}, set()
    for node, *found in candidates(model, min_channels, min_tiles):
        new_nodes, new_inits = winograd_nodes(node, *found)
        replaced[node.output[0]] = new_nodes
        g.initializer.extend(new_inits)
        used.update(node.input[1:])
    if replaced:
        nodes = [n for node in g.node for n in replaced.get(node.output[0], [node])]
        del g.node[:]
        g.node.extend(nodes)
        still = {i for n in g.node for i in n.input}
        for k in reversed([k for k, i in enumerate(g.initializer) if i.name in used and i.name not in still]):
            del g.initializer[k]
    return len(replaced)
