"""Facts about TensorRT's ONNX parser that the readiness check (exporters.trt_check) holds graphs against.

Source: onnx/onnx-tensorrt `docs/operators.md` at the 10.1 GA release (96e7811, "TensorRT 10.0 supports
operators in the inclusive range of opset 9 to opset 20"), kept as published in
../shared/third_party/onnx-tensorrt-10.1/operators.md; tests/test_trt_check.py compares this table with
that file. The parser rules that the matrix does not hold come from onnx-tensorrt's ModelImporter.cpp
(parseNode: "TensorRT does not support UINT8 types for intermediate tensors!") and NVIDIA/TensorRT issue
3985 ("All UINT8 inputs must directly feed into a cast layer"), see DESIGN.md.
"""
from __future__ import annotations

MATRIX_VERSION = "onnx-tensorrt 10.1 GA (96e7811)"
OPSETS = (9, 20)  # the default domain's opset range of the matrix

# The data types the matrix names, by ONNX TensorProto element type (FP8 is FLOAT8E4M3FN).
TYPE_NAMES = {1: "FP32", 10: "FP16", 16: "BF16", 6: "INT32", 7: "INT64", 3: "INT8", 2: "UINT8", 9: "BOOL",
              11: "DOUBLE", 17: "FP8", 22: "INT4"}

_FLOAT = "FP32 FP16 BF16"
_NUMERIC = _FLOAT + " INT32 INT64"
_ANY = _NUMERIC + " BOOL"

# Operator -> supported types (of its main input, see trt_check.main_slots). Ops not here are unsupported.
SUPPORTED: dict[str, str] = {
    **dict.fromkeys("""Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose
        Cos Cosh CumSum Dropout Einsum Elu Erf Exp Floor Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
        GroupNormalization GRU HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf
        LayerNormalization LeakyRelu Log LogSoftmax LRN LSTM LpNormalization LpPool MatMul MaxPool
        MeanVarianceNormalization ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
        RandomUniform RandomUniformLike Reciprocal Resize RNN Round ScaledTanh Scan Selu Sigmoid Sin Sinh
        Softmax Softplus Softsign Sqrt Tan Tanh ThresholdedRelu Upsample""".split(), _FLOAT),
    **dict.fromkeys("""Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Min
        Mod Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
        ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth
        Sub Sum TopK""".split(), _NUMERIC),
    **dict.fromkeys("""Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND Identity If
        Loop OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze
        Where""".split(), _ANY),
    **dict.fromkeys("DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign".split(), "FP32 FP16"),
    **dict.fromkeys("And Not Or Xor".split(), "BOOL"),
    **dict.fromkeys("Cast CastLike".split(), _ANY + " UINT8"),
    "DequantizeLinear": "INT8 FP8 INT4",
    "Gelu": _NUMERIC + " INT8",
    "Mean": _NUMERIC + " FP8",
}
# The matrix's "N" rows, so that a refusal can say the op is listed as unsupported.
UNSUPPORTED = frozenset("""AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow Col2Im
    CenterCropPad Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear HammingWindow
    HannWindow ImageDecoder MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial
    NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul
    RegexFullMatch STFT SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert
    SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat StringNormalizer
    StringSplit TfIdfVectorizer Unique""".split())

# Restrictions column, as rules: inputs that must be constants ("must be an initializer" / "a constant
# tensor" / "a build-time constant"), by the ONNX schema's input name.
CONSTANT_INPUTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys("""ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
        ReduceSum ReduceSumSquare Slice Squeeze Unsqueeze Pad""".split(), ("axes",)),
    "CumSum": ("axis",), "OneHot": ("depth",),
}
TOPK_MAX_K = 3840  # "`K` input must be less than 3840"; "`sorted` must be 1"; K a constant (DESIGN.md's parser facts)
RESIZE = {  # supported attribute values; ONNX defaults first
    "coordinate_transformation_mode": ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                       "align_corners"),
    "mode": ("nearest", "linear"),
    "nearest_mode": ("round_prefer_floor", "floor", "ceil", "round_prefer_ceil"),
    "keep_aspect_ratio_policy": ("stretch",),
}

# Explicit quantization (QuantizeLinear / DequantizeLinear), from NvInfer.h's IQuantizeLayer, IDequantizeLayer,
# addQuantize and addDequantize (the same text in ../shared/third_party/tensorrt-10.16 and -11.1) and the matrix's
# restrictions (`y_zero_point` must be 0, `x_zero_point` must be zero):
#   "The subgraph which terminates with the scale tensor must be a build-time constant."
#   "All scale coefficients must have strictly positive values."
#   "The scale value must be a scalar for per-tensor quantization, a 1D tensor for per-channel quantization, or the
#    same rank as the input tensor for block quantization." "The size of the 1D scale tensor must match the size of
#    the quantization axis." "The size of zeroPt must match the size of scale."
#   "The subgraph which terminates with the zeroPt tensor must be a build-time constant containing only zeros."
#   "Per-channel quantization is supported only for weight inputs. Thus, Activations cannot be quantized
#    per-channel." / "Per-channel dequantization is supported only for input that is rooted at an IConstantLayer
#    (i.e. weights)."
# The types (Q: FP32/FP16/BF16 in, INT8/FP8/INT4 out; DQ: INT8/FP8/INT4 in, so no int32 bias) are the matrix's.
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
